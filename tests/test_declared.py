"""Records a port declares it does not compute, and configs a port refuses (`unsupported`): neither may
read as a crash, and neither may hide a difference or read as agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import IMPLS

from harness.compare.cli import main
from harness.compare.stream import compare_memstates
from harness.run.runner import load_implementation, run_implementation
from harness.spec.config import Config
from harness.store.jsonl import write_jsonl
from harness.store.memstate import Memstate

NUMPY = (IMPLS / "numpy" / "mlp.py").read_text()
DROP = """
class _Drop:
    \"\"\"numpy's recorder, declaring NAMES missing and dropping them (unless RECORD).\"\"\"

    def __init__(self, record):
        self.record = record
        record.missing(*NAMES)

    def __call__(self, step, name, *args, **kw):
        if step == "load" or name not in NAMES or RECORD:
            self.record(step, name, *args, **kw)

    def __getattr__(self, name):
        return getattr(self.record, name)


def run(job_dir, record):
    record = _Drop(record)"""


def fused(tmp_path: Path, names: list[str], replace: tuple[str, str] | None = None, record: bool = False) -> Path:
    """numpy that declares `names` missing and (unless `record`) does not record them."""
    d = tmp_path / ("fused-" + "-".join(n.replace("/", "_") for n in names))[:80]
    d.mkdir()
    text = NUMPY.replace("def run(job_dir, record):", DROP.replace("NAMES", repr(names)).replace("RECORD", str(record)), 1)
    if replace:
        assert text.count(replace[0]) == 1
        text = text.replace(*replace)
    (d / "mlp.py").write_text(text)
    shutil.copy(IMPLS / "numpy" / "memstate-impl.json", d)
    return d


MISSING = ["hidden/matmul", "output/matmul", "loss/value", "hidden/grad_activation"]
# a chain of records read from records that are missing too, in two hidden layers with dropout
CHAIN = ["hidden1/matmul", "hidden1/bias_add", "hidden1/activation", "hidden1/dropout", "output/sigmoid",
         "output/grad_logits", "hidden2/grad_dropout", "hidden2/grad_activation", "hidden2/grad_preactivation"]


@pytest.mark.parametrize("other", ["numpy", "torch"])
def test_records_declared_missing_are_skipped_and_their_consumers_judged(runs, tmp_path, other):
    config = Config(hidden=32, batch_size=16, steps=20, optimizer="adam", lr=0.01)
    c = compare_memstates(runs.run(other, config), runs.run(fused(tmp_path, MISSING), config))
    assert c and not c.origins, f"{c.first.where}: {c.first.note}"
    assert not any(r.name in MISSING for r in c.records)
    assert "B does not compute hidden/grad_activation, hidden/matmul, loss/value, output/matmul (declared)" in c.notes[0]
    if other == "numpy":
        assert c.verdict == "agree"


def test_a_chain_of_missing_records_through_two_layers_with_dropout(runs, tmp_path):
    config = Config(layers=(32, 16), dropout=(0.2, 0.2), activation="sigmoid", loss="mse", optimizer="adam",
                    lr=0.01, batch_size=16, steps=20)
    c = compare_memstates(runs.run("torch", config), runs.run(fused(tmp_path, CHAIN), config))
    assert c and not c.origins, f"{c.first.where}: {c.first.note}"
    assert not any(r.name in CHAIN for r in c.records)


def test_a_bug_in_an_op_a_port_does_not_record_is_named_at_its_consumer(runs, tmp_path):
    config = Config(hidden=32, batch_size=16, steps=2)
    bug = fused(tmp_path, MISSING, ("M = inputs[-1] @ W.T  # (m, H_k)", "M = inputs[-1] @ (W * 1.001).T  # (m, H_k)"))
    c = compare_memstates(runs.run("numpy", config), runs.run(bug, config))
    first = c.first
    assert (first.step, first.name, first.role, first.inconsistent) == (0, "hidden/bias_add", "origin", "B")
    assert "it reads B's hidden/matmul, which that side does not compute" in first.note
    assert [r.where for r in c.origins][:1] == ["step 0, hidden/bias_add"]


def test_a_record_both_declared_missing_and_recorded_stops_the_run(runs, tmp_path):
    config = Config(hidden=8, batch_size=4, steps=2)
    both = fused(tmp_path, ["loss/value"], record=True)
    result = run_implementation(load_implementation(both), runs.job(config), tmp_path / "run")
    assert result.status == "stopped" and "'loss/value' was declared missing (not computed)" in result.error


def _jsonl_port(tmp_path: Path, header: dict, end: dict | None, steps: int = 0) -> Path:
    """A port that writes a header, numpy's records of `steps` steps read from a memstate, and an end line."""
    d = tmp_path / "port"
    d.mkdir()
    (d / "port.py").write_text(
        "import json, sys\n"
        f"out = open(sys.argv[2], 'w')\nout.write(json.dumps({header!r}) + '\\n')\n"
        + (f"out.write(json.dumps({end!r}) + '\\n')\n" if end else ""))
    (d / "memstate-impl.json").write_text(json.dumps({"name": "port", "command": ["{python}", "port.py", "{job}",
                                                                                   "{out}"]}))
    return d


@pytest.mark.parametrize("missing, message", [
    (["hidden/weight"], "header field 'missing': 'hidden/weight' cannot be declared missing"),
    (["input/x"], "header field 'missing': 'input/x' cannot be declared missing"),
    (["hidden/matmull"], "'hidden/matmull' cannot be declared missing: this config has no such record"),
    ("loss/value", "header field 'missing': must be a list of record names"),
])
def test_a_wrong_declaration_in_a_jsonl_header_stops_the_run_with_the_field(runs, tmp_path, missing, message):
    header = {"memstate": "jsonl/1", "implementation": "port", "missing": missing}
    port = _jsonl_port(tmp_path, header, {"end": "complete"})
    result = run_implementation(load_implementation(port), runs.job(Config(hidden=8, batch_size=4, steps=1)),
                                tmp_path / "run")
    assert result.status == "stopped" and message in result.error and "line 1" in result.error


def test_an_unsupported_end_is_a_refusal_not_a_crash_nor_agree(tmp_path, capsys, monkeypatch):
    header = {"memstate": "jsonl/1", "implementation": "batch-1-port"}
    port = _jsonl_port(tmp_path, header, {"end": "unsupported", "reason": "batch_size must be 1, got 8"})
    monkeypatch.chdir(tmp_path)
    code = main([str(IMPLS / "numpy"), str(port), "--hidden", "8", "--batch-size", "8", "--steps", "2", "--no-html",
                 "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert ("verdict: UNSUPPORTED: B (port) does not support this config: batch_size must be 1, got 8; "
            "nothing of this config was compared (not a crash") in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert (saved["verdict"], saved["passed"], saved["exit_code"]) == ("unsupported", False, 1)


def test_a_python_port_refuses_with_record_unsupported(runs, tmp_path):
    d = tmp_path / "online"
    d.mkdir()
    (d / "mlp.py").write_text("import json, os\n\ndef run(job_dir, record):\n"
                              "    job = json.load(open(os.path.join(job_dir, 'job.json')))\n"
                              "    if job['batch_size'] != 1:\n"
                              "        record.unsupported(f\"batch_size must be 1, got {job['batch_size']}\")\n")
    (d / "memstate-impl.json").write_text(json.dumps({"name": "online", "entry": "mlp.py:run"}))
    config = Config(hidden=8, batch_size=4, steps=2)
    result = run_implementation(load_implementation(d), runs.job(config), tmp_path / "run")
    assert (result.status, result.returncode) == ("unsupported", 0)
    side = Memstate(result.memstate)
    c = compare_memstates(runs.run("numpy", config), side)
    assert c.verdict == "unsupported" and not c
    write_jsonl(side, tmp_path / "online.jsonl")  # the JSON-lines copy says the same
    lines = (tmp_path / "online.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"end": "unsupported", "reason": "batch_size must be 1, got 4"}


def test_declared_missing_records_survive_the_jsonl_round_trip(runs, tmp_path):
    config = Config(hidden=8, batch_size=4, steps=2)
    side = runs.run(fused(tmp_path, ["loss/value"]), config)
    write_jsonl(side, tmp_path / "f.jsonl")
    header = json.loads((tmp_path / "f.jsonl").read_text().splitlines()[0])
    assert header["missing"] == ["loss/value"]
    c = compare_memstates(runs.run("numpy", config), side)
    assert c.verdict == "agree" and not any(r.name == "loss/value" for r in c.records)

"""Reduced matmul precision (TF32, bfloat16, float16 operands, float32 accumulation): a correct side that
computes so is agree or drift against float32 once the comparator knows, an origin (the false alarm)
when it does not, and a bug above that precision's floor is still named at its own step and record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import IMPLS

from harness.catalogue import CATALOGUE
from harness.compare.cli import main
from harness.compare.stated import job_with_precision
from harness.compare.stream import compare_memstates
from harness.evaluate import Evaluator, precision_lines
from harness.run.runner import load_implementation, run_implementation
from harness.spec.config import Config
from harness.spec.precision import MODES
from harness.spec.presets import get_preset
from harness.store.memstate import Memstate


def run_in(runs, tmp_path: Path, impl: Path, config: Config, mode: str) -> Memstate:
    """`impl` asked for `mode` matmuls through its own copy of the config's job."""
    job = job_with_precision(runs.job(config), tmp_path / f"job-{mode}", mode)
    result = run_implementation(load_implementation(impl), job, tmp_path / f"run-{mode}")
    return Memstate(result.memstate)


@pytest.mark.parametrize("mode, config", [
    ("tf32", Config(steps=200)),
    ("bfloat16", Config(steps=50)),
    ("float16", Config(steps=50, optimizer="adam", lr=0.001)),
    ("tf32", get_preset("born").config(steps=20)),
    ("bfloat16", get_preset("mnist-from-scratch").config(steps=20)),
    ("bfloat16-storage", Config(steps=50, optimizer="momentum")),
    ("float16-storage", Config(steps=50)),
    ("bfloat16-storage", get_preset("born").config(steps=20)),
], ids=["tf32-default-200", "bf16-default-50", "fp16-adam-50", "tf32-born-20", "bf16-mnist-from-scratch-20",
        "bf16-storage-momentum-50", "fp16-storage-50", "bf16-storage-born-20"])
def test_numpy_in_reduced_matmul_precision_drifts_with_no_origin(runs, tmp_path, mode, config):
    b = run_in(runs, tmp_path, IMPLS / "numpy", config, mode)
    assert b.manifest["precision"] == MODES[mode]  # it says what it computed in
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects, f"{c.first.where}: {c.first.note}"
    assert c.verdict == "drift" and c.b.title == f"numpy ({mode})"
    assert any(n.startswith("B computes its matmuls in " if "storage" not in mode else "B keeps every tensor in ")
               and "cannot be told from" in n for n in c.notes)


@pytest.mark.parametrize("config", [Config(steps=50, optimizer="momentum"), get_preset("born").config(steps=20)],
                         ids=["default-momentum-50", "born-20"])
def test_torch_bfloat16_autocast_on_the_cpu_drifts_with_no_origin(runs, tmp_path, config):
    """torch.autocast for real: its matmuls' results are bfloat16 values, judged as bfloat16 matmuls and storage."""
    b = run_in(runs, tmp_path, IMPLS / "torch", config, "bfloat16-autocast")
    matmul = b.get(1, "hidden/matmul").astype("float32")
    assert not (matmul.view("uint32") & 0xFFFF).any()  # bfloat16 values, held exactly in float32
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and c.verdict == "drift", f"{c.first.where}: {c.first.note}"


def test_adam_in_float16_storage_divides_by_zero_and_is_named(runs, tmp_path):
    """Not a benign precision: Adam's eps = 1e-8 is below float16's range, so sqrt(v) + eps is 0 where v
    underflows, and the update divides by it. memstate names the update, not a rounding."""
    config = get_preset("born").config(steps=20)
    c = compare_memstates(runs.run("numpy", config), run_in(runs, tmp_path, IMPLS / "numpy", config,
                                                            "float16-storage"))
    assert c.verdict == "diverged" and c.first.name.endswith(("/weight", "/bias"))


def test_the_same_pair_read_as_float32_is_the_false_alarm(runs, tmp_path):
    """Not told (or a fixed tolerance), TF32's operand rounding reads as an origin at the first matmul."""
    config = Config(steps=3)
    b = run_in(runs, tmp_path, IMPLS / "numpy", config, "tf32")
    a = runs.run("numpy", config)
    told = compare_memstates(a, b)
    assert told.verdict == "drift" and told.first.where == "step 1, hidden/matmul"
    del b.manifest["precision"]
    untold = compare_memstates(a, b)
    first = untold.first
    assert (untold.verdict, first.where, first.role) == ("diverged", "step 0, hidden/matmul", "origin")
    assert first.worst_ratio > 100


def test_a_bug_above_the_floor_is_still_named_under_tf32(runs, tmp_path):
    b = run_in(runs, tmp_path, IMPLS / "examples" / "softmax_global_sum", Config(steps=3), "tf32")
    c = compare_memstates(runs.run("numpy", Config(steps=3)), b)
    assert (c.verdict, c.first.where, c.first.inconsistent) == ("diverged", "step 0, output/softmax", "B")


@pytest.mark.parametrize("mode, hidden", [("tf32", "matmul-32u"), ("bfloat16-autocast", "pixels-over-256")])
def test_the_catalogue_in_reduced_precision_names_what_its_rounding_hides(tmp_path, mnist, mode, hidden):
    """Bugs far above the precision's floor are found where they are; one below it (a 32-ulp matmul under
    TF32, pixels over 256, 0.4%, under bfloat16) is listed as hidden, with what was found instead."""
    ev = Evaluator(tmp_path, mnist, precision_b=mode)
    cases = {c.name: c for c in CATALOGUE}
    scores = [ev.score(cases[n]) for n in ("softmax-global-sum", "tanh-slope", hidden, "momentum-0.99")]
    assert [bool(s) for s in scores] == [True, True, False, True]
    lines = precision_lines(scores, mode)
    assert lines[0] == f"B in {mode}: 3/4 bugs found at the exact step and record"
    assert f"{hidden} (" in lines[1] and f"within {mode}'s rounding" in lines[1]


def test_the_command_line_states_and_asks_for_a_precision(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--hidden", "16", "--batch-size", "8", "--steps", "2", "--no-html"]
    assert main([IMPLS / "numpy", IMPLS / "numpy", "--precision-b", "tf32", "--out", tmp_path / "r", *small]) == 0
    out = capsys.readouterr().out
    assert "note: B computes its matmuls in TF32" in out
    assert json.loads((tmp_path / "r" / "job-b" / "job.json").read_text())["precision"] == {"matmul": "tf32"}
    # a memstate that does not say is judged as stated
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "r" / "a-numpy", b)
    assert main([tmp_path / "r" / "a-numpy", b, "--precision-b", "bfloat16", "--no-html"]) == 0
    assert ("B does not say what it computed in; judged as bfloat16, as --precision-b says"
            in capsys.readouterr().out)
    # torch has TF32 on a CUDA GPU only: on the CPU it refuses, said as such
    code = main([IMPLS / "numpy", IMPLS / "torch", "--precision-b", "tf32", *small])
    said = "verdict: UNSUPPORTED: B (torch) does not support this config: matmul precision tf32 needs"
    assert code == 1 and said in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ({"matmul": "tf16"}, "'matmul' is 'tf16'; expected one of float32, tf32, bfloat16, float16"),
    ({"storage": "tf32"}, "'storage' is 'tf32'; expected one of float32, bfloat16, float16"),
    ({"master": "float32"}, "has the key 'master'; expected one of matmul, storage"),
    ("tf32", "must be an object like"),
])
def test_a_wrong_precision_names_the_field(runs, tmp_path, value, message):
    d = tmp_path / "port"
    d.mkdir()
    header = {"memstate": "jsonl/1", "precision": value}
    (d / "port.py").write_text(f"import json, sys\nopen(sys.argv[2], 'w').write(json.dumps({header!r}) + '\\n')\n")
    (d / "memstate-impl.json").write_text(json.dumps({"name": "p", "command": ["{python}", "port.py", "{job}",
                                                                                "{out}"]}))
    result = run_implementation(load_implementation(d), runs.job(Config(hidden=8, batch_size=4, steps=1)),
                                tmp_path / "run")
    assert result.status == "stopped" and f"header field 'precision' {message}" in result.error

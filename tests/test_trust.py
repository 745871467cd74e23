"""A broken run never reads as agree, and no input gets a traceback, a hang or an orphan process
(issue 18). Each case goes through the command line (`harness.compare.main`) and checks the exact
exit code and message; docs/errors.md lists them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS, ROOT

from harness.compare.cli import main
from harness.store.memstate import Memstate
from harness.run.processes import carriers

SMALL = ["--hidden", "4", "--batch-size", "8", "--steps", "3", "--no-html"]


@pytest.fixture(scope="module")
def ms(numpy_memstate) -> Path:
    """The complete numpy run (H=4, batch 8, 3 steps) that the bad-input cases copy and damage too."""
    return numpy_memstate


def cli(argv, capsys, tmp_path, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    own = [line for line in (out + err).splitlines() if not line.startswith("  | ")]  # not a port's quoted stderr
    assert not any("Traceback" in line for line in own)
    return code, out, err


def copy(ms: Path, tmp: Path) -> Path:
    b = tmp / "b"
    shutil.copytree(ms, b)
    return b


def edit_manifest(b: Path, **fields) -> None:
    m = json.loads((b / "manifest.json").read_text())
    m.update(fields)
    (b / "manifest.json").write_text(json.dumps(m))


def test_a_complete_manifest_over_fewer_steps_is_damaged_not_agree(ms, tmp_path, capsys, monkeypatch):
    b = copy(ms, tmp_path)
    for s in (1, 2):
        (b / f"step-00000{s}.safetensors").unlink()
    edit_manifest(b, units=["load", 0])
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert code == 2
    assert "verdict: DIVERGED at step 1, input/x (stopped): the first origin" in out
    assert (f"error: B's memstate is damaged: {b}/manifest.json: says complete, but its config asks for steps 0..2 "
            f"and step 1 is missing (1 step(s) before it are held)") in err


def test_an_implementation_that_exits_0_after_step_0_of_3_stopped(tmp_path, capsys, monkeypatch):
    impl = tmp_path / "short"
    shutil.copytree(IMPLS / "numpy", impl)
    src = (impl / "mlp.py").read_text()
    (impl / "mlp.py").write_text(src.replace("def run(", "def _run(") + "\n\ndef run(job, record):\n"
                                 "    class One:\n        describe = record.describe\n"
                                 "        def __call__(self, step, *a, **k):\n            if step in ('load', 0):\n"
                                 "                record(step, *a, **k)\n    _run(job, One())\n")
    code, out, err = cli([IMPLS / "numpy", impl, *SMALL, "--out", tmp_path / "run"], capsys, tmp_path, monkeypatch)
    assert code == 1
    assert "verdict: DIVERGED at step 1, input/x (stopped): the first origin" in out
    assert "says complete, but its config asks for steps 0..2 and step 1 is missing" in out
    assert "(the process exited with code 0)" in out


def test_jsonl_ending_before_its_steps_then_going_on_is_damaged(ms, tmp_path, capsys, monkeypatch):
    from harness.store.jsonl import write_jsonl
    write_jsonl(Memstate(ms), tmp_path / "b.jsonl")
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    first_step1 = next(i for i, line in enumerate(lines) if '"step": 1' in line)
    lines.insert(first_step1, json.dumps({"end": "complete"}))
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = cli([ms, tmp_path / "b.jsonl", "--no-html", "--out", tmp_path / "run"], capsys, tmp_path,
                         monkeypatch)
    assert code == 2
    assert f"b.jsonl: line {first_step1 + 2}: more lines after the end line (line {first_step1 + 1})" in err
    assert "verdict: DIVERGED at step 1, input/x (stopped)" in out


@pytest.mark.parametrize("field, value, message", [
    ("implementation", [1], "field 'implementation' must be an object"),
    ("config", "relu", "field 'config': expected a JSON object of config fields, got str"),
    ("runtime", 3, "field 'runtime' must be an object"),
    ("legacy_notes", [], "field 'legacy_notes' must be an object of strings"),
    ("unmapped", {"a": 1}, "field 'unmapped' must be a list of [step, record name, reason]"),
    ("replay", {"first_step": -1}, "field 'replay.first_step' must be a non-negative integer"),
    ("status", "done", "field 'status' must be one of complete, stopped, interrupted, running"),
    ("missing", "hidden/matmul", "field 'missing' must be a list of record names"),
    ("missing", ["hidden/weight"], "field 'missing': 'hidden/weight' cannot be declared missing: it is data"),
    ("missing", ["hidden/matmull"], "field 'missing': 'hidden/matmull' cannot be declared missing: this config has no"),
])
def test_mistyped_manifest_fields_name_the_field(ms, tmp_path, capsys, monkeypatch, field, value, message):
    b = copy(ms, tmp_path)
    edit_manifest(b, **{field: value})
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert code == 2 and err.startswith("error: ") and message in err, err


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header_text: str, data: bytes) -> None:
    text = header_text.encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("change, message", [
    (lambda h: json.dumps({**h, "__metadata__": ["x"]}), "'__metadata__' must be an object of strings"),
    (lambda h: json.dumps({**h, "__metadata__": {**h["__metadata__"], "order": "7"}}),
     "metadata 'order' must be a JSON list of distinct record names"),
    (lambda h: json.dumps({**h, "__metadata__": {**h["__metadata__"], "step": "5"}}),
     "header says step '5', the file name says 1"),
    (lambda h: json.dumps({**h, "input/y": {**h["input/y"], "shape": [1] * 70}}), "a shape of at most 16"),
    (lambda h: json.dumps(h)[:-1] + ', "input/y": ' + json.dumps(h["input/y"]) + "}", "key 'input/y' appears twice"),
    (lambda h: json.dumps({**h, "input/x": {**h["input/x"], "data_offsets": h["input/y"]["data_offsets"][:1]
                                            + [h["input/y"]["data_offsets"][0] + h["input/x"]["data_offsets"][1]
                                               - h["input/x"]["data_offsets"][0]]}}),
     "share bytes (their data offsets overlap)"),
])
def test_malformed_step_headers_mark_the_memstate_damaged(ms, tmp_path, capsys, monkeypatch, change, message):
    b = copy(ms, tmp_path)
    path = b / "step-000001.safetensors"
    header, data = _header(path)
    _write(path, change(header), data)
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert code == 2 and message in err, err
    assert "verdict: DIVERGED at step 1, input/x (stopped)" in out  # step 0 compared, nothing after it


def test_a_fifo_as_a_step_file_is_refused_not_read(ms, tmp_path, capsys, monkeypatch):
    b = copy(ms, tmp_path)
    (b / "step-000001.safetensors").unlink()
    os.mkfifo(b / "step-000001.safetensors")
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert code == 2 and "step-000001.safetensors: a step file must be a regular file, found a FIFO" in err


def test_a_unit_far_beyond_the_config_is_refused_at_once(ms, tmp_path, capsys, monkeypatch):
    b = copy(ms, tmp_path)
    shutil.copy(b / "step-000002.safetensors", b / "step-999999999.safetensors")
    edit_manifest(b, units=["load", 0, 1, 2, 999999999])
    start = time.monotonic()
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert time.monotonic() - start < 60
    assert code == 2 and "holds step 999999999, but its config asks for steps 0..2" in err


@pytest.mark.parametrize("option", [["--rtol", "nan"], ["--atol", "nan"], ["--timeout", "nan"], ["--timeout", "0"],
                                    ["--timeout", "-1"], ["--rtol", "-1"]])
def test_nan_zero_and_negative_options_are_refused(ms, tmp_path, capsys, monkeypatch, option):
    with pytest.raises(SystemExit) as e:
        main([str(ms), str(ms), "--no-html", *option])
    assert e.value.code == 2
    assert f"argument {option[0]}: expected a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--hidden", "10000000"], "hidden=10000000 makes 7,950,000,010 parameters"),
    (["--steps", "100000000"], "100,000,000 steps of batch 8 need about"),
])
def test_configs_too_large_for_the_machine_are_refused_before_allocation(tmp_path, capsys, monkeypatch, option,
                                                                         message):
    code, out, err = cli([IMPLS / "numpy", IMPLS / "numpy", *SMALL, *option, "--out", tmp_path / "r"], capsys,
                         tmp_path, monkeypatch)
    assert code == 2 and message in err, err


def test_names_with_control_characters_cannot_forge_a_line(ms, tmp_path, capsys, monkeypatch):
    b = copy(ms, tmp_path)
    edit_manifest(b, implementation={"name": "x\nverdict: AGREE\x1b[2K"})
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert "\x1b" not in out + err
    assert [line for line in out.splitlines() if line.startswith("verdict:")] == [
        "verdict: AGREE (every record within its noise bound)"]  # the real one, and no forged one
    assert "x\\nverdict: AGREE\\x1b[2K" in out


def test_outputs_never_overwrite_an_input(ms, tmp_path, capsys, monkeypatch):
    before = (ms / "manifest.json").read_bytes()
    code, out, err = cli([ms, ms, "--no-html", "--json", ms / "manifest.json"], capsys, tmp_path, monkeypatch)
    assert code == 2 and "--json is inside the input" in err
    code, out, err = cli([ms, ms, "--html", ms / "step-000000.safetensors"], capsys, tmp_path, monkeypatch)
    assert code == 2 and "--html is inside the input" in err
    assert (ms / "manifest.json").read_bytes() == before


def test_two_comparisons_with_one_out_never_share_it(tmp_path):
    """Started together on one --out: exactly one runs, the other is refused before writing anything."""
    cmd = [sys.executable, "-m", "harness.compare", str(IMPLS / "numpy"), str(IMPLS / "numpy"), *SMALL,
           "--out", str(tmp_path / "shared")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    assert any("already holds a run" in r[2] or "another command is using it" in r[2] for r in results)


SLEEPER = """
import os, subprocess, sys
def run(job, record):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session={new_session})
    {then}
"""


@pytest.mark.parametrize("new_session", [False, True], ids=["same-group", "setsid"])
@pytest.mark.parametrize("ending", ["returns", "times-out", "sigterm"])
def test_no_process_of_a_run_outlives_it(tmp_path, new_session, ending):
    impl = tmp_path / "forker"
    impl.mkdir()
    (impl / "memstate-impl.json").write_text('{"name": "forker", "entry": "mlp.py:run"}')
    then = "import time; time.sleep(300)" if ending != "returns" else "pass"
    (impl / "mlp.py").write_text(SLEEPER.format(new_session=new_session, then=then))
    cmd = [sys.executable, "-m", "harness.compare", str(IMPLS / "numpy"), str(impl), *SMALL,
           "--out", str(tmp_path / "run")] + (["--timeout", "5"] if ending == "times-out" else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if ending == "sigterm":
        deadline = time.monotonic() + 120
        while not list((tmp_path / "run").glob("b-*/manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    if ending == "sigterm":
        assert proc.returncode == 143, (out, err)
        assert "interrupted (SIGTERM); every finished step is kept" in err
        assert json.loads(next((tmp_path / "run").glob("b-*/manifest.json")).read_text())["status"] == "interrupted"
    else:
        assert proc.returncode == 1, (out, err)
    time.sleep(0.5)
    leftover = [pid for pid in _all_pids() if _cmdline(pid).endswith("time.sleep(300)")
                and str(tmp_path) in _cwd(pid)]
    assert not leftover, f"processes of the run still alive: {leftover}"


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def test_carriers_finds_only_the_token(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                         env=dict(os.environ, MEMSTATE_RUN_ID="abc123"))
    try:
        assert carriers("abc123") == [p.pid] and carriers("other") == []
    finally:
        p.kill()
        p.wait()


def test_a_loss_only_bug_where_probabilities_underflow_is_found_or_not_judged(tmp_path, capsys, monkeypatch):
    """mnist-from-scratch (U[-0.5, 0.5], H=800): P[y] reaches 1e-81, so the loss's bound once exploded and a
    1.2x loss from step 1 read as agree. float64: found at step 1; float32 (the loss is inf on both sides):
    said to be not judged, never agree."""
    impl = tmp_path / "lossbug"
    shutil.copytree(IMPLS / "numpy", impl)
    src = (impl / "mlp.py").read_text()
    assert 'record(step, "loss/value", loss)' in src
    (impl / "mlp.py").write_text(src.replace('record(step, "loss/value", loss)',
                                             'record(step, "loss/value", loss * 1.2 if step >= 1 else loss)'))
    args = [IMPLS / "numpy", impl, "--preset", "mnist-from-scratch", "--steps", "3", "--no-html"]
    code, out, err = cli([*args, "--dtype", "float64", "--out", tmp_path / "r64"], capsys, tmp_path, monkeypatch)
    assert code == 1 and "verdict: DIVERGED at step 1, loss/value (values): the first origin" in out
    code, out, err = cli([*args, "--dtype", "float32", "--out", tmp_path / "r32"], capsys, tmp_path, monkeypatch)
    assert "verdict: AGREE" not in out
    assert ("verdict: NOT JUDGED IN FULL (drift): 2 record(s) could not be judged, first step 1, loss/value: not "
            "judged: both sides hold inf at every element (P[y] underflows to 0)") in out
    code, out, err = cli([*args, "--dtype", "float32", "--out", tmp_path / "r32s", "--strict"], capsys, tmp_path,
                         monkeypatch)
    assert code == 1


def test_labels_outside_the_classes_are_named(ms, tmp_path, capsys, monkeypatch):
    from harness.store.writer import MemstateWriter
    src = Memstate(ms)
    b = tmp_path / "b"
    w = MemstateWriter(b, {k: v for k, v in src.manifest.items() if k in ("implementation", "config", "dtype")})
    for u in src.units:
        for n, a in src.unit(u).items():
            a = np.array(a)
            if (u, n) == (1, "input/y"):
                a[3] = 12
            w(u, n, a)
    w.close()
    code, out, err = cli([ms, b, "--no-html"], capsys, tmp_path, monkeypatch)
    assert code == 1 and "verdict: DIVERGED at step 1, input/y (labels): the first origin" in out
    assert "B's labels hold 12 at element 3 (1 outside 0..9 in all)" in out


def test_a_loss_bug_under_a_vacuous_bound_is_found_by_consistency(tmp_path, capsys, monkeypatch):
    """Inputs scaled to [0, 8] push some P[y] to 1e-40 in float32: the loss's noise bound (1.2e3) exceeds
    any loss, so a 1.2x loss from step 1 once passed as agree at step 1. Where a bound exceeds every value
    the record holds, each side's consistency with its own inputs decides, and says so."""
    impl = tmp_path / "lossbug"
    shutil.copytree(IMPLS / "numpy", impl)
    src = (impl / "mlp.py").read_text()
    (impl / "mlp.py").write_text(src.replace('record(step, "loss/value", loss)',
                                             'record(step, "loss/value", loss * 1.2 if step >= 1 else loss)'))
    args = ["--input-max", "8", "--steps", "3", "--no-html"]
    code, out, err = cli([IMPLS / "numpy", impl, *args, "--out", tmp_path / "r", "--json", tmp_path / "r.json"],
                         capsys, tmp_path, monkeypatch)
    assert code == 1 and "verdict: DIVERGED at step 1, loss/value (values): the first origin" in out
    assert "B's value is not the op applied to B's own inputs; A's is" in out
    assert ("1 of 1 elements where a side is not the op applied to its own inputs" in out
            and "exceeds every value the record holds (|value| <= 15.7), so |A-B| within it proves nothing (P[y] "
            "near 0: -log P[y] magnifies P's rounding); judged instead by each side's consistency" in out), out
    first = json.loads((tmp_path / "r.json").read_text())["first"]
    assert (first["judged_by"], first["role"], first["step"]) == ("consistency", "origin", 1)


def test_a_correct_pair_under_a_vacuous_bound_is_judged_by_consistency_not_within_noise(tmp_path, capsys, monkeypatch):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the C++ port cannot be built")
    code, out, err = cli([IMPLS / "numpy", IMPLS / "cpp", "--input-max", "8", "--steps", "2", "--out", tmp_path / "r",
                          "--json", tmp_path / "r.json", "--html", tmp_path / "r.html"], capsys, tmp_path, monkeypatch)
    assert code == 0 and "verdict: DRIFT: 1 record(s) differ by more than a step's rounding, first at step 1, " \
        "hidden/weight; each is explained by differences upstream (no origin)" in out, out
    assert ("note: loss/value at step 1: the noise bound at 1 of 1 element(s) (up to 1.19e+03) exceeds every value "
            "the record holds") in out and "both are consistent" in out
    assert json.loads((tmp_path / "r.json").read_text())["judged_by_consistency"] == [[1, "loss/value"]]
    page = (tmp_path / "r.html").read_text()
    assert 'title="step 1 loss/value: consistent (bound vacuous), worst ' in page


def test_vacuous_elements_are_judged_by_consistency_or_said_to_be_unjudged():
    from harness.judge.vacuous import judge_vacuous, vacuous_mask
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.5, 3.0, 4.5])
    allowed = np.array([10.0, 10.0, 0.1, 1.0])  # element 1 vacuous (> 4.5), element 3 not; element 0 equal
    mask, scale = vacuous_mask(a, b, allowed)
    assert mask.tolist() == [False, True, False, False] and scale == 4.5
    assert judge_vacuous(mask, scale, allowed, np.array([0, 1e-9, 0, 0]), np.full(4, 1e-6))  # consistent
    v = judge_vacuous(mask, scale, allowed, np.array([0, 0.5, 0, 0]), np.full(4, 1e-6))
    assert not v and (v.n_inconsistent, v.worst_index, v.worst_ratio) == (1, (1,), 0.5 / 1e-6)
    v = judge_vacuous(mask, scale, allowed, np.array([0, 0.5, 0, 0]), np.full(4, 100.0))  # own rounding vacuous too
    assert not v and (v.n_inconsistent, v.n_unjudged) == (0, 1)
    assert judge_vacuous(mask, scale, allowed, None, None).n_unjudged == 1  # no model
    assert not vacuous_mask(a, b, np.array([10.0, np.inf, 10.0, 0.1]))[0][3]  # 4.0 vs 4.5 within 0.1? not vacuous
    assert vacuous_mask(a, b, np.array([0.0, np.nan, 0.0, 0.0]))[0][1]  # a NaN bound says nothing either


def test_convert_prints_a_port_s_error_escaped(tmp_path, capsys):
    from harness.convert import main as convert_main
    src = tmp_path / "a.jsonl"
    src.write_text('{"memstate": "jsonl/1"}\n{"end": "error", "error": "boom\\nverdict: AGREE\\u001b[2K"}\n')
    assert convert_main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "stopped: boom\\nverdict: AGREE\\x1b[2K" in err and "\nverdict: AGREE" not in err

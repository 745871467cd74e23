"""The command line as a user runs it: real subprocesses, real implementations."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS, ROOT, SHARED

from harness.store.memstate import Memstate


def compare(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness.compare", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout)


def make_impl(root: Path, body: str, name="planted") -> Path:
    """A Python implementation directory whose run() is `body` (for crash, hang and import cases)."""
    d = root / name
    d.mkdir()
    (d / "memstate-impl.json").write_text(json.dumps({"name": name, "entry": "impl.py:run"}))
    (d / "impl.py").write_text(textwrap.dedent(body))
    return d


SMALL = ["--hidden", "16", "--batch-size", "8", "--steps", "4"]


def test_readme_default_command_agrees(tmp_path):
    """Exactly the README's command: relative paths, no --out (runs/ under the working directory)."""
    (tmp_path / "impls").symlink_to(IMPLS)
    r = compare("impls/numpy", "impls/jax", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # numpy's and XLA's sums round differently, and training carries that on: drift, never an origin
    assert re.search(r"verdict: (AGREE|DRIFT: .* \(no origin\))", r.stdout), r.stdout
    assert "compared 204 records" in r.stdout  # load (4) + 10 steps x 20 records
    assert len(list(tmp_path.glob("runs/*-numpy-vs-jax/a-numpy/step-000009.safetensors"))) == 1


def test_softmax_global_sum_is_named_at_step_0_output_softmax(tmp_path):
    r = compare("impls/numpy", "impls/examples/softmax_global_sum", "--out", tmp_path / "run", "--json", "-")
    assert r.returncode == 1, r.stderr
    assert "verdict: DIVERGED at step 0, output/softmax (values)" in r.stderr
    result = json.loads(r.stdout)  # stdout holds only the JSON
    assert result["verdict"] == "diverged"
    assert (result["first"]["step"], result["first"]["name"]) == (0, "output/softmax")
    first_bad = next(i for i, rec in enumerate(result["records"]) if rec["kind"] != "agree")
    assert result["records"][first_bad]["name"] == "output/softmax"
    assert all(rec["step"] in ("load", 0) for rec in result["records"][:first_bad])
    # the same two memstates compared again from disk give the same answer
    again = compare(tmp_path / "run" / "a-numpy", tmp_path / "run" / "b-softmax_global_sum")
    assert again.returncode == 1 and "DIVERGED at step 0, output/softmax" in again.stdout


def test_json_lines_side_and_converter(tmp_path):
    r = compare("impls/numpy", "impls/torch", *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    conv = subprocess.run([sys.executable, "-m", "harness.convert", tmp_path / "run" / "b-torch",
                           tmp_path / "torch.jsonl"], capture_output=True, text=True)
    assert conv.returncode == 0, conv.stderr
    packed = subprocess.run([sys.executable, "-m", "harness.convert", tmp_path / "run" / "b-torch",
                             tmp_path / "torch-b64.jsonl", "--base64"], capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr
    assert (tmp_path / "torch-b64.jsonl").stat().st_size < 0.6 * (tmp_path / "torch.jsonl").stat().st_size
    verdict = [line for line in r.stdout.splitlines() if line.startswith(("verdict", "compared", "  worst"))]
    for i, side in enumerate(("torch.jsonl", "torch-b64.jsonl")):  # the values as numbers, then as bytes
        again = compare(tmp_path / "run" / "a-numpy", tmp_path / side, "--out", tmp_path / f"run{i + 2}")
        assert again.returncode == 0, again.stdout + again.stderr
        assert verdict == [line for line in again.stdout.splitlines() if line.startswith(("verdict", "compared",
                                                                                          "  worst"))]


def test_strict_makes_drift_fail_and_fixed_mode_is_kept(tmp_path):
    """numpy against torch drifts on this config (measured: from step 1); --strict turns that into exit 1."""
    args = ["impls/numpy", "impls/torch", "--hidden", "32", "--batch-size", "16", "--steps", "6"]
    lenient = compare(*args, "--out", tmp_path / "a")
    assert lenient.returncode == 0 and "verdict: DRIFT" in lenient.stdout, lenient.stdout
    assert "use --strict to make it fail" in lenient.stdout
    strict = compare(tmp_path / "a" / "a-numpy", tmp_path / "a" / "b-torch", "--strict", "--out", tmp_path / "b")
    assert strict.returncode == 1 and "verdict: DRIFT" in strict.stdout and "exit 1 (--strict)" in strict.stdout
    fixed = compare(tmp_path / "a" / "a-numpy", tmp_path / "a" / "b-torch", "--tolerance", "fixed", "--out", tmp_path / "c")
    assert fixed.returncode == 0 and "verdict: AGREE" in fixed.stdout and "tolerance: fixed" in fixed.stdout


def test_command_line_implementation(tmp_path):
    """The protocol for other languages: a program that reads the job and writes JSON lines."""
    d = tmp_path / "standalone"
    d.mkdir()
    script = IMPLS / "pure_python" / "mlp.py"
    (d / "memstate-impl.json").write_text(json.dumps(
        {"name": "pure-python-cli", "command": ["{python}", str(script), "{job}", "{out}"]}))
    r = compare(d, "impls/numpy", *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    m = Memstate(tmp_path / "run" / "a-pure-python-cli")
    assert m.status == "complete" and m.manifest["implementation"]["kind"] == "command"


def test_legacy_parameters(tmp_path):
    legacy = SHARED / "legacy" / "params.json"
    if not legacy.is_file():
        pytest.skip("no legacy dump")
    r = compare("impls/numpy", "impls/torch", "--params", legacy, "--steps", "5", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hidden widths 10 taken from" in r.stderr
    w1 = Memstate(tmp_path / "run" / "a-numpy").get("load", "hidden/weight")
    raw = json.loads(legacy.read_text())
    assert w1.shape == (10, 784) and w1[2, 300] == np.float32(raw["w1"][2][300])


CRASH = """
    import json, numpy as np
    def run(job, record):
        cfg = json.load(open(job + "/job.json"))["config"]
        record("load", "hidden/weight", np.zeros((cfg["hidden"], 784), np.float32))
        for step in range(2):
            record(step, "input/x", np.zeros((cfg["batch_size"], 784), np.float32))
        raise RuntimeError("planted failure in step 1")
"""


def test_crash_is_reported_not_raised(tmp_path):
    r = compare("impls/numpy", make_impl(tmp_path, CRASH), *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 1
    assert "RuntimeError: planted failure in step 1 (the process exited with code 1)" in r.stdout
    assert "Traceback" not in r.stderr  # the child's traceback is in its own stderr file, not the harness's
    m = Memstate(tmp_path / "run" / "b-planted")
    assert m.status == "stopped" and m.units == ["load", 0, 1]
    assert "planted failure" in m.manifest["stopped"]["stderr_tail"]


@pytest.mark.parametrize("body, words", [
    ("import os, signal\ndef run(job, record):\n    os.kill(os.getpid(), signal.SIGKILL)\n", "killed by signal SIGKILL"),
    ("import time\ndef run(job, record):\n    time.sleep(60)\n", "timed out after 3 s"),
    ("def run(job, record)\n    pass\n", "does not load: SyntaxError"),
    ("import sys\ndef run(job, record):\n    sys.exit(3)\n", "exited with code 3"),
])
def test_failing_implementations(tmp_path, body, words):
    r = compare("impls/numpy", make_impl(tmp_path, body), *SMALL, "--timeout", "3", "--out", tmp_path / "run")
    assert r.returncode == 1, r.stdout + r.stderr
    assert words in r.stdout
    assert "DIVERGED at load, hidden/weight (stopped)" in r.stdout


def test_impl_directory_never_shadows_a_library(tmp_path):
    d = make_impl(tmp_path, (IMPLS / "numpy" / "mlp.py").read_text(), name="numpy")
    (d / "numpy.py").write_text("raise ImportError('the implementation directory was put on sys.path')\n")
    r = compare(d, "impls/numpy", *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("args, words", [
    (["impls/numpy", "no/such/dir"], "no/such/dir: no such file or directory"),
    (["impls/numpy", "impls"], "neither an implementation directory"),
    (["impls/numpy", "impls/jax", "--hidden", "0"], "'hidden': expected a positive integer"),
    (["impls/numpy", "impls/jax", "--data", "impls"], "no train-images-idx3-ubyte"),
    (["impls/numpy", "impls/jax", "--params", "pyproject.toml"], "pyproject.toml: not valid JSON"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, words):
    r = compare(*args, "--out", tmp_path / "run")
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bad_implementation_manifest(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "memstate-impl.json").write_text('{"name": "bad", "entry": "../escape.py:run"}')
    r = compare("impls/numpy", d)
    assert r.returncode == 2 and "outside the implementation directory" in r.stderr
    (d / "memstate-impl.json").write_text('{"name": "bad", "command": "./mlp {out}"}')
    r = compare("impls/numpy", d)
    assert r.returncode == 2 and "must be a non-empty list of strings (no shell)" in r.stderr


def test_user_data_directory(tmp_path, shared_mnist_dir):
    r = compare("impls/numpy", "impls/torch", *SMALL, "--data", shared_mnist_dir, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads((tmp_path / "run" / "job" / "job.json").read_text())
    assert job["data"] == str(shared_mnist_dir)


def test_a_file_that_is_no_memstate_is_bad_input(tmp_path):
    r = compare("impls/numpy", "pyproject.toml", "--out", tmp_path / "run")
    assert r.returncode == 2 and "pyproject.toml: line 1: not valid JSON" in r.stderr, r.stderr


def test_command_that_writes_nothing_reports_its_exit(tmp_path):
    d = tmp_path / "silent"
    d.mkdir()
    (d / "memstate-impl.json").write_text(json.dumps(
        {"name": "silent", "command": ["{python}", "-c", "import sys; sys.exit('no job for me')", "{out}"]}))
    r = compare("impls/numpy", d, *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 1
    assert "B stopped before writing anything: the process exited with code 1" in r.stdout
    m = Memstate(tmp_path / "run" / "b-silent")
    assert "no job for me" in m.manifest["stopped"]["stderr_tail"]


def test_two_sides_that_both_fail_never_agree(tmp_path):
    body = "def run(job, record):\n    raise ValueError('cannot even start')\n"
    r = compare(make_impl(tmp_path, body, "one"), make_impl(tmp_path, body, "two"), *SMALL, "--out", tmp_path / "run")
    assert r.returncode == 1, r.stdout
    assert "compared 0 records" not in r.stdout
    assert "verdict: DIVERGED at load, hidden/weight (stopped)" in r.stdout
    assert "A stopped before writing anything: ValueError: cannot even start" in r.stdout


def test_an_earlier_run_is_never_overwritten(tmp_path):
    assert compare("impls/numpy", "impls/torch", *SMALL, "--out", tmp_path / "run").returncode == 0
    files = sorted(p for p in (tmp_path / "run").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    r = compare("impls/numpy", "impls/torch", *SMALL, "--seed", "5", "--out", tmp_path / "run")
    assert r.returncode == 2 and "already holds a run; refusing to overwrite it" in r.stderr
    assert {p: p.read_bytes() for p in files} == before  # the job and both memstates untouched


def test_a_command_refused_for_bad_input_leaves_its_out_free_for_the_corrected_one(tmp_path):
    r = compare("impls/numpy", "impls/numpy", *SMALL, "--lr", "nan", "--out", tmp_path / "run")
    assert r.returncode == 2 and "config field 'lr': expected a finite non-negative number, got nan" in r.stderr
    assert not (tmp_path / "run").exists()  # it made the directory and wrote nothing else: gone again
    (tmp_path / "given").mkdir()  # a directory the user made is theirs: emptied of the claim, not removed
    r = compare("impls/numpy", "impls/numpy", *SMALL, "--hidden", "0", "--out", tmp_path / "given")
    assert r.returncode == 2 and list((tmp_path / "given").iterdir()) == []
    for out in ("run", "given"):
        r = compare("impls/numpy", "impls/numpy", *SMALL, "--no-html", "--out", tmp_path / out)
        assert r.returncode == 0 and "verdict: AGREE" in r.stdout, r.stderr
        assert (tmp_path / out / "a-numpy" / "manifest.json").is_file()


def test_the_memstate_command_dispatches_to_the_tools(tmp_path, capsys):
    from harness import __version__
    from harness.cli import main as memstate
    assert memstate(["--version"]) == 0 and capsys.readouterr().out == f"memstate {__version__}\n"
    assert memstate([]) == 2 and "memstate compare impls/numpy impls/jax" in capsys.readouterr().err
    assert memstate(["nope"]) == 2
    assert "error: unknown command 'nope'; expected one of compare, train, convert, evaluate, golden" in \
        capsys.readouterr().err
    script = Path(sys.executable).with_name("memstate")  # the [project.scripts] entry, where installed
    if not script.is_file():
        pytest.skip(f"{script} is not installed (pip install -e . makes it)")
    r = subprocess.run([script, "compare", IMPLS / "numpy", IMPLS / "numpy", "--hidden", "4", "--batch-size", "4",
                        "--steps", "2", "--no-html", "--out", tmp_path / "run"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0 and "verdict: AGREE" in r.stdout, r.stdout + r.stderr

"""Faults from outside: Ctrl-C, a full disk, implementations killed at random moments.

Each runs the real command line or the real runner on real implementations, and checks that
every finished step stays readable, nothing half-written is taken for complete, and the
message says what happened.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS, ROOT

from harness.compare.stream import compare_memstates
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.run.job import prepare_job
from harness.store.memstate import Memstate
from harness.spec.params import initial_params
from harness.run.runner import load_implementation, run_implementation

SMALL = ["--hidden", "16", "--batch-size", "8"]
CHECK = """
import json, sys
from pathlib import Path
import numpy as np
from harness.store.memstate import Memstate
out = {}
for d in sorted(Path(sys.argv[1]).iterdir()) if Path(sys.argv[1]).is_dir() else []:
    if (d / "manifest.json").is_file():
        m = Memstate(d)
        for u in m.units:  # every listed unit reads in full
            [float(np.asarray(a, dtype=np.float64).sum()) for a in m.unit(u).values()]
        out[d.name] = {"status": m.status, "units": m.units, "error": (m.manifest.get("stopped") or {}).get("error")}
out["tmp"] = [str(p) for p in Path(sys.argv[1]).rglob("*.tmp")]
print("CHECK " + json.dumps(out))
"""


def wait_for(predicate, timeout=120.0, what="a condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def every_unit_reads(path: Path) -> Memstate:
    m = Memstate(path)
    for u in m.units:
        for a in m.unit(u).values():
            np.asarray(a, dtype=np.float64).sum()  # reads every mapped byte: a short file would fault here
    assert not list(path.glob("*.tmp")), "a half-written file was left behind (the harness removes a killed write's)"
    return m


def command_impl(root: Path) -> Path:
    """pure_python's mlp.py run as a program writing JSON lines: the protocol of a port in another language."""
    d = root / "pure-python-cli"
    d.mkdir()
    (d / "memstate-impl.json").write_text(json.dumps(
        {"name": "pure-python-cli", "command": ["{python}", str(IMPLS / "pure_python" / "mlp.py"), "{job}", "{out}"]}))
    return d


# A terminal's command turns SIGINT into KeyboardInterrupt; a test run launched in the background of a
# non-interactive shell ignores SIGINT, and a child inherits that and would never see the Ctrl-C.
AS_FROM_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "sys.argv[0] = 'harness.compare'; runpy.run_module('harness.compare', run_name='__main__')")


@pytest.mark.parametrize("kind", ["entry", "command"])
def test_ctrl_c_keeps_every_finished_step_and_says_where(tmp_path, kind):
    """SIGINT to the command's process group, as a terminal's Ctrl-C sends it, while B is at work."""
    b = IMPLS / "pure_python" if kind == "entry" else command_impl(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", AS_FROM_A_TERMINAL, "impls/numpy", str(b), *SMALL, "--steps", "300",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    side = out / ("b-pure_python" if kind == "entry" else "b-pure-python-cli")
    seen = (lambda: (side / "step-000002.safetensors").is_file()) if kind == "entry" else \
        (lambda: (out / "b-pure-python-cli.jsonl").is_file() and (out / "b-pure-python-cli.jsonl").stat().st_size > 4e5)
    try:
        wait_for(seen, what="B's third step")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    kept = f"interrupted; every finished step is kept; compare what they hold with: python -m harness.compare " \
           f"{out / 'a-numpy'} {side}"
    assert kept in stderr
    m = every_unit_reads(side)
    assert m.status == "interrupted" and m.manifest["stopped"]["error"].startswith("interrupted (Ctrl-C)")
    steps = [u for u in m.units if u != "load"]
    assert len(steps) >= 2 and steps == list(range(len(steps)))
    again = subprocess.run([sys.executable, "-m", "harness.compare", str(out / "a-numpy"), str(side), "--no-html"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    # the common prefix agrees (or drifts); the first record B lacks (its last step may be partial) is named
    a = Memstate(out / "a-numpy")
    step, name = next((u, n) for u in a.units for n in a.unit(u) if m.get(u, n) is None)
    assert step in (steps[-1], steps[-1] + 1)
    assert f"verdict: DIVERGED at step {step}, {name} (stopped): the first origin" in again.stdout
    assert "B interrupted after" in again.stdout and "origins in all" not in again.stdout


def on_small_disk(tmp_path: Path, options: str, *command: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `command` with a tmpfs mounted at tmp_path/disk with `options` ("size=1m", "ro") (a user and mount namespace,
    so no root is needed); the files there are checked inside the namespace, before it goes."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a small disk")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {tmp_path}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "check.py").write_text(CHECK)
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && "$@"; rc=$?; "$CHECK_PY" "$CHECK" "$DISK"; exit $rc'
    env = {**os.environ, "CHECK_PY": sys.executable, "CHECK": str(tmp_path / "check.py"), "DISK": str(disk / "run"),
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", options, str(disk), *command], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env, check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("CHECK ")), None)
    assert line, r.stdout + r.stderr
    return r, json.loads(line[6:])


def test_a_full_disk_stops_with_the_file_and_keeps_every_finished_step(tmp_path):
    """1 MB: the job (520 KB) fits, numpy's memstate fills the rest at its fourth step (130 KB a step)."""
    r, seen = on_small_disk(tmp_path, "size=1m", sys.executable, "-m", "harness.compare", "impls/numpy", "impls/jax",
                            *SMALL, "--steps", "40", "--out", str(tmp_path / "disk" / "run"), "--no-html")
    assert r.returncode == 2, r.stdout + r.stderr
    side = tmp_path / "disk" / "run" / "a-numpy"
    assert (f"error: {side}: numpy's memstate could not be written: cannot write {side}/step-000003.safetensors: "
            f"No space left on device; its finished steps are kept in {side}") in r.stderr
    assert "Traceback" not in r.stderr and "verdict" not in r.stdout  # B never ran; no comparison claimed
    assert seen["a-numpy"]["units"] == ["load", 0, 1, 2]
    assert seen["a-numpy"]["status"] == "stopped"  # never "complete"
    assert seen["tmp"] == [] and "b-jax" not in seen


def test_a_full_disk_for_the_json_lines_conversion_is_named(tmp_path):
    r, seen = on_small_disk(tmp_path, "size=1200k", sys.executable, "-m", "harness.compare", "impls/numpy",
                            str(command_impl(tmp_path)), *SMALL, "--steps", "3", "--out", str(tmp_path / "disk" / "run"),
                            "--no-html")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert seen["tmp"] == []
    assert all(v["status"] != "complete" for k, v in seen.items() if k.startswith("b-"))


def test_report_and_json_on_a_full_disk_come_after_the_verdict(tmp_path):
    """The memstates fit elsewhere; the report and --json go to a 16 KB disk: the verdict is printed,
    each file that cannot be written is named, exit 2, and no partial file is left."""
    disk = tmp_path / "disk"
    r, seen = on_small_disk(tmp_path, "size=16k", sys.executable, "-m", "harness.compare", "impls/numpy",
                            "impls/examples/softmax_global_sum", *SMALL, "--steps", "3", "--out", str(tmp_path / "run"),
                            "--html", str(disk / "run" / "r.html"), "--json", str(disk / "run" / "r.json"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "verdict: DIVERGED at step 0, output/softmax (values)" in r.stdout
    assert f"error: {disk / 'run' / 'r.html'}: cannot write the report: No space left on device" in r.stderr
    assert f"error: {disk / 'run' / 'r.json'}: cannot write the JSON result: No space left on device" in r.stderr
    assert seen["tmp"] == []


def test_a_read_only_output_directory_is_named_before_anything_runs(tmp_path):
    r, seen = on_small_disk(tmp_path, "ro", sys.executable, "-m", "harness.compare", "impls/numpy", "impls/jax",
                            *SMALL, "--steps", "2", "--out", str(tmp_path / "disk" / "run"), "--no-html")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: {tmp_path / 'disk' / 'run'}: cannot create the run directory: Read-only file system" in r.stderr
    assert "Traceback" not in r.stderr and "running A" not in r.stderr
    assert seen == {"tmp": []}


REFERENCE_SECONDS: list[float] = []  # how long the uninterrupted run took on this machine


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A complete pure_python run of 300 steps (10-20 ms a step, 3-6 s in all) and its job,
    which the killed runs share: slow enough that a kill always lands mid-run."""
    root = tmp_path_factory.mktemp("faults")
    config = Config(hidden=16, batch_size=8, steps=300)
    job = prepare_job(root / "job", config, initial_params(config), load_mnist())
    result = run_implementation(load_implementation(IMPLS / "pure_python"), job, root / "full")
    assert result, result.error
    REFERENCE_SECONDS.append(result.seconds)
    return job, Memstate(root / "full")


def kill_when(out: Path, ready) -> threading.Thread:
    """SIGKILL the process writing `out` once `ready()` holds (found by its command line in /proc)."""
    def killer():
        wait_for(ready, what="the moment to kill")
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(out) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    return t


def check_killed_run(result, reference_ms: Memstate, how: str) -> int:
    """Every finished unit reads and equals the uninterrupted run; the comparison with it agrees on
    all of them and stops exactly where the killed run does. Returns the steps kept."""
    assert not result and "killed by signal SIGKILL" in result.error, how
    m = every_unit_reads(result.memstate)
    assert m.status == "stopped", how
    steps = [u for u in m.units if u != "load"]
    assert steps == list(range(len(steps))), how
    for u in m.units:  # the finished steps are the same bytes an uninterrupted run wrote
        for name, a in m.unit(u).items():
            assert np.array_equal(a, reference_ms.get(u, name)), f"{how}: {u} {name}"
    c = compare_memstates(reference_ms, m)
    stop = next(r for r in c.records if r.kind == "stopped")
    assert c.verdict == "diverged" and c.first is stop, how
    assert stop.step == (steps[-1] + 1 if steps else 0 if m.units else "load"), how
    assert all(r.kind == "agree" for r in c.records if r is not stop), how
    return len(steps)


def fault_seed() -> int:
    return int(os.environ.get("MEMSTATE_FAULT_SEED") or random.SystemRandom().randrange(10**6))


def test_killed_at_random_steps_every_finished_step_is_readable(tmp_path, reference):
    """SIGKILL once step k's file exists, for random k; the seed is in every assertion message
    (MEMSTATE_FAULT_SEED repeats a run)."""
    job, full = reference
    seed = fault_seed()
    for k in sorted(random.Random(seed).sample(range(150), 3)):
        out = tmp_path / f"k{k}"
        kill_when(out, lambda out=out, k=k: (out / f"step-{k:06d}.safetensors").is_file())
        result = run_implementation(load_implementation(IMPLS / "pure_python"), job, out)
        kept = check_killed_run(result, full, f"seed {seed}, kill after step {k}")
        assert k < kept < 300, f"seed {seed}: killed after step {k} but {kept} steps kept"


def test_killed_at_random_moments_mid_write(tmp_path, reference):
    """SIGKILL after a random delay, wherever the writer is (possibly inside a file write)."""
    job, full = reference
    seed = fault_seed()
    rng = random.Random(seed)
    for i in range(3):
        out = tmp_path / f"t{i}"
        # within the first 80% of what the whole run took here, so that the kill lands mid-run
        delay, started = rng.uniform(0.0, min(3.0, 0.8 * REFERENCE_SECONDS[0])), time.monotonic()
        kill_when(out, lambda out=out, delay=delay, started=started:
                  (out / "manifest.json").is_file() and time.monotonic() - started > delay)
        result = run_implementation(load_implementation(IMPLS / "pure_python"), job, out)
        check_killed_run(result, full, f"seed {seed}, kill after {delay:.3f} s")


def test_a_timeout_kills_what_the_implementation_started_too(tmp_path):
    """The implementation runs in its own process group: a timeout leaves nothing of it behind."""
    d = tmp_path / "forks"
    d.mkdir()
    (d / "memstate-impl.json").write_text(json.dumps({"name": "forks", "command": [
        "{python}", "-c", "import subprocess, time; subprocess.Popen(['sleep', '297.531']); time.sleep(300)", "{out}"]}))
    r = subprocess.run([sys.executable, "-m", "harness.compare", "impls/numpy", str(d), *SMALL, "--steps", "2",
                        "--timeout", "2", "--out", str(tmp_path / "run"), "--no-html"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "verdict: DIVERGED at load, hidden/weight (stopped)" in r.stdout
    assert "B stopped before writing anything: the process timed out after 2 s and was killed" in r.stdout
    time.sleep(0.2)
    assert processes_with("297.531") == [], "the implementation's child outlived the timeout"


def processes_with(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and text.encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            pass  # gone meanwhile
    return found

"""Warm starts (harness/run/warm.py): from an implementation's second run on, a process that has imported
its entry file forks each run. A warm run must be a cold one in all but speed: the same memstate bit for
bit, the same errors, timeouts, Ctrl-C and process ending, its import's output, its command line and
token in /proc; an entry file that cannot be forked safely, or is edited, is run cold or imported again."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS

from harness.run.job import prepare_job
from harness.run.runner import load_implementation, run_config, run_implementation
from harness.spec.config import Config
from harness.spec.params import initial_params
from harness.store.memstate import Memstate

SMALL = Config(hidden=16, batch_size=8, steps=3)


def planted(tmp_path: Path, body: str, name: str = "impl") -> Path:
    """A copy of impls/numpy with `body` appended to its entry file."""
    impl = tmp_path / name
    shutil.copytree(IMPLS / "numpy", impl)
    (impl / "mlp.py").write_text((impl / "mlp.py").read_text() + "\n" + body)
    return impl


@pytest.mark.parametrize("impl", ["numpy", "torch", "jax"])
def test_a_warm_run_equals_a_cold_one_bit_for_bit(tmp_path, mnist, monkeypatch, impl):
    code = tmp_path / impl  # a copy: this process's first runs of it, whatever ran before in this worker
    shutil.copytree(IMPLS / impl, code)
    monkeypatch.setenv("MEMSTATE_WARM", "0")
    cold = [run_config(code, SMALL, tmp_path / f"cold{i}", mnist) for i in range(2)]
    monkeypatch.delenv("MEMSTATE_WARM")
    first, second = (run_config(code, SMALL, tmp_path / f"warm{i}", mnist) for i in range(2))
    assert [r.warm for r in (*cold, first, second)] == [False, False, False, True]
    a, b = Memstate(cold[0].memstate), Memstate(second.memstate)
    assert a.status == b.status == "complete" and a.units == b.units
    for unit in a.units:
        assert a.names(unit) == b.names(unit)
        for name in a.names(unit):
            assert np.array_equal(a.get(unit, name), b.get(unit, name)), (unit, name)


def test_what_a_warm_run_forks_and_detaches_ends_with_it_and_shows_its_run(tmp_path, mnist, monkeypatch):
    """A fork without exec that leaves the session is found by the run's token, as a cold start's is; and
    /proc shows the run's command line (its memstate's path), not the warm process's."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("MARKS", str(marks))
    impl = planted(tmp_path, "_run = run\n\n\ndef run(job, record):\n    import os, time\n"
                             "    if os.fork() == 0:\n        os.setsid()\n"
                             "        with open(os.path.join(os.environ['MARKS'], str(os.getpid())), 'wb') as f:\n"
                             "            f.write(open('/proc/self/cmdline', 'rb').read())\n"
                             "        time.sleep(120)\n        os._exit(0)\n    return _run(job, record)\n")
    for i in range(2):
        result = run_config(impl, SMALL, tmp_path / f"r{i}", mnist)
        assert result and result.warm == (i == 1)
        (mark,) = [m for m in marks.iterdir() if m.stat().st_size]
        assert str(result.memstate).encode() in mark.read_bytes().split(b"\0")  # what ps shows: this run
        time.sleep(0.2)
        stat = Path(f"/proc/{mark.name}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z", "a detached fork outlived its run"
        mark.unlink()


def test_a_crash_in_a_warm_run_says_what_a_cold_one_says(tmp_path, mnist):
    impl = planted(tmp_path, "_run = run\n\n\ndef run(job, record):\n    raise ValueError('planted crash')\n")
    cold, warm = (run_config(impl, SMALL, tmp_path / f"r{i}", mnist) for i in range(2))
    assert warm.warm and not cold.warm
    assert warm.status == cold.status == "stopped" and warm.returncode == cold.returncode == 1
    assert warm.error == cold.error == "ValueError: planted crash (the process exited with code 1)"
    assert "raise ValueError('planted crash')" in Memstate(warm.memstate).manifest["stopped"]["stderr_tail"]


def test_a_warm_run_times_out_and_is_killed(tmp_path, mnist):
    impl = planted(tmp_path, "_run = run\n\n\ndef run(job, record):\n    import time\n    time.sleep(60)\n")
    code = load_implementation(impl)
    job = prepare_job(tmp_path / "job", SMALL, initial_params(SMALL), mnist)
    runs = [run_implementation(code, job, tmp_path / f"r{i}", timeout=1.5) for i in range(2)]
    assert [r.warm for r in runs] == [False, True]
    for r in runs:
        assert r.status == "stopped" and r.error == "the process timed out after 1.5 s and was killed"
        assert r.returncode == -signal.SIGKILL and r.seconds < 30


SLOW = """
_run = run


class Slow:
    def __init__(self, record):
        self.record = record

    def __getattr__(self, name):
        return getattr(self.record, name)

    def __call__(self, *a, **k):
        said = self.record(*a, **k)  # step 0's file: written now
        if a[0] == 1:
            import time
            time.sleep(30)
        return said


def run(job, record):
    import os
    with open(os.environ["PARENT"], "wb") as f:  # who started this run
        f.write(open(f"/proc/{os.getppid()}/cmdline", "rb").read())
    return _run(job, Slow(record))
"""


def test_ctrl_c_closes_a_warm_run_as_interrupted_keeping_its_steps(tmp_path, mnist, monkeypatch):
    monkeypatch.setenv("PARENT", str(tmp_path / "parent"))
    impl = planted(tmp_path, SLOW)
    code = load_implementation(impl)
    job = prepare_job(tmp_path / "job", SMALL, initial_params(SMALL), mnist)
    run_implementation(code, job, tmp_path / "first", timeout=1)  # cold, and timed out
    out = tmp_path / "second"

    def interrupt() -> None:  # Ctrl-C, sent to the main thread, which waits on the run
        deadline = time.monotonic() + 60
        while not (out / "step-000000.safetensors").is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    # caught as a terminal's Ctrl-C is, whatever this worker's earlier tests left: in one full-suite run of
    # 2026-12-05 the worker's /proc status showed SIGINT no longer caught, and the run waited out its timeout
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_implementation(code, job, out, timeout=120)
    finally:
        signal.signal(signal.SIGINT, before)
    assert b"harness.run.forker" in (tmp_path / "parent").read_bytes()  # forked by a warm process
    m = Memstate(out)
    assert m.status == "interrupted"
    assert m.units[:2] == ["load", 0] and m.manifest["stopped"]["error"] == ("interrupted (Ctrl-C): the process "
                                                                           "exited with code 130")


def test_an_entry_file_that_starts_a_thread_on_import_runs_cold(tmp_path, mnist):
    impl = planted(tmp_path, "import threading as _t, time as _time\n"
                             "_t.Thread(target=_time.sleep, args=(60,), daemon=True).start()\n")
    runs = [run_config(impl, SMALL, tmp_path / f"r{i}", mnist) for i in range(3)]
    assert all(runs) and not any(r.warm for r in runs)


def test_an_entry_file_that_does_not_import_says_so_every_time(tmp_path, mnist):
    impl = planted(tmp_path, "raise ImportError('planted')\n")
    runs = [run_config(impl, SMALL, tmp_path / f"r{i}", mnist) for i in range(3)]
    assert not any(r.warm for r in runs)
    said = "entry point mlp.py:run does not load: ImportError: planted (the process exited with code 1)"
    assert {r.error for r in runs} == {said}


def test_an_edited_entry_file_is_imported_again_and_its_output_reaches_each_run(tmp_path, mnist):
    impl = planted(tmp_path, "import sys as _sys\nprint('imported as first written')\n"
                             "print('to stderr', file=_sys.stderr)\n")
    runs = [run_config(impl, SMALL, tmp_path / f"r{i}", mnist) for i in range(2)]
    source = (impl / "mlp.py").read_text()
    (impl / "mlp.py").write_text(source.replace("as first written", "as edited"))
    runs += [run_config(impl, SMALL, tmp_path / f"e{i}", mnist) for i in range(2)]
    assert [r.warm for r in runs] == [False, True, False, True]
    said = [(r.memstate.with_name("run.stdout.txt").read_text(), r.memstate.with_name("run.stderr.txt").read_text())
            for r in runs]
    assert said[:2] == [("imported as first written\n", "to stderr\n")] * 2
    assert said[2:] == [("imported as edited\n", "to stderr\n")] * 2


def test_memstate_warm_0_starts_every_run_cold(tmp_path, mnist, monkeypatch):
    monkeypatch.setenv("MEMSTATE_WARM", "0")
    runs = [run_config(IMPLS / "pure_python", SMALL, tmp_path / f"r{i}", mnist) for i in range(3)]
    assert all(runs) and not any(r.warm for r in runs)


def test_runs_that_differ_only_in_pytests_test_name_share_a_warm_process_and_see_their_own(tmp_path, mnist,
                                                                                            monkeypatch):
    impl = planted(tmp_path, "_run = run\n\n\ndef run(job, record):\n    import os\n"
                             "    print(os.environ.get('PYTEST_CURRENT_TEST'), os.environ.get('OTHER'))\n"
                             "    return _run(job, record)\n")
    runs = []
    for i, other in enumerate(["a", "a", "a", "b"]):
        monkeypatch.setenv("PYTEST_CURRENT_TEST", f"test {i}")
        monkeypatch.setenv("OTHER", other)  # any other variable may be read on import: a new warm process
        runs.append(run_config(impl, SMALL, tmp_path / f"r{i}", mnist))
    assert [r.warm for r in runs] == [False, True, True, False]
    said = [r.memstate.with_name("run.stdout.txt").read_text() for r in runs]
    assert said == ["test 0 a\n", "test 1 a\n", "test 2 a\n", "test 3 b\n"]

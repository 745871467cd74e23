"""Warm starts: many runs of one Python entry point without importing it (and torch or JAX) each time.

The first run of an implementation starts cold, a fresh `python -m harness.run.child`, and notes the
modules it imported. From its second run on (a test suite, a bisection's replays, a scorecard), a warm
process (run/forker.py) imports the entry file and those modules once and forks a child per run: what
a cold start is once its imports are done, with its own session, the run's environment and token,
cwd, stdout and stderr (the import's output first), its command line and token as /proc shows them
(so processes.carriers finds what it forks), and a cold child's exit codes. The harness waits for it,
times it out, interrupts and kills it as it does a cold one (`WarmProcess` is what it needs of a
Popen). What it saves: docs/bisect.md, "Warm starts" (benchmarks/bench_starts.py).

A warm process serves one implementation directory, entry, environment (less forker.VOLATILE) and set
of files (names, sizes, modification times: an edit imports afresh); at most MAX_WARM are kept. An
entry file that does not import, or whose import starts a thread (a fork copies only the thread that
forks), starts cold every time. MEMSTATE_WARM=0 turns warm starts off.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from harness.run.forker import VOLATILE, send

MAX_WARM = 6  # warm processes kept at once; resident: numpy 35 MB, JAX 163 MB, torch 298 MB (measured)
ROOM = 16384  # bytes of command line a forked run can show in /proc: a cold start's, its manifest's JSON too
HANDSHAKE_TIMEOUT = 300.0  # seconds a warm process may take to import its entry file


class WarmProcess:
    """A run forked by a warm process: what the runner needs of a Popen (pid, wait)."""

    def __init__(self, warm: _Warm, pid: int):
        self.warm, self.pid = warm, pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal that killed it); raises TimeoutExpired as Popen does."""
        if self.returncode is None:
            self.returncode = self.warm.exit_code(self.pid, timeout)
        return self.returncode


class _Warm:
    """One warm process and the thread that reads what it says."""

    def __init__(self, impl_dir: Path, entry: str, env: dict[str, str], ahead: Path | None):
        self.tmp = Path(tempfile.mkdtemp(prefix="memstate-warm-"))
        self.outputs = (self.tmp / "import.stdout", self.tmp / "import.stderr")
        ours, theirs = socket.socketpair()
        env = {**env, "MEMSTATE_RUN_ID": f"warm-{uuid.uuid4().hex}"}  # no run's token: no run's end kills it
        with open(self.outputs[0], "wb") as so, open(self.outputs[1], "wb") as se:
            args = [sys.executable, "-P", "-B", "-m", "harness.run.forker", str(theirs.fileno()), str(impl_dir), entry,
                    str(ahead or ""), " " * ROOM]
            self.proc = subprocess.Popen(args, cwd=impl_dir, env=env, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                         pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self.sock, self.lock, self.cond = ours, threading.Lock(), threading.Condition()
        self.pids: list[int] = []
        self.exits: dict[int, int] = {}
        self.running: set[int] = set()
        self.dead = False
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        self.reader = self.sock.makefile("rb")
        try:
            hello = json.loads(self.reader.readline() or b"{}")
        except (OSError, ValueError):
            hello = {}
        self.refusal = None if "ready" in hello else hello.get("cold", "it did not start")
        self.ahead_refused = bool(hello.get("ahead"))
        self.thread: threading.Thread | None = None
        if self.refusal is None:
            self.sock.settimeout(None)
            self.thread = threading.Thread(target=self._read, daemon=True, name="memstate-warm")
            self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.reader:
                message = json.loads(line)
                with self.cond:
                    if "pid" in message:
                        self.pids.append(message["pid"])
                    else:
                        self.exits[message["exit"]] = message["code"]
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.dead = True
            self.cond.notify_all()

    def start(self, request: dict[str, Any]) -> WarmProcess | None:
        """Fork a child for `request`; None if the warm process is gone."""
        request = {**request, "import_stdout": str(self.outputs[0]), "import_stderr": str(self.outputs[1]),
                   "parent": self.proc.pid}
        with self.lock:
            try:
                send(self.sock, request)
            except OSError:
                return None
            with self.cond:
                self.cond.wait_for(lambda: self.pids or self.dead, timeout=60)
                if not self.pids:
                    return None
                pid = self.pids.pop(0)
                self.running.add(pid)
        return WarmProcess(self, pid)

    def exit_code(self, pid: int, timeout: float | None) -> int:
        with self.cond:
            if not self.cond.wait_for(lambda: pid in self.exits or self.dead, timeout):
                raise subprocess.TimeoutExpired(f"warm run {pid}", timeout or 0.0)
            self.running.discard(pid)
            # gone with the warm process: killed by the signal its death sends (PR_SET_PDEATHSIG)
            return self.exits.pop(pid, -signal.SIGKILL)

    def close(self) -> None:
        """End the warm process (its children have ended with their runs): shutting the socket down ends it
        and the thread reading it, and only then is the reader closed (closing it under a blocked read waits)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.thread is not None:
            self.thread.join(timeout=10)
        for closing in (self.reader.close, self.sock.close):
            try:
                closing()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


_warm: OrderedDict[tuple, _Warm] = OrderedDict()
_runs: dict[tuple, int] = {}
_cold: set[tuple] = set()  # keys whose entry files refused: cold every time
_ahead: dict[tuple, Path | None] = {}  # where the first run wrote what it imported (None: import nothing ahead)
_notes: Path | None = None  # this process's directory of those files
_owner = os.getpid()
_registry = threading.Lock()


def enabled() -> bool:
    return os.environ.get("MEMSTATE_WARM", "1") != "0" and sys.platform == "linux" and hasattr(os, "fork")


def _fingerprint(directory: Path) -> tuple:
    """The names, sizes and modification times of the directory's files: any edit starts a new warm process."""
    seen = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            seen.append((os.path.relpath(os.path.join(root, name), directory), st.st_size, st.st_mtime_ns))
        if len(seen) > 1000:
            break
    return tuple(seen)


def _notes_path() -> Path:
    global _notes
    if _notes is None:
        _notes = Path(tempfile.mkdtemp(prefix="memstate-imports-"))
        atexit.register(shutil.rmtree, _notes, True)
    return _notes / f"{uuid.uuid4().hex}.json"


def _warm_for(key: tuple, impl_dir: Path, entry: str, env: dict[str, str]) -> _Warm | None:
    """The key's warm process, started now if need be (with what the first run imported, else without)."""
    warm = _warm.get(key)
    if warm is None:
        for old in [k for k, w in _warm.items() if not w.running][:max(0, len(_warm) + 1 - MAX_WARM)]:
            _warm.pop(old).close()
        warm = _Warm(impl_dir, entry, env, _ahead.get(key))
        if warm.refusal is not None and warm.ahead_refused:  # what the run imports starts a thread: not ahead
            warm.close()
            _ahead[key] = None
            warm = _Warm(impl_dir, entry, env, None)
        if warm.refusal is not None:
            warm.close()
            _cold.add(key)
            return None
        _warm[key] = warm
    _warm.move_to_end(key)
    return warm


def start(impl_dir: Path, entry: str, argv: list[str], env: dict[str, str], stdout: Path,
          stderr: Path) -> tuple[WarmProcess | None, list[str]]:
    """A run of a Python entry point forked by a warm process; or (None, extra arguments for a cold child):
    start it cold (the first run of this implementation, warm starts off, or an entry point that cannot be
    forked). The first run's extra argument asks it to note what it imported."""
    global _owner, _notes
    if not enabled():
        return None, []
    with _registry:
        if _owner != os.getpid():  # a forked harness: its parent's warm processes and notes are not its own
            _warm.clear()
            _runs.clear()
            _ahead.clear()
            _owner = os.getpid()
            _notes = None
        key = (str(impl_dir), entry, tuple(sorted((k, v) for k, v in env.items() if k not in VOLATILE)),
               _fingerprint(impl_dir))
        _runs[key] = _runs.get(key, 0) + 1
        if key in _cold:
            return None, []
        if _runs[key] < 2:
            _ahead[key] = _notes_path()
            return None, [str(_ahead[key])]
        warm = _warm_for(key, impl_dir, entry, env)
    if warm is None:
        return None, []
    process = warm.start({"argv": argv, "token": env["MEMSTATE_RUN_ID"], "cwd": str(impl_dir),
                          "volatile": {k: v for k, v in env.items() if k in VOLATILE},
                          "stdout": str(stdout), "stderr": str(stderr)})
    if process is None:
        with _registry:
            if _warm.get(key) is warm:
                _warm.pop(key).close()
    return process, []

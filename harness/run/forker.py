"""The warm process (run/warm.py): imports an implementation's entry file once, then forks a child per run
that becomes what a cold start (`python -m harness.run.child`) is once its imports are done.

Run as `python -P -B -m harness.run.forker FD IMPL_DIR FILE:FUNC AHEAD ROOM` (FD: its end of a socket
pair; AHEAD: a file of module names to import ahead, or ""; ROOM: spaces where a forked run writes its
command line for /proc to show). On the socket, one JSON object a line: it says {"ready": pid} or
{"cold": why} once, then for each request {"pid": n} as it forks and {"exit": n, "code": c} as it reaps.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from harness.run import child

# Variables that change from run to run, which no import reads: a warm process serves runs that differ in
# them alone, each forked run taking its own (MEMSTATE_RUN_ID, and pytest's name for the test running)
VOLATILE = ("MEMSTATE_RUN_ID", "PYTEST_CURRENT_TEST")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _serve(sock: socket.socket) -> dict[str, Any] | None:
    """Fork a child for each request, answering its pid, and report each child's exit code when it is
    reaped. Returns the request in a forked child; None when the harness closes its end."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD writes to wake_w
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            data = sock.recv(1 << 16)
            if not data:
                return None
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    sock.close()
                    return request
                send(sock, {"pid": pid})


def _areas() -> tuple[tuple[int, int], tuple[int, int]]:
    """Where this process's command line and environment lie in its memory, as /proc reads them:
    /proc/self/stat's fields 48-51 (arg_start, arg_end, env_start, env_end)."""
    text = Path("/proc/self/stat").read_text()
    fields = [int(f) for f in text[text.rindex(")") + 2:].split()[45:49]]  # after "pid (comm) ": field 3 on
    return (fields[0], fields[1]), (fields[2], fields[3])


def _rewrite(start: int, end: int, old: bytes | None, new: bytes) -> None:
    """Write `new` over this process's own memory [start, end), where /proc/PID/cmdline or environ reads
    from: over `old` within it (NUL-padded to its length), else over the whole area less its last NUL."""
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        area = mem.read(end - start)
        at, room = (area.index(old), len(old)) if old is not None else (0, len(area) - 1)
        mem.seek(start + at)
        mem.write(new[:room].ljust(room, b"\0"))


def _show_as(argv: list[str], old_token: str, token: str) -> None:
    """Show the run's command line and token in /proc as a cold start shows them, so that whatever finds a
    run's processes there (processes.carriers, a person with ps) finds this one and what it forks."""
    args, env = _areas()
    _rewrite(*env, f"MEMSTATE_RUN_ID={old_token}".encode(), f"MEMSTATE_RUN_ID={token}".encode())
    _rewrite(*args, None, b"\0".join(a.encode() for a in argv) + b"\0")


def _become_the_run(request: dict[str, Any]) -> list[str]:
    """In a forked child: take on the run's session, signals, environment, directory and files."""
    os.setsid()
    try:  # die with the warm process, which alone can reap this one and say how it ended
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != request["parent"]:  # the warm process died before that: so must this
        os._exit(1)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    own = os.environ["MEMSTATE_RUN_ID"]
    os.environ.update(request["volatile"])  # else as a cold start's: the run's, as the import left it
    for name in set(VOLATILE) - set(request["volatile"]):
        os.environ.pop(name, None)
    _show_as([sys.executable, "-P", "-B", "-m", "harness.run.child", *request["argv"]], own, request["token"])
    os.chdir(request["cwd"])
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path, said in ((1, request["stdout"], request["import_stdout"]),
                           (2, request["stderr"], request["import_stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(out, fd)
        os.close(out)
        with open(said, "rb") as f:  # what importing the entry file printed, as a cold start prints it
            os.write(fd, f.read())
    argv = request["argv"]
    sys.argv = [child.__file__, *argv]
    return argv


def _import_ahead(path: str) -> None:
    """Import what the first run imported after loading the entry file, in its order; one that fails is
    left for the run to import (or fail on) itself."""
    try:
        names = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    for name in names if isinstance(names, list) else ():
        if isinstance(name, str) and name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - the run imports it itself, as a cold start would
                continue


def main(argv: list[str]) -> int:
    fd, impl_dir, entry, ahead = int(argv[0]), argv[1], argv[2], argv[3]  # argv[4]: room for a run's command line
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness passes Ctrl-C on to each run's own session
    try:  # a run's token must show in /proc as a cold start's does (processes.carriers), else no warm starts
        token = os.environ["MEMSTATE_RUN_ID"].encode()
        _rewrite(*_areas()[1], token, token)
    except (OSError, ValueError, KeyError) as e:
        send(sock, {"cold": f"a run's token cannot be shown in /proc ({e})"})
        return 0
    before = _threads()
    try:
        run = child.load_entry(impl_dir, entry)
    except BaseException as e:  # noqa: BLE001 - a cold start reports it, in the child's own words
        send(sock, {"cold": f"the entry point does not load ({type(e).__name__})"})
        return 0
    if threading.active_count() > 1 or _threads() > before:
        send(sock, {"cold": "importing the entry point started a thread"})
        return 0
    if ahead:
        _import_ahead(ahead)
        if threading.active_count() > 1 or _threads() > before:
            send(sock, {"cold": "importing ahead what a run imports started a thread", "ahead": True})
            return 0
    send(sock, {"ready": os.getpid()})
    request = _serve(sock)
    if request is None:
        return 0
    code = child.main(_become_the_run(request), loaded=run)
    _exit(code)
    return code


def _exit(code: int) -> None:
    """Exit as the interpreter does (threads joined, atexit handlers run, output flushed), less tearing down
    the modules the warm process imported: torch's take half a second, and the fork's copy dies with it."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

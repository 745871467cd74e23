"""The processes an implementation starts, and how they all end with its run.

Each run gets a token in its environment (MEMSTATE_RUN_ID), inherited by everything it starts. When
the run ends, however it ends (success, crash, timeout, Ctrl-C, SIGTERM, SIGHUP), its process group
is killed and so is every process that still carries the token, so a background child, even one
that left the group with setsid, cannot write into a memstate after its comparison is printed.
SIGTERM and SIGHUP reach the harness as `Terminated`, a KeyboardInterrupt, so they close the
memstates as interrupted exactly as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

RUN_ID = "MEMSTATE_RUN_ID"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is; `signum` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt_name(e: BaseException) -> str:
    """How an interruption is named in messages: Ctrl-C, SIGTERM or SIGHUP."""
    return signal.Signals(e.signum).name if isinstance(e, Terminated) else "Ctrl-C"


def interrupt_code(e: BaseException) -> int:
    """The exit code after an interruption: 130 for Ctrl-C, 128 + the signal's number otherwise."""
    return 128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def terminations_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `Terminated` (in the main thread only; elsewhere a no-op)."""
    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)
    old: dict[int, object] = {}
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave the signals as they are
        pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


def new_run_id() -> str:
    return uuid.uuid4().hex


def carriers(token: str) -> list[int]:
    """Every process (of those this user can read) whose environment holds MEMSTATE_RUN_ID=token."""
    needle = f"{RUN_ID}={token}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env + b"\0":
            found.append(int(entry.name))
    return found


def end_run(proc: subprocess.Popen | None, token: str) -> None:
    """Kill what is left of a run: its process group, then every process that carries its token (a
    setsid'ed child too), and reap the leader."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for _ in range(3):  # a process that forks while being killed: look again
        pids = carriers(token)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)


def tail(path: Path, limit: int = 2000) -> str:
    """The last `limit` bytes of a file, read without reading the rest (an implementation may write
    gigabytes to stderr)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")

"""Run an implementation directory on a job and collect its memstate.

An implementation directory holds memstate-impl.json, either

    {"name": "numpy", "entry": "mlp.py:run"}                       a Python function, or
    {"name": "go", "command": ["./mlp", "{job}", "{out}"]}          any program

Both run in a child process, so a crash, a hang or a kill costs only that side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .job import Job
from .jsonl import convert_jsonl
from .memstate import MANIFEST, Memstate, MemstateWriter, write_atomic

IMPL_MANIFEST = "memstate-impl.json"
DEFAULT_TIMEOUT = 600.0
PLACEHOLDERS = ("{job}", "{out}", "{python}")


@dataclass(frozen=True)
class Implementation:
    """A loaded and checked implementation manifest."""

    dir: Path
    name: str
    entry: str | None = None  # "file.py:function"
    command: tuple[str, ...] | None = None
    timeout: float | None = None

    @property
    def kind(self) -> str:
        return "python" if self.entry else "command"


def is_implementation(path: str | Path) -> bool:
    return (Path(path) / IMPL_MANIFEST).is_file()


def load_implementation(path: str | Path) -> Implementation:
    directory = Path(path).resolve()
    mpath = directory / IMPL_MANIFEST
    try:
        data = json.loads(mpath.read_text())
    except OSError as e:
        raise InputError(f"{mpath}: cannot read implementation manifest: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{mpath}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{mpath}: expected a JSON object")
    name = data.get("name", directory.name)
    if not isinstance(name, str) or not name:
        raise InputError(f"{mpath}: field 'name' must be a non-empty string")
    entry, command = data.get("entry"), data.get("command")
    if (entry is None) == (command is None):
        raise InputError(f"{mpath}: give exactly one of 'entry' (\"file.py:function\") or 'command' (a list of arguments)")
    if entry is not None:
        if not isinstance(entry, str) or entry.count(":") != 1:
            raise InputError(f"{mpath}: field 'entry' must look like \"file.py:function\", got {entry!r}")
        file = (directory / entry.split(":")[0]).resolve()
        if directory not in file.parents:
            raise InputError(f"{mpath}: entry file {entry.split(':')[0]!r} is outside the implementation directory")
        if not file.is_file():
            raise InputError(f"{mpath}: entry file {file.name!r} does not exist in {directory}")
    if command is not None:
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise InputError(f"{mpath}: field 'command' must be a non-empty list of strings (no shell), got {command!r}")
        if "{out}" not in " ".join(command):
            raise InputError(f"{mpath}: field 'command' must pass the output path with the placeholder {{out}}")
        command = tuple(command)
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise InputError(f"{mpath}: field 'timeout' must be a positive number of seconds")
    return Implementation(directory, name, entry, command, timeout)


@dataclass
class RunResult:
    """How one implementation run ended. Truthy when it completed."""

    impl: Implementation
    memstate: Path
    status: str
    error: str | None
    seconds: float
    returncode: int | None

    def __bool__(self) -> bool:
        return self.status == "complete"


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _describe_exit(code: int | None, timed_out: float | None) -> str:
    if timed_out is not None:
        return f"timed out after {timed_out:g} s and was killed"
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def run_implementation(impl: Implementation, job: Job, out: str | Path, timeout: float | None = None) -> RunResult:
    """Run `impl` on `job`, writing its memstate to `out`. Never raises for the impl's own failures."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = timeout or impl.timeout or DEFAULT_TIMEOUT
    manifest: dict[str, Any] = {
        "implementation": {"name": impl.name, "path": str(impl.dir), "kind": impl.kind},
        "config": job.config.to_dict(),
        "dtype": job.config.dtype,
        "params_sha256": job.params_sha256,
        "data": job.data_source,
    }
    stderr_path = out.with_name(out.name + ".stderr.txt")
    stdout_path = out.with_name(out.name + ".stdout.txt")
    env = dict(os.environ)
    harness_parent = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (harness_parent, env.get("PYTHONPATH")) if p)
    jsonl = out.with_name(out.name + ".jsonl")
    if impl.entry:
        args = [sys.executable, "-P", "-m", "harness._child", str(impl.dir), impl.entry, str(job.dir), str(out),
                json.dumps(manifest)]
    else:
        subst = {"{job}": str(job.dir.resolve()), "{out}": str(jsonl), "{python}": sys.executable}
        args = []
        for a in impl.command or ():
            for k, v in subst.items():
                a = a.replace(k, v)
            args.append(a)
    start = time.perf_counter()
    timed_out = None
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        try:
            proc = subprocess.Popen(args, cwd=impl.dir, stdout=so, stderr=se, stdin=subprocess.DEVNULL, env=env)
        except OSError as e:
            code, launch_error = None, f"could not start {args[0]!r}: {e.strerror}"
        else:
            launch_error = None
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code, timed_out = proc.wait(), timeout
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
    seconds = time.perf_counter() - start
    stderr_tail = _tail(stderr_path)
    if impl.command:
        if not out.exists():
            convert_jsonl(jsonl, out, manifest, stderr_tail=stderr_tail if code else None)
    elif not (out / MANIFEST).exists():
        MemstateWriter(out, manifest).close("stopped", error=launch_error or "no memstate was written")
    state = json.loads((out / MANIFEST).read_text())
    if launch_error or code != 0:
        why = launch_error or f"the process {_describe_exit(code, timed_out)}"
        stopped = state.get("stopped") or {}
        own = stopped.get("error") if state.get("status") in ("stopped", "interrupted") else None
        if impl.command and own and not state.get("units"):
            own = None  # "cannot read the .jsonl" only repeats that the process wrote nothing
        if timed_out is None and own:
            why = f"{own} ({why})"  # the implementation's own error first, then how the process ended
        if state.get("status") != "interrupted":
            state["status"] = "stopped"
        state["stopped"] = {**stopped, "error": why, "returncode": code, "stderr_tail": stderr_tail}
    state["wall_seconds"] = round(seconds, 3)
    write_atomic(out / MANIFEST, json.dumps(state, indent=1).encode())
    result = Memstate(out)
    err = (result.manifest.get("stopped") or {}).get("error")
    return RunResult(impl, out, result.status, err, seconds, code)

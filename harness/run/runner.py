"""Run an implementation directory on a job and collect its memstate.

An implementation directory holds memstate-impl.json, either

    {"name": "numpy", "entry": "mlp.py:run"}                       a Python function, or
    {"name": "go", "command": ["./mlp", "{job}", "{out}"]}          any program

A program may have a build step: "build" (a command, with {build} for its output directory)
and "sources" (the files it reads). It runs once per distinct sources-and-command, into a
cache directory keyed by their hash, so a change to any source rebuilds. Everything runs in
a child process, so a crash, a hang, a kill or a failed build costs only that side.
"""

from __future__ import annotations

import hashlib
import math
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache_root
from harness.spec.config import Config
from harness.spec.data import Mnist
from harness.errors import InputError, OutputError, read_json
from harness.run import warm
from harness.run.job import Job, prepare_job, replay_buffers, resolve
from harness.store.jsonl import convert_jsonl
from harness.store.format import MANIFEST, WRITE_FAILED, write_atomic
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.params import Params, initial_params
from harness.run.processes import RUN_ID, end_run, interrupt_name, new_run_id, tail, terminations_interrupt

IMPL_MANIFEST = "memstate-impl.json"
DEFAULT_TIMEOUT = 600.0
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Implementation:
    """A loaded and checked implementation manifest."""

    dir: Path
    name: str
    entry: str | None = None  # "file.py:function"
    command: tuple[str, ...] | None = None
    timeout: float | None = None
    build: tuple[str, ...] | None = None
    sources: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "python" if self.entry else "command"


def is_implementation(path: str | Path) -> bool:
    return (Path(path) / IMPL_MANIFEST).is_file()


def load_implementation(path: str | Path) -> Implementation:
    directory = Path(path).resolve()
    mpath = directory / IMPL_MANIFEST
    data = read_json(mpath, "implementation manifest")
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
        program = command[0]
        relative = "/" in program and not program.startswith(("{", "/"))  # it must stay in the directory
        if relative and directory not in (directory / program).resolve().parents:
            raise InputError(f"{mpath}: program {program!r} is outside the implementation directory; name a "
                             f"program on PATH (\"node\"), one in the directory (\"./mlp\"), {{build}}/..., "
                             f"or an absolute path")
        command = tuple(command)
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise InputError(f"{mpath}: field 'timeout' must be a positive finite number of seconds, got {timeout!r}")
    build, sources = data.get("build"), data.get("sources", [])
    if build is not None:
        if command is None:
            raise InputError(f"{mpath}: field 'build' needs a 'command' to run what it builds")
        if not isinstance(build, list) or not build or not all(isinstance(b, str) for b in build):
            raise InputError(f"{mpath}: field 'build' must be a non-empty list of strings (no shell), got {build!r}")
        build = tuple(build)
    if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
        raise InputError(f"{mpath}: field 'sources' must be a list of file names")
    for src in sources:
        path = (directory / src).resolve()
        if directory not in path.parents:
            raise InputError(f"{mpath}: source {src!r} is outside the implementation directory")
        if not path.is_file():
            raise InputError(f"{mpath}: source {src!r} does not exist in {directory}")
    return Implementation(directory, name, entry, command, timeout, build, tuple(sources))


def build_directory(impl: Implementation) -> Path:
    """Where `impl`'s build goes: keyed by the build command and every source's name and bytes."""
    digest = hashlib.sha256(json.dumps(impl.build).encode())
    for src in sorted(impl.sources):
        digest.update(src.encode() + b"\0" + (impl.dir / src).read_bytes() + b"\0")
    return cache_root() / "build" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', impl.name)}-{digest.hexdigest()[:16]}"


def ensure_built(impl: Implementation) -> tuple[Path | None, str | None, str]:
    """Build `impl` unless this exact build exists. Returns (directory, error, build output)."""
    target = build_directory(impl)
    if (target / ".built").is_file():
        return target, None, ""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args = [a.replace("{build}", str(tmp)) for a in impl.build or ()]
    try:
        proc = subprocess.run(args, cwd=impl.dir, capture_output=True, timeout=BUILD_TIMEOUT, check=False)
    except FileNotFoundError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, (f"build tool {args[0]!r} is not installed; {impl.dir / IMPL_MANIFEST} needs it "
                      f"to build {impl.name}"), ""
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"the build ({args[0]}) took over {BUILD_TIMEOUT:g} s and was killed", ""
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"the build failed: {args[0]} exited with code {proc.returncode}", output[-4000:]
    (tmp / ".built").write_text(json.dumps({"build": args, "sources": list(impl.sources)}))
    try:
        os.replace(tmp, target)
    except OSError:  # built meanwhile by another process: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target, None, output


@dataclass
class RunResult:
    """How one implementation run ended. Truthy when it completed."""

    impl: Implementation
    memstate: Path
    status: str
    error: str | None
    seconds: float
    returncode: int | None
    warm: bool = False  # forked by a process that had imported the entry file (run/warm.py)

    def __bool__(self) -> bool:
        return self.status == "complete"


def _describe_exit(code: int | None, timed_out: float | None) -> str:
    if timed_out is not None:
        return f"timed out after {timed_out:g} s and was killed"
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


INTERRUPT_GRACE = 10.0  # seconds an interrupted implementation has to close its memstate


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _interrupt(proc: subprocess.Popen) -> int:
    """Ctrl-C: pass SIGINT to the implementation's process group, give it INTERRUPT_GRACE seconds to
    close its memstate, then kill it. A second Ctrl-C kills it at once."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        with terminations_interrupt():  # a second SIGTERM, like a second Ctrl-C, kills it at once
            return proc.wait(timeout=INTERRUPT_GRACE)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, ProcessLookupError):
        _kill_group(proc)
        return proc.wait()


def _warm_start(impl: Implementation, args: list[str], env: dict[str, str], stdout: Path,
                stderr: Path) -> tuple[warm.WarmProcess | None, list[str]]:
    """A Python entry point's run forked by a warm process (run/warm.py); or (None, the arguments to add to a
    cold start's): start it cold."""
    if not impl.entry:
        return None, []
    try:
        return warm.start(impl.dir, impl.entry, args[-5:], env, stdout, stderr)
    except OSError:  # no socket, no fork: a cold start says what is wrong, if anything
        return None, []


def run_implementation(impl: Implementation, job: Job, out: str | Path, timeout: float | None = None) -> RunResult:
    """Run `impl` on `job`, writing its memstate to `out`. Never raises for the impl's own failures;
    Ctrl-C closes the memstate as interrupted (every finished step kept) and raises KeyboardInterrupt."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: already holds a memstate; refusing to overwrite it (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    timeout = timeout if timeout is not None else impl.timeout or DEFAULT_TIMEOUT
    manifest: dict[str, Any] = {
        "implementation": {"name": impl.name, "path": str(impl.dir), "kind": impl.kind},
        "config": job.config.to_dict(),
        "dtype": job.config.dtype,
        "params_sha256": job.params_sha256,
        "data": job.data_source,
        **job.manifest_facts(),
    }
    stderr_path = out.with_name(out.name + ".stderr.txt")
    stdout_path = out.with_name(out.name + ".stdout.txt")
    env = dict(os.environ)
    token = env[RUN_ID] = new_run_id()  # everything the run starts carries it, and ends with the run
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing is written into the implementation's directory
    harness_parent = str(Path(__file__).resolve().parents[2])  # the directory that holds harness/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (harness_parent, env.get("PYTHONPATH")) if p)
    jsonl = out.with_name(out.name + ".jsonl")
    if impl.entry:
        args = [sys.executable, "-P", "-B", "-m", "harness.run.child", str(impl.dir), impl.entry, str(job.dir), str(out),
                json.dumps(manifest)]
    else:
        built, build_error, build_output = ensure_built(impl) if impl.build else (None, None, "")
        if build_error:
            MemstateWriter(out, manifest).close("stopped", error=build_error, build_output=build_output)
            return RunResult(impl, out, "stopped", build_error, 0.0, None)
        subst = {"{job}": str(job.dir.resolve()), "{out}": str(jsonl), "{python}": sys.executable,
                 "{build}": str(built)}
        args = []
        for a in impl.command or ():
            for k, v in subst.items():
                a = a.replace(k, v)
            args.append(a)
    start = time.perf_counter()
    timed_out: float | None = None
    interrupted: KeyboardInterrupt | None = None
    proc = None
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        try:  # its own process group: a timeout kills whatever it started too, and Ctrl-C reaches it through us
            forked, extra = _warm_start(impl, args, env, stdout_path, stderr_path)
            proc = forked or subprocess.Popen([*args, *extra], cwd=impl.dir, stdout=so, stderr=se,
                                              stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as e:
            code, launch_error = None, f"could not start {args[0]!r}: {e.strerror}"
        else:
            launch_error = None
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code, timed_out = proc.wait(), timeout
            except KeyboardInterrupt as e:
                code, interrupted = _interrupt(proc), e
            finally:
                end_run(proc, token)  # whatever it left running (a background child) ends with the run
    seconds = time.perf_counter() - start
    stderr_tail = tail(stderr_path)
    try:
        result = _finish_run(impl, out, manifest, jsonl, seconds, code, launch_error, timed_out, interrupted,
                             stderr_tail, replay_buffers(job.dir) if impl.command else [])
        result.warm = isinstance(proc, warm.WarmProcess)
        return result
    except OSError as e:  # the harness's own writes: converting the .jsonl, the final manifest
        raise OutputError(f"{e.filename or out}: cannot write: {e.strerror or e}; the finished steps in {out} "
                          f"are kept") from None


def _finish_run(impl: Implementation, out: Path, manifest: dict[str, Any], jsonl: Path, seconds: float,
                code: int | None, launch_error: str | None, timed_out: float | None,
                interrupted: KeyboardInterrupt | None,
                stderr_tail: str, load: list[tuple[str, Any]]) -> RunResult:
    """Turn how the process ended into the memstate's final manifest (`load`: records the converter
    adds to a JSON-lines memstate's load unit, a replay's starting optimizer buffers)."""
    if impl.entry and code == WRITE_FAILED:
        said = [line for line in stderr_tail.splitlines() if line.startswith("memstate: cannot write")]
        raise OutputError(f"{out}: {impl.name}'s memstate could not be written"
                          f"{': ' + said[-1].removeprefix('memstate: ') if said else ''}; its finished steps are kept")
    for tmp in out.glob("*.tmp"):  # a write the process was killed in: never a unit, now nobody's
        tmp.unlink()
    if impl.command:
        if not out.exists():
            convert_jsonl(jsonl, out, manifest, stderr_tail=stderr_tail if code else None,
                          load=load)
    elif not (out / MANIFEST).exists():
        MemstateWriter(out, manifest).close("stopped", error=launch_error or "no memstate was written")
    state = json.loads((out / MANIFEST).read_text())
    refused = state.get("status") == "unsupported" and timed_out is None  # its own word, whatever its exit code
    if launch_error or (code != 0 and not refused) or interrupted is not None:
        why = launch_error or f"the process {_describe_exit(code, timed_out)}"
        stopped = state.get("stopped") or {}
        own = stopped.get("error") if state.get("status") in ("stopped", "interrupted") else None
        if impl.command and own and not state.get("units") and own.startswith(f"{jsonl}: cannot read"):
            own = None  # "cannot read the .jsonl" only repeats that the process wrote nothing; its own end line stays
        if interrupted is not None:
            why = f"interrupted ({interrupt_name(interrupted)}): the process {_describe_exit(code, None)}"
        elif timed_out is None and own:
            why = f"{own} ({why})"  # the implementation's own error first, then how the process ended
        if state.get("status") != "interrupted":
            state["status"] = "interrupted" if interrupted is not None else "stopped"
        state["stopped"] = {**stopped, "error": why, "returncode": code, "stderr_tail": stderr_tail}
    if state.get("units") is None:  # the process died before closing: its finished step files are the record
        state["units"] = Memstate(out).units
    if state.get("status") == "complete":  # exit 0 and "complete": does it hold what the job asks for?
        problem = Memstate(out).damaged
        if problem:
            state["status"] = "stopped"
            state["stopped"] = {"error": f"{problem} (the process exited with code {code})", "returncode": code,
                                "stderr_tail": stderr_tail}
    state["wall_seconds"] = round(seconds, 3)
    write_atomic(out / MANIFEST, json.dumps(state, indent=1).encode())
    if interrupted is not None:
        raise interrupted  # SIGTERM stays Terminated, so the command line exits 143, not 130
    # the manifest just written says how it ended; opening the memstate (every step's header) is the caller's
    return RunResult(impl, out, state["status"], (state.get("stopped") or {}).get("error"), seconds, code)


def run_config(impl: str | Path, config: Config, work: str | Path, mnist: Mnist, params: Params | None = None,
               timeout: float | None = None) -> RunResult:
    """Prepare a job for `config` under work/job (the seed's parameters unless `params`) and run an
    implementation directory on it into work/run: prepare_job and run_implementation in one call."""
    work = Path(work)
    if params is None:  # the seed's, for the data's input width
        params = initial_params(resolve(config, mnist))
    job = prepare_job(work / "job", config, params, mnist)
    return run_implementation(load_implementation(impl), job, work / "run", timeout=timeout)

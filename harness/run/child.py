"""Child process for a Python entry point: load the file by path, call it, write its memstate.

Run as `python -P -m harness.run.child IMPL_DIR FILE:FUNC JOB_DIR OUT MANIFEST_JSON [IMPORTS]`. The -P
keeps the implementation's directory off sys.path (impls/numpy must not shadow numpy).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from harness.run.job import replay_buffers
from harness.store.format import WRITE_FAILED, WriteError
from harness.store.writer import MemstateWriter
from harness.spec.records import LOAD


def finish(writer: MemstateWriter, code: int, status: str, **stopped: str) -> int:
    """Close the memstate; if even that cannot be written (a full disk), say so on stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the manifest short
    try:
        writer.close(status, **stopped)
    except OSError as e:
        print(f"memstate: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return WRITE_FAILED
    return code


def load_entry(impl_dir: str, entry: str) -> Callable[[str, MemstateWriter], object]:
    """The entry point's function, its file loaded by path (run as a module, off sys.path)."""
    file, func = entry.split(":")
    spec = importlib.util.spec_from_file_location(f"memstate_impl_{Path(impl_dir).name}", Path(impl_dir) / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, func)


def main(argv: list[str], loaded: Callable[[str, MemstateWriter], object] | None = None) -> int:
    """Run the entry point on the job into a memstate; `loaded`: its function, loaded already by a warm
    process (run/warm.py) that forked this one."""
    impl_dir, entry, job_dir, out, manifest = argv
    writer = MemstateWriter(out, json.loads(manifest))
    for name, value in replay_buffers(Path(job_dir)):  # a replay's starting optimizer buffers
        writer(LOAD, name, value)
    try:
        run = loaded or load_entry(impl_dir, entry)
    except KeyboardInterrupt:
        return finish(writer, 130, "interrupted", error="interrupted (Ctrl-C) while loading the entry point")
    except Exception as e:  # noqa: BLE001 - any import failure is the implementation's, reported in the manifest
        print(traceback.format_exc(), file=sys.stderr)
        return finish(writer, 1, "stopped", error=f"entry point {entry} does not load: {type(e).__name__}: {e}",
                      traceback=traceback.format_exc()[-4000:])
    try:
        run(job_dir, writer)
    except KeyboardInterrupt:
        return finish(writer, 130, "interrupted", error="interrupted (Ctrl-C)")
    except WriteError as e:  # the memstate's own file, not the implementation's fault
        print(f"memstate: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return finish(writer, WRITE_FAILED, "stopped", error=f"cannot write {e.filename}: {e.strerror}")
    except Exception as e:  # noqa: BLE001 - the implementation's crash is data for the comparison
        print(traceback.format_exc(), file=sys.stderr)
        return finish(writer, 1, "stopped", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
    if writer.unsupported_reason is not None:
        return finish(writer, 0, "unsupported", error=writer.unsupported_reason)
    return finish(writer, 0, "complete")


def note_imports(path: str) -> None:
    """Write the names of the modules this run imported, in the order it imported them: what a warm
    process (run/warm.py) imports ahead of the next run (torch imports its compiler on first use)."""
    names = [n for n in list(sys.modules) if n != "__main__" and not n.startswith("memstate_impl_")]
    try:
        Path(path).write_text(json.dumps(names))
    except OSError:
        pass  # only a warm start's head start is lost


if __name__ == "__main__":
    code = main(sys.argv[1:6])
    if len(sys.argv) > 6:  # the runner asks what to import ahead of this implementation's next run
        note_imports(sys.argv[6])
    sys.exit(code)

"""Child process for a Python entry point: load the file by path, call it, write its memstate.

Run as `python -P -m harness._child IMPL_DIR FILE:FUNC JOB_DIR OUT MANIFEST_JSON`. The -P
keeps the implementation's directory off sys.path (impls/numpy must not shadow numpy).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
from pathlib import Path

from .memstate import MemstateWriter


def main(argv: list[str]) -> int:
    impl_dir, entry, job_dir, out, manifest = argv
    writer = MemstateWriter(out, json.loads(manifest))
    file, func = entry.split(":")
    try:
        spec = importlib.util.spec_from_file_location(f"memstate_impl_{Path(impl_dir).name}", Path(impl_dir) / file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = getattr(module, func)
    except Exception as e:  # noqa: BLE001 - any import failure is the implementation's, reported in the manifest
        writer.close("stopped", error=f"entry point {entry} does not load: {type(e).__name__}: {e}",
                     traceback=traceback.format_exc()[-4000:])
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    try:
        run(job_dir, writer)
    except KeyboardInterrupt:
        writer.close("interrupted", error="interrupted (Ctrl-C)")
        return 130
    except Exception as e:  # noqa: BLE001 - the implementation's crash is data for the comparison
        writer.close("stopped", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    writer.close("complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

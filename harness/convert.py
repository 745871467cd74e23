"""`python -m harness.convert SRC DST`: binary memstate directory <-> JSON-lines file.

The direction follows SRC: a directory becomes a .jsonl file, a file becomes a directory.
`--base64` writes each record's values as the base64 of their bytes instead of a list of numbers
(docs/memstate.md): about half the size, and read many times faster.
Exit codes: 0 converted completely, 1 converted up to a bad line or a missing end line
(everything before it is kept, the manifest says where), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import InputError, printable
from harness.store.jsonl import convert_jsonl, write_jsonl
from harness.store.memstate import Memstate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="memstate directory or .jsonl file")
    p.add_argument("target", help="the .jsonl file or memstate directory to write")
    p.add_argument("--base64", action="store_true", help="directory to .jsonl: write the values as base64 of their "
                                                         "little-endian bytes, not as numbers")
    args = p.parse_args(argv)
    src, dst = Path(args.source), Path(args.target)
    try:
        if src.is_dir():
            if dst.exists():
                raise InputError(f"{dst}: already exists; refusing to overwrite")
            ms = Memstate(src)
            write_jsonl(ms, dst, binary=args.base64)
            print(f"{dst}: written from {src}")
            if ms.damaged:
                print(f"error: {src} is damaged: {printable(ms.damaged)}; {dst} holds what came before it", file=sys.stderr)
                return 2
            return 0
        if not src.is_file():
            raise InputError(f"{src}: no such file or directory")
        m = convert_jsonl(src, dst)
    except InputError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk: nothing half-written is left under the target's name
        print(f"error: {e.filename or dst}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{dst}: {len(m.units)} units, {m.status}")
    if m.status != "complete":
        print(f"stopped: {printable((m.manifest.get('stopped') or {}).get('error'))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

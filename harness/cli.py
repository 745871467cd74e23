"""`memstate`: one console command for the tools, a subcommand each. `python -m harness.compare` and the
other modules keep working; this only dispatches to them."""

from __future__ import annotations

import importlib
import sys

from harness import __version__

COMMANDS = {  # subcommand -> the module whose main(argv) it runs
    "compare": "harness.compare.cli",
    "train": "harness.train",
    "convert": "harness.convert",
    "evaluate": "harness.evaluate",
    "golden": "harness.golden",
}
USAGE = """usage: memstate COMMAND [ARGS] | memstate --version

Find where two implementations of the same network part ways.

  memstate compare impls/numpy impls/jax             # run both on the bundled MNIST subset, compare
  memstate compare impls/numpy my-port --steps 20    # your port against a reference, 20 steps
  memstate compare runs/X/a-numpy runs/X/b-torch     # two memstates already written

commands: compare, train, convert, evaluate, golden (memstate COMMAND --help for each one's options)"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"memstate {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""Train every preset in every implementation on full MNIST and print the README's table.

    python benchmarks/bench_presets.py --data DIR [--presets born,gon] [--impls numpy,jax] [--json FILE]
        [--limit IMPL:PRESET:EPOCHS ...]
    python benchmarks/bench_presets.py --table FILE     # the table of a saved run again

Each cell is `python -m harness.train IMPL --preset NAME` (the preset's own length): test accuracy
on the 10,000 test images and seconds per epoch, with the time as a ratio against numpy's on the
same preset in the same run. `--limit` shortens one cell (pure_python cannot finish every preset in
reasonable time): its accuracy is then after that many epochs and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.spec.data import load_mnist
from harness.run.job import train_count
from harness.spec.presets import PRESETS
from harness.train import train

DEFAULT_LIMITS = ["pure_python:goml:1", "pure_python:born:0.05", "pure_python:gon:0.05",
                  "pure_python:mnist-from-scratch:0.01", "pure_python:than-dev:0", "cpp:than-dev:3",
                  "pure_python:born-deep:0.02", "pure_python:born-dropout:0.02"]


def published_text(published: tuple[float, float] | None) -> str:
    """The accuracy a preset's source reports: "-", "about 92%", "97.0-97.5%" or "> 90%"."""
    if published is None:
        return "-"
    low, high = published
    if high >= 100:
        return f"> {low:.0f}%"
    return f"about {low:.0f}%" if low == high else f"{low:.1f}-{high:.1f}%"


def seconds_text(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds >= 100 else f"{seconds:.3g} s"


def ratio_text(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.2g}x"


def table(cells: dict[tuple[str, str], dict], presets: list[str], impls: list[str]) -> str:
    """The README's table: one row per preset, one cell per implementation."""
    lines = ["| preset | published | " + " | ".join(impls) + " |",
             "| --- | --- | " + " | ".join("---" for _ in impls) + " |"]
    for name in presets:
        base = cells.get((name, "numpy"))
        row = []
        for impl in impls:
            c = cells.get((name, impl))
            if c is None:
                row.append("not run")
                continue
            if c["status"] != "complete":
                row.append(f"{c['status']}: {c['error']}")
                continue
            ratio = f" ({ratio_text(c['seconds_per_epoch'] / base['seconds_per_epoch'])} numpy)" \
                if base and impl != "numpy" else ""
            acc = f"{c['test_accuracy']:.2f}%" + (f" after {c['epochs']:g} epoch{'s' * (c['epochs'] != 1)}"
                                                  if c["shortened"] else "")
            row.append(f"{acc}, {seconds_text(c['seconds_per_epoch'])}/epoch{ratio}")
        lines.append(f"| {name} | {published_text(PRESETS[name].published)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="full MNIST (the four IDX files)")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--impls", default="numpy,jax,torch,cpp,pure_python")
    p.add_argument("--limit", action="append", default=None, metavar="IMPL:PRESET:EPOCHS",
                   help=f"shorten a cell; 0 skips it (default {' '.join(DEFAULT_LIMITS)})")
    p.add_argument("--json", help="write every cell as JSON")
    p.add_argument("--table", metavar="JSON", help="print the table of a run saved with --json; train nothing")
    args = p.parse_args()
    presets, impls = args.presets.split(","), args.impls.split(",")
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table({(c["preset"], c["impl"]): c for c in saved}, presets, impls))
        return 0
    if not args.data:
        p.error("--data is required to train")
    mnist = load_mnist(args.data)
    limits = {tuple(x.split(":")[:2]): float(x.split(":")[2]) for x in (args.limit or DEFAULT_LIMITS)}
    cells: dict[tuple[str, str], dict] = {}
    for name in presets:
        preset = PRESETS[name]
        for impl in impls:
            config = preset.config()
            epoch_steps = max(1, train_count(config, mnist) // config.batch_size)
            steps = preset.train_steps or preset.epochs * epoch_steps
            if (impl, name) in limits:
                if limits[impl, name] == 0:
                    continue
                steps = max(1, round(limits[impl, name] * epoch_steps))
            with tempfile.TemporaryDirectory() as tmp:
                res = train(ROOT / "impls" / impl, config.replace(steps=steps), mnist, Path(tmp), preset=name,
                            progress=False)
            cells[name, impl] = {**res.to_dict(), "shortened": (impl, name) in limits}
            print(f"{name:20s} {impl:12s} {res.status:9s} {res.epochs:7.3g} epochs {res.seconds_per_epoch:9.2f} s/epoch "
                  f"acc {res.test_accuracy}", file=sys.stderr, flush=True)
            if args.json:  # after every cell, so that an interrupted run keeps what it measured
                Path(args.json).write_text(json.dumps([{"preset": k[0], "impl": k[1], **v} for k, v in cells.items()],
                                                      indent=1))
    print("\n" + table(cells, presets, impls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train every preset in every implementation on full MNIST and print the README's table.

    python benchmarks/bench_presets.py --data DIR [--presets born,gon] [--impls numpy,jax] [--json FILE]
        [--limit IMPL:PRESET:EPOCHS ...]

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

from harness.data import load_mnist
from harness.job import train_count
from harness.presets import PRESETS
from harness.train import train

DEFAULT_LIMITS = ["pure_python:goml:1", "pure_python:born:0.05", "pure_python:gon:0.05",
                  "pure_python:mnist-from-scratch:0.01", "pure_python:than-dev:0", "cpp:than-dev:3"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="full MNIST (the four IDX files)")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--impls", default="numpy,jax,torch,cpp,pure_python")
    p.add_argument("--limit", action="append", default=None, metavar="IMPL:PRESET:EPOCHS",
                   help=f"shorten a cell; 0 skips it (default {' '.join(DEFAULT_LIMITS)})")
    p.add_argument("--json", help="write every cell as JSON")
    args = p.parse_args()
    mnist = load_mnist(args.data)
    limits = {tuple(x.split(":")[:2]): float(x.split(":")[2]) for x in (args.limit or DEFAULT_LIMITS)}
    impls = args.impls.split(",")
    cells: dict[tuple[str, str], dict] = {}
    for name in args.presets.split(","):
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
    print("\n| preset | published | " + " | ".join(impls) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in impls) + " |")
    for name in args.presets.split(","):
        preset = PRESETS[name]
        published = f"{preset.published[0]:g}-{preset.published[1]:g}%" if preset.published else "-"
        if preset.published and preset.published[0] == preset.published[1]:
            published = f"{preset.published[0]:g}%"
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
            ratio = f" ({c['seconds_per_epoch'] / base['seconds_per_epoch']:.2g}x numpy)" if base and impl != "numpy" \
                else ""
            acc = f"{c['test_accuracy']:.2f}%" + (f" after {c['epochs']:g} epochs" if c["shortened"] else "")
            row.append(f"{acc}, {c['seconds_per_epoch']:.3g} s/epoch{ratio}")
        print(f"| {name} | {published} | " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps([{"preset": k[0], "impl": k[1], **v} for k, v in cells.items()], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

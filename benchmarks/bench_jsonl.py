"""Reading a port's JSON lines: values as numbers (`data`) against their bytes in base64 (`base64`).

    python benchmarks/bench_jsonl.py [--steps 20] [--repeat 3]

One real memstate (impls/numpy, the default config: H=128, batch 64) is written both ways: `data` as
a port writes it, each float as the shortest text that reads back as the same value (std::to_chars,
Go's FormatFloat with -1), and `base64` as write_jsonl(binary=True) writes it. The baseline is the
`data` file's conversion (convert_jsonl, the harness's reader) in the same run; printed: each file's
size, the best conversion time of --repeat, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.run.runner import run_config
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.store.jsonl import convert_jsonl, write_jsonl
from harness.store.memstate import Memstate

SPECIAL = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def shortest(array: np.ndarray) -> str:
    """The values as a JSON list, floats in the shortest digits that read back (numpy's astype(str))."""
    text = np.ascontiguousarray(array).ravel().astype(str)
    return "[" + ",".join(SPECIAL.get(t, t) for t in text) + "]"


def write_text(ms: Memstate, target: Path) -> None:
    with open(target, "w") as f:
        f.write(json.dumps({"memstate": "jsonl/1", "implementation": ms.name, "config": ms.manifest["config"]}) + "\n")
        for step in ms.units:
            for name, array in ms.unit(step).items():
                head = json.dumps({"step": step, "name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
                f.write(head[:-1] + ', "data": ' + shortest(array) + "}\n")
        f.write('{"end": "complete"}\n')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="memstate-bench-") as tmp:
        work = Path(tmp)
        run = run_config(ROOT / "impls" / "numpy", Config(steps=args.steps), work / "run", load_mnist())
        assert run, run.error
        ms = Memstate(run.memstate)
        values = sum(a.size for step in ms.units for a in ms.unit(step).values())
        write_text(ms, work / "data.jsonl")
        write_jsonl(ms, work / "base64.jsonl", binary=True)
        print(f"numpy, default config, {args.steps} steps: {values / 1e6:.1f}M values")
        seconds = {}
        for form in ("data", "base64"):
            source = work / f"{form}.jsonl"
            best = float("inf")
            for i in range(args.repeat):
                start = time.perf_counter()
                back = convert_jsonl(source, work / f"{form}-{i}")
                best = min(best, time.perf_counter() - start)
                assert back.status == "complete", back.manifest.get("stopped")
            seconds[form] = best
            print(f"  {form:7s} {source.stat().st_size / 1e6:6.1f} MB  converted in {best:.2f} s "
                  f"({values / best / 1e6:.1f}M values/s)")
        print(f"  base64 reads in {seconds['base64'] / seconds['data']:.3f}x the time of data "
              f"({seconds['data'] / seconds['base64']:.1f} times faster)")


if __name__ == "__main__":
    main()

"""Time a short run of each Python implementation started cold and warm (harness/run/warm.py).

    python benchmarks/bench_starts.py [--repeat 5] [--steps 5]

The baseline is the cold start in the same run: `run_implementation` with MEMSTATE_WARM=0, a fresh
`python -m harness.run.child` that imports the entry file (numpy, torch, JAX) every time. Warm: the
same runs from a warm process, once its first (cold) run and the warm process's own start are done;
that start is printed too, as what the first warm run costs. Each figure is the median wall time of
`--repeat` runs of a 784-128-10 network over `--steps` steps of batch 64, as the runner reports it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.run.job import prepare_job
from harness.run.runner import load_implementation, run_implementation
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.spec.params import initial_params


def seconds(impl: str, job, work: Path, count: int, tag: str) -> list[tuple[float, bool]]:
    """(wall seconds, warm?) of `count` runs of `impl` on `job`."""
    code = load_implementation(ROOT / "impls" / impl)
    out = []
    for i in range(count):
        result = run_implementation(code, job, work / f"{impl}-{tag}{i}")
        if not result:
            raise SystemExit(f"{impl}: {result.error}")
        out.append((result.seconds, result.warm))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=["numpy", "pure_python", "jax", "torch"])
    args = parser.parse_args()
    config = Config(steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        job = prepare_job(work / "job", config, initial_params(config), load_mnist())
        print(f"{args.steps} steps of 784-128-10, batch 64; median of {args.repeat} runs each (wall seconds)")
        print(f"{'implementation':<16}{'cold (baseline)':>18}{'first warm':>12}{'warm':>10}{'warm/cold':>11}")
        for impl in args.impls:
            os.environ["MEMSTATE_WARM"] = "0"
            cold = statistics.median(s for s, _ in seconds(impl, job, work, args.repeat, "cold"))
            del os.environ["MEMSTATE_WARM"]
            runs = seconds(impl, job, work, args.repeat + 2, "warm")
            assert [w for _, w in runs] == [False] + [True] * (args.repeat + 1), runs
            warm = statistics.median(s for s, _ in runs[2:])
            print(f"{impl:<16}{cold:>17.3f}s{runs[1][0]:>11.3f}s{warm:>9.3f}s{warm / cold:>10.3f}x")


if __name__ == "__main__":
    main()

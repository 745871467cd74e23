"""A whole epoch of born and gon on full MNIST, every record of every step, every pair compared.

    python benchmarks/bench_epoch.py --data DIR [--presets born,gon] [--impls numpy,jax,torch,cpp]
        [--steps N] [--pairs all|numpy]

Each implementation runs one epoch (937 steps of 64) with full capture; then each pair is compared
with the noise model. The claim checked: agree or drift, never an origin, over the whole epoch.
Printed per pair: verdict, origins, diverging records, the first divergence, the largest residual
(how much of an op's own rounding its inputs leave unexplained; an origin needs > 1), and the
comparison's bytes per second against numpy.allclose over the same records (measured in this run), and
its time against two floors (benchmarks/floors.py): one read of both sides, and that read plus each
side's sums recomputed once in float64.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from floors import read_seconds, sums_seconds

from harness.compare.stream import compare_memstates
from harness.spec.data import load_mnist
from harness.run.job import prepare_job, train_count
from harness.store.memstate import Memstate
from harness.spec.params import initial_params
from harness.spec.presets import get_preset
from harness.run.runner import load_implementation, run_implementation


def allclose_seconds(a: Memstate, b: Memstate) -> tuple[float, int]:
    """numpy.allclose over every record both sides hold, and the bytes of one side it read."""
    start, size = time.perf_counter(), 0
    for unit in a.units:
        for name in a.names(unit):
            x, y = a.get(unit, name), b.get(unit, name)
            if y is not None and x.shape == y.shape:
                np.allclose(x, y, rtol=1e-4, atol=1e-5)
                size += x.nbytes
        a.release(unit)
        b.release(unit)
    return time.perf_counter() - start, size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--presets", default="born,gon")
    p.add_argument("--impls", default="numpy,jax,torch,cpp")
    p.add_argument("--steps", type=int, help="default: one epoch")
    p.add_argument("--pairs", choices=("all", "numpy"), default="all", help="every pair, or each against numpy")
    args = p.parse_args()
    mnist = load_mnist(args.data)
    impls = args.impls.split(",")
    failures = 0
    for name in args.presets.split(","):
        config = get_preset(name).config()
        config = config.replace(steps=args.steps or train_count(config, mnist) // config.batch_size)
        work = Path(tempfile.mkdtemp(prefix=f"bench-epoch-{name}-"))
        try:
            job = prepare_job(work / "job", config, initial_params(config), mnist)
            runs = {}
            for impl in impls:
                t = time.perf_counter()
                res = run_implementation(load_implementation(ROOT / "impls" / impl), job, work / impl, timeout=7200)
                runs[impl] = Memstate(res.memstate)
                print(f"{name}: {impl} {res.status} in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
            pairs = itertools.combinations(impls, 2) if args.pairs == "all" else [("numpy", i) for i in impls[1:]]
            for x, y in pairs:
                t = time.perf_counter()
                c = compare_memstates(Memstate(runs[x].dir), Memstate(runs[y].dir))
                seconds = time.perf_counter() - t
                base, size = allclose_seconds(Memstate(runs[x].dir), Memstate(runs[y].dir))
                read = read_seconds(Memstate(runs[x].dir), Memstate(runs[y].dir))
                sums = sums_seconds(Memstate(runs[x].dir), Memstate(runs[y].dir))
                resid = max((r.explained_ratio for r in c.divergences), default=0.0)
                first = c.first.where if c.first else "-"
                ok = c.verdict in ("agree", "drift") and not c.origins
                failures += not ok
                print(f"{name} {config.steps} steps {x} vs {y}: {c.verdict}, {len(c.origins)} origins, "
                      f"{len(c.divergences)} diverging records, first {first}, largest residual {resid:.3g}; "
                      f"compared {size / seconds / 1e6:.0f} MB/s = {base / seconds:.3f}x numpy.allclose "
                      f"({size / 1e9:.2f} GB a side) {'OK' if ok else 'ORIGIN'}; {seconds:.1f} s = "
                      f"{seconds / read:.1f}x one read of both sides, {seconds / (read + sums):.2f}x the read and "
                      f"each side's sums once in float64 (benchmarks/floors.py)", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

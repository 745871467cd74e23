"""How tight and how sensitive the noise model is, measured on a real pair (numpy against JAX).

Prints, for the default config on the bundled subset:
1. at the matmuls, the noise bound against numpy.allclose's defaults (rtol 1e-5, atol 1e-8):
   their ratio per element, and how many elements of this correct pair allclose flags;
2. per record, the smallest relative change of one op's value (B's record at step 1 scaled by
   1 + eps, nothing else touched) that is still found as the first origin at that record;
3. the comparator's time, noise mode against the fixed mode (the baseline). Both recompute every
   op from its inputs for the origin test; the difference is the noise bounds themselves.

    python benchmarks/bench_noise.py [--steps-time 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.compare.stream import choose_tolerance, compare_memstates, step_bounds  # noqa: E402
from harness.spec.config import Config  # noqa: E402
from harness.spec.data import load_mnist  # noqa: E402
from harness.evaluate import IMPLS, Evaluator  # noqa: E402
from harness.store.memstate import Memstate  # noqa: E402
from harness.store.writer import MemstateWriter  # noqa: E402

EPSILONS = [10.0 ** (-k / 2) for k in range(2, 20)]  # 1e-1 ... 3.2e-10


def scaled_copy(base: Memstate, path: Path, step: int, name: str, eps: float) -> Memstate:
    """`base` with one record multiplied by 1 + eps (in its own dtype)."""
    manifest = {k: v for k, v in base.manifest.items() if k not in ("status", "units", "stopped")}
    w = MemstateWriter(path, manifest)
    for s in base.units:
        for n, arr in base.unit(s).items():
            a = np.array(arr)
            if (s, n) == (step, name):
                a = (a.astype(np.float64) * (1 + eps)).astype(a.dtype)
            w(s, n, a)
    w.close()
    return Memstate(path)


def tightness(a: Memstate, b: Memstate) -> None:
    print("1. noise bound against numpy.allclose defaults, numpy vs jax (allclose allowance / noise bound)")
    print(f"   {'step':>4} {'record':22} {'median':>8} {'p10':>8} {'min':>9} {'bound/|B| med':>13} "
          f"{'worst |A-B|/bound':>17} {'allclose flags':>14}")
    for step in (0, 1):
        bounds = step_bounds(a, b, step)
        for name in ("hidden/matmul", "output/matmul", "hidden/grad_weight"):
            x, y = (np.asarray(m.get(step, name), dtype=np.float64) for m in (a, b))
            allowed = 1e-8 + 1e-5 * np.abs(y)
            ratio = allowed / bounds[name]
            print(f"   {step:>4} {name:22} {np.median(ratio):8.3g} {np.percentile(ratio, 10):8.3g} {ratio.min():9.3g} "
                  f"{np.median(bounds[name] / np.maximum(np.abs(y), 1e-30)):13.3g} "
                  f"{np.max(np.abs(x - y) / bounds[name]):17.3g} {int((np.abs(x - y) > allowed).sum()):>8d} of {x.size}")


def sensitivity(a: Memstate, b: Memstate, root: Path) -> None:
    print("\n2. smallest relative change of one record (B's, step 1) found as the first origin there")
    print(f"   {'record':28} {'smallest eps found':>18}  (grid: 10^(-k/2))")
    for name in b.unit(1):
        if np.asarray(b.get(1, name)).dtype.kind != "f":
            continue
        found = None
        for i, eps in enumerate(EPSILONS):
            c = compare_memstates(a, scaled_copy(b, root / f"s-{name.replace('/', '_')}-{i}", 1, name, eps))
            first = c.origins[0] if c.origins else None
            if first is None or (first.step, first.name) != (1, name):
                break
            found = eps
        print(f"   {name:28} {found if found is None else f'{found:.2g}':>18}")


def speed(ev: Evaluator, steps: int) -> None:
    config = Config(steps=steps)
    a, b = (ev.run(IMPLS / name, config, ev.root / f"{name}-{steps}") for name in ("numpy", "jax"))
    times = {}
    for mode in ("fixed", "noise"):
        tol = choose_tolerance(a, b, mode=mode)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            compare_memstates(a, b, tol)
            best = min(best, time.perf_counter() - t)
        times[mode] = best
    print(f"\n3. comparing {steps} steps of numpy vs jax (best of 3): fixed mode (baseline) {times['fixed']:.2f} s, "
          f"noise mode {times['noise']:.2f} s = {times['noise'] / times['fixed']:.2f}x (the noise bounds); "
          f"{times['noise'] / steps * 1000:.0f} ms per step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps-time", type=int, default=20, help="steps for the timing (default 20)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ev = Evaluator(Path(tmp), load_mnist())
        config = Config(steps=2)
        a, b = (ev.run(IMPLS / name, config, ev.root / f"{name}-2") for name in ("numpy", "jax"))
        tightness(a, b)
        sensitivity(a, b, ev.root)
        speed(ev, args.steps_time)


if __name__ == "__main__":
    main()

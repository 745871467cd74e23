"""The reduced-precision matrix: numpy in float32 against numpy (or --impl) asked for each reduced precision
(TF32, bfloat16 or float16 matmuls; bfloat16 or float16 storage, and sums accumulated so; bfloat16 or
float16 autocast) on the default config and on two presets.
Prints, per pair, the verdict, the origins and suspects, how many records diverge, and the headroom:
the largest residual of any record (its deviation from its own op over that op's random rounding; 1
would make it a suspect). docs/comparing.md, "Reduced precision", quotes one run.

    python benchmarks/bench_precision.py [--steps 200] [--preset-steps 20] [--modes tf32 ...] [--impl torch]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.compare.stated import job_with_precision  # noqa: E402
from harness.compare.stream import compare_memstates  # noqa: E402
from harness.run.job import prepare_job, resolve  # noqa: E402
from harness.run.runner import load_implementation, run_implementation  # noqa: E402
from harness.spec.config import Config  # noqa: E402
from harness.spec.data import load_mnist  # noqa: E402
from harness.spec.params import initial_params  # noqa: E402
from harness.spec.precision import MODES  # noqa: E402
from harness.spec.presets import get_preset  # noqa: E402
from harness.store.memstate import Memstate  # noqa: E402

NUMPY = Path(__file__).resolve().parents[1] / "impls" / "numpy"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="steps of the default config")
    p.add_argument("--preset-steps", type=int, default=20, help="steps of born and mnist-from-scratch")
    p.add_argument("--modes", nargs="*", default=[m for m in MODES if m != "float32"], choices=MODES)
    p.add_argument("--impl", default="numpy", help="the side run in each precision (impls/NAME; numpy emulates "
                   "every mode, torch runs bfloat16-autocast and float16-autocast on the CPU, jax the -storage, "
                   "-compute and -autocast modes, cpp bfloat16-storage; each refuses the rest)")
    args = p.parse_args()
    mnist = load_mnist(None)
    numpy = load_implementation(NUMPY)
    reduced = load_implementation(NUMPY.parent / args.impl)
    runs = [("default", Config(steps=args.steps)),
            ("born", get_preset("born").config(steps=args.preset_steps)),
            ("mnist-from-scratch", get_preset("mnist-from-scratch").config(steps=args.preset_steps))]
    print(f"{'run':28} {'mode':18} {'verdict':9} {'origins':>7} {'suspects':>8} {'diverging':>14} {'headroom':>8}")
    with tempfile.TemporaryDirectory(prefix="memstate-precision-") as tmp:
        root = Path(tmp)
        for name, cfg in runs:
            job = prepare_job(root / f"job-{name}", cfg, initial_params(resolve(cfg, mnist)), mnist)
            a = Memstate(run_implementation(numpy, job, root / f"a-{name}").memstate)
            for mode in args.modes:
                start = time.perf_counter()
                own = job_with_precision(job, root / f"job-{name}-{mode}", mode)
                b = Memstate(run_implementation(reduced, own, root / f"b-{name}-{mode}").memstate)
                c = compare_memstates(a, b)
                resid = max((r.explained_ratio for r in c.records), default=0.0)
                label = f"{name}, {cfg.steps} steps"
                print(f"{label:28} {mode:18} {c.verdict:9} {len(c.origins):7d} {len(c.suspects):8d} "
                      f"{len(c.divergences):6d} of {len(c.records):5d} {resid:8.3g}  ({time.perf_counter() - start:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()

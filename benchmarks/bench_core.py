"""Time the default comparison and each implementation's training step, with and without recording.

    python benchmarks/bench_core.py [--repeat 3] [--steps 20]

Per implementation, the baseline is its own bare step in the same run: run() with a recorder
that drops every record. "recorded" is the same run() writing a real memstate. Step time is
the median gap between the first records of consecutive steps, step 0 (JIT compile) excluded.
The end-to-end times are `python -m harness.compare impls/numpy impls/jax` as the README runs it,
and the same against the C++ port (a subprocess writing JSON lines).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.compare.stream import compare_memstates  # noqa: E402
from harness.spec.config import Config  # noqa: E402
from harness.spec.data import load_mnist  # noqa: E402
from harness.run.job import prepare_job  # noqa: E402
from harness.store.memstate import Memstate  # noqa: E402
from harness.store.writer import MemstateWriter  # noqa: E402
from harness.spec.params import initial_params  # noqa: E402


class StepClock:
    """Wraps a recorder; notes the time each step's first record arrives."""

    def __init__(self, inner=None):
        self.inner, self.starts, self.step = inner, [], None

    def describe(self, device=None, **versions):
        if self.inner:
            self.inner.describe(device, **versions)

    def __call__(self, step, name, value, dtype=None):
        if step != self.step and step != "load":
            self.starts.append(time.perf_counter())
            self.step = step
        if self.inner:
            self.inner(step, name, value, dtype)

    def step_seconds(self) -> float:
        gaps = [b - a for a, b in zip(self.starts, self.starts[1:])]
        return statistics.median(gaps[1:] if len(gaps) > 2 else gaps)


def load_run(impl: str):
    spec = importlib.util.spec_from_file_location(f"bench_{impl}", ROOT / "impls" / impl / "mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run


def diagnosis_cost(tmp: Path, repeat: int) -> None:
    """Comparing with and without diagnosing the origins, on pairs that diverge (every diagnosed record is
    a first origin) and on the default pair (no origin: nothing to diagnose); baseline: without."""
    print("diagnosis: compare_memstates with diagnosis against without, default config, 10 steps; best of "
          f"{repeat} each, alternated")
    from harness.catalogue import BUGS
    from harness.evaluate import plant
    unnamed = plant(next(c for c in BUGS if c.name == "matmul-32u"), tmp)  # no pattern fits: every test runs
    for other in ("examples/softmax_global_sum", "examples/softmax_global_sum --batch-size 256", str(unnamed), "jax"):
        impl, *extra = other.split()
        out = tmp / f"diag-{Path(impl).name}{len(extra)}"
        subprocess.run([sys.executable, "-m", "harness.compare", "impls/numpy", str(ROOT / "impls" / impl), *extra,
                        "--quiet", "--no-html", "--out", str(out)], cwd=ROOT, capture_output=True, check=False)
        a, b = (Memstate(d) for d in sorted(out.glob("[ab]-*")) if d.is_dir())
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeat):
            for on in (False, True):
                t = time.perf_counter()
                c = compare_memstates(Memstate(a.dir), Memstate(b.dir), diagnose=on)
                times[on].append(time.perf_counter() - t)
        n = sum(1 for r in c.records if r.diagnosis is not None)
        with_s, without_s = min(times[True]), min(times[False])
        print(f"  numpy vs {Path(impl).name} {' '.join(extra)}: {c.verdict}, {n} records diagnosed; {without_s:.3f} s without, {with_s:.3f} s "
              f"with: {with_s / without_s:.3f}x")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", choices=("diagnosis",), help="run only the diagnosis cost")
    args = p.parse_args()
    mnist = load_mnist()
    tmp = Path(tempfile.mkdtemp(prefix="memstate-bench-"))
    diagnosis_cost(tmp, args.repeat)
    if args.only:
        return

    for other in ("jax", "cpp"):
        print(f"end to end: python -m harness.compare impls/numpy impls/{other} (default config, {Config().steps} steps)")
        walls = []
        for i in range(args.repeat):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "harness.compare", "impls/numpy", f"impls/{other}", "--quiet",
                                "--out", str(tmp / f"e2e-{other}{i}")], cwd=ROOT, capture_output=True, text=True,
                               check=False)
            walls.append(time.perf_counter() - t)
            assert r.returncode == 0, r.stdout + r.stderr
        a, b = Memstate(tmp / f"e2e-{other}0" / "a-numpy"), Memstate(tmp / f"e2e-{other}0" / f"b-{other}")
        t = time.perf_counter()
        compare_memstates(a, b)
        compare_s = time.perf_counter() - t
        side = json.loads((tmp / f"e2e-{other}0" / f"b-{other}" / "manifest.json").read_text())["wall_seconds"]
        print(f"  wall: median {statistics.median(walls):.2f} s over {args.repeat} runs (min {min(walls):.2f}, "
              f"max {max(walls):.2f}, the first includes any build); {other} process {side:.2f} s; "
              f"comparing the memstates {compare_s:.3f} s")
    print("\nstep time at the default config (H=128, batch 64, float32); baseline: the same impl's bare step")
    print(f"  {'impl':12s} {'steps':>5s} {'bare ms':>9s} {'recorded ms':>12s} {'ratio':>6s} {'MB/step':>8s}")
    for impl in ("numpy", "jax", "torch", "pure_python"):
        steps = args.steps if impl != "pure_python" else 6
        config = Config(steps=steps)
        job = prepare_job(tmp / f"job-{impl}", config, initial_params(config), mnist)
        run = load_run(impl)
        bare, recorded, size = [], [], 0.0
        for i in range(args.repeat):
            clock = StepClock()
            run(str(job.dir), clock)
            bare.append(clock.step_seconds())
            out = tmp / f"{impl}-{i}"
            writer = MemstateWriter(out, {"config": config.to_dict()})
            clock = StepClock(writer)
            run(str(job.dir), clock)
            writer.close()
            recorded.append(clock.step_seconds())
            size = sum(f.stat().st_size for f in out.glob("step-*")) / steps / 1e6
        b_ms, r_ms = 1e3 * min(bare), 1e3 * min(recorded)
        print(f"  {impl:12s} {steps:5d} {b_ms:9.2f} {r_ms:12.2f} {r_ms / b_ms:6.2f} {size:8.2f}")
    print(f"\n(best of {args.repeat} runs per cell; memstates under {tmp})")


if __name__ == "__main__":
    main()

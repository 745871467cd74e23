"""What the HTML report costs: time to write it beyond the comparison itself, and its size.

For each pair, both sides are run once on the bundled subset; then, in a fresh Python process
per repetition (so that matplotlib's import is counted, as in `python -m harness.compare`), the
memstates are compared (the baseline) and the report is written. Prints the best of N of each,
the report's time over the comparison's, and the file's size. Targets (issue 4): the default
comparison's report for 20 steps under 2 s beyond the comparison and under 5 MB.

    python benchmarks/bench_report.py [--steps 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.spec.config import Config  # noqa: E402
from harness.spec.data import load_mnist  # noqa: E402
from harness.run.runner import run_config  # noqa: E402

PAIRS = [  # (label, A, B, config changes)
    ("default: numpy vs jax (drift)", "numpy", "jax", {}),
    ("softmax bug: numpy vs softmax_global_sum (origin)", "numpy", "examples/softmax_global_sum", {}),
    ("H=800: numpy vs jax", "numpy", "jax", {"hidden": 800}),
]

TIMED = """
import json, sys, time
from harness.compare.stream import compare_memstates
from harness.store.memstate import Memstate
t0 = time.perf_counter()
a, b = Memstate(sys.argv[1]), Memstate(sys.argv[2])
c = compare_memstates(a, b)
t1 = time.perf_counter()
from harness.report.html import write_report
write_report(c, a, b, sys.argv[3], "benchmark")
t2 = time.perf_counter()
print(json.dumps({"compare": t1 - t0, "report": t2 - t1, "verdict": c.verdict}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    mnist = load_mnist()
    print(f"report cost, best of {args.repeat} fresh processes each; baseline: compare_memstates on the same pair")
    print(f"{'pair':52} {'verdict':>8} {'compare s':>9} {'report s':>8} {'report/compare':>14} {'size MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (label, a, b, changes) in enumerate(PAIRS):
            cfg = Config(steps=args.steps).replace(**changes)
            dirs = []
            for side, impl in (("a", a), ("b", b)):
                result = run_config(ROOT / "impls" / impl, cfg, root / f"{i}{side}", mnist)
                assert result, result.error
                dirs.append(str(result.memstate))
            best: dict[str, float] = {}
            html = root / f"report{i}.html"
            for _ in range(args.repeat):
                out = subprocess.run([sys.executable, "-c", TIMED, *dirs, str(html)], capture_output=True, text=True,
                                     cwd=ROOT, check=True)
                t = json.loads(out.stdout.strip().splitlines()[-1])
                verdict = t.pop("verdict")
                best = {k: min(v, best.get(k, v)) for k, v in t.items()}
            size = html.stat().st_size / 1e6
            print(f"{label:52} {verdict:>8} {best['compare']:9.2f} {best['report']:8.2f} "
                  f"{best['report'] / best['compare']:14.2f} {size:8.2f}")


if __name__ == "__main__":
    main()

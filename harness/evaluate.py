"""`python -m harness.evaluate`: the scorecard. Plant each bug and benign variant of the catalogue,
compare it with the unedited reference, and print expected against found.

A bug scores when the verdict is diverged and the first origin is exactly the expected
(step, record); a benign variant scores when the verdict is agree or drift. Any origin before a
bug's own, or any origin at all in a benign variant, is a false origin. Exit 0 when every case scores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.catalogue import BENIGN, BUG, CATALOGUE, DIAGNOSES, Case
from harness.compare.comparison import Comparison
from harness.compare.heap import keep_freed_memory
from harness.compare.stated import job_with_precision, state_precision
from harness.compare.stream import compare_memstates
from harness.spec.config import Config, positive_integer
from harness.spec.data import Mnist, load_mnist
from harness.errors import InputError, printable
from harness.judge.noise import Z_SIGMA
from harness.judge.record import RecordDiff
from harness.run.job import Job, prepare_job, resolve
from harness.store.memstate import Memstate
from harness.spec.params import initial_params
from harness.spec.precision import MODES
from harness.spec.records import step_label
from harness.run.runner import load_implementation, run_implementation

IMPLS = Path(__file__).resolve().parents[1] / "impls"
BUG_STEPS, BENIGN_STEPS = 3, 200


@dataclass
class Score:
    """One case's outcome. Truthy when it scored."""

    case: str
    kind: str
    expected: str
    verdict: str
    found: str  # the first origin (or first divergence under drift), as "step N, record"
    role: str
    false_origins: int  # origins before a bug's own; any origin of a benign variant
    origins: int
    worst_explained: float  # the largest residual / the op's random rounding of any record (> 1: suspect or origin)
    seconds: float
    ok: bool
    error: str = ""
    diagnosis_expected: str = ""  # a bug's expected diagnosis kind (catalogue.DIAGNOSES)
    diagnosis: str = ""  # the kind found at the first origin, "none" for no known pattern
    diagnosis_detail: str = ""
    suspects: int = 0  # records beyond random rounding that some order of summation explains (not origins)
    to_origin: float = 0.0  # of the records beyond random rounding, the closest to an origin (`closeness`; > 1: one)
    at_expected: float = 0.0  # a bug's |A-B| at its own record over that record's noise bound (< 1: hidden by it)

    def __bool__(self) -> bool:
        return self.ok


def case_config(case: Case, steps: int | None = None) -> Config:
    """The case's config; its steps are `steps` when given, else the case's own, else the kind's default."""
    default = BUG_STEPS if case.kind == BUG else BENIGN_STEPS
    return Config(**{"steps": default, **case.config, **({"steps": steps} if steps else {})})


def plant(case: Case, root: Path) -> Path:
    """A copy of the case's implementation directory with its edits made."""
    source = IMPLS / case.impl
    target = root / f"planted-{case.name}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    code = target / "mlp.py"
    text = code.read_text()
    for old, new in case.edits:
        if text.count(old) != 1:
            raise InputError(f"catalogue case {case.name!r}: {source / 'mlp.py'} holds {old!r} "
                             f"{text.count(old)} times, expected once")
        text = text.replace(old, new)
    code.write_text(text)
    manifest = json.loads((target / "memstate-impl.json").read_text())
    manifest["name"] = case.name
    (target / "memstate-impl.json").write_text(json.dumps(manifest))
    return target


class Evaluator:
    """Runs cases under one root; reference runs are shared between cases with the same job."""

    def __init__(self, root: Path, mnist: Mnist, keep: bool = False, precision_b: str | None = None):
        self.root, self.mnist, self.keep, self.precision_b = root, mnist, keep, precision_b
        self.jobs: dict[tuple[Config, str | None], Job] = {}
        self.references: dict[tuple[str, Config], Memstate] = {}

    def job(self, config: Config, precision: str | None = None) -> Job:
        """The config's job; with `precision`, a copy that asks for that matmul precision."""
        if (config, None) not in self.jobs:
            params = initial_params(resolve(config, self.mnist))  # for the data's input width
            self.jobs[config, None] = prepare_job(self.root / f"job-{len(self.jobs)}", config, params, self.mnist)
        if (config, precision) not in self.jobs:
            self.jobs[config, precision] = job_with_precision(self.jobs[config, None], self.root /
                                                              f"job-{len(self.jobs)}-{precision}", str(precision))
        return self.jobs[config, precision]

    def run(self, impl_dir: Path, config: Config, out: Path, precision: str | None = None) -> Memstate:
        """Run one implementation directory on the config's job (asked for a matmul precision)."""
        result = run_implementation(load_implementation(impl_dir), self.job(config, precision), out)
        return Memstate(result.memstate)

    def reference(self, name: str, config: Config) -> Memstate:
        key = (name, config)
        if key not in self.references:
            out = self.root / f"reference-{len(self.references)}-{name}"
            self.references[key] = self.run(IMPLS / name, config, out)
        return self.references[key]

    def compare(self, case: Case, steps: int | None = None) -> Comparison:
        config = case_config(case, steps)
        ref = self.reference(case.reference, config)
        impl_dir = plant(case, self.root) if case.edits else IMPLS / case.impl
        out = self.root / f"case-{case.name}"
        if out.exists():
            shutil.rmtree(out)
        planted = self.run(impl_dir, config, out, self.precision_b)
        said = state_precision(planted, "B", self.precision_b) if self.precision_b else ""
        result = compare_memstates(ref, planted)
        result.notes[:0] = [said] if said else []
        if not self.keep:
            shutil.rmtree(out, ignore_errors=True)
        return result

    def score(self, case: Case, steps: int | None = None) -> Score:
        start = time.perf_counter()
        try:
            c = self.compare(case, steps)
        except InputError as e:
            return Score(case.name, case.kind, _expected(case), "error", "-", "", 0, 0, 0.0,
                         time.perf_counter() - start, False, str(e))
        return judge(case, c, time.perf_counter() - start)


def _where(step, name) -> str:
    return f"{step_label(step)}, {name}"


def _expected(case: Case) -> str:
    return f"diverged at {_where(*case.expect)}" if case.expect else "agree or drift"


def judge(case: Case, c: Comparison, seconds: float = 0.0) -> Score:
    """Score one comparison against what the case expects."""
    first = c.first
    found = _where(first.step, first.name) if first is not None else "-"
    origins = c.origins
    if case.kind == BUG:
        assert case.expect is not None
        keys = [(o.step, o.name) for o in origins]
        at = keys.index(case.expect) if case.expect in keys else len(keys)
        false = at  # every origin before the expected one
        ok = c.verdict == "diverged" and at == 0
    else:
        false = len(origins)
        ok = c.verdict in ("agree", "drift")
    if c.verdict == "unsupported":
        false = 0  # a refusal compares nothing: no origin, false or not (listed apart)
    worst = max((r.explained_ratio for r in c.records), default=0.0)
    d = first.diagnosis if first is not None and first.is_origin else None
    return Score(case.name, case.kind, _expected(case), c.verdict, found,
                 first.role or first.kind if first is not None else "", false, len(origins), worst, seconds, ok,
                 "" if ok or first is None else (first.note or ""), DIAGNOSES.get(case.name, "") if case.kind == BUG
                 else "", d.kind if d is not None else "", d.detail if d is not None else "", len(c.suspects),
                 max((closeness(r) for r in c.records if r.n_unexplained), default=0.0),
                 next((r.worst_ratio for r in c.records if (r.step, r.name) == case.expect), 0.0))


def closeness(r: RecordDiff) -> float:
    """How close a record beyond random rounding came to an origin, as a fraction of the threshold: the
    larger of its residual over the worst case of any order and its lean over Z_SIGMA (judge/origin.py).
    A record within random rounding is no candidate at all."""
    return max(r.worst_case_ratio, r.systematic / Z_SIGMA)


def precision_lines(scores: list[Score], mode: str) -> list[str]:
    """Under B's reduced matmul precision: which bugs are still found, which its rounding hides (listed, with
    the residual at their own record), and which implementations refused to run in it."""
    bugs = [s for s in scores if s.kind == BUG]
    refused = [s.case for s in scores if s.verdict == "unsupported"]
    hidden = [s for s in bugs if not s and s.verdict != "unsupported"]
    run = [s for s in bugs if s.verdict != "unsupported"]
    lines = [f"B in {mode}: {sum(map(bool, run))}/{len(run)} bugs found at the exact step and record"]
    if hidden:
        lines.append(f"  not found at their own step and record, within {mode}'s rounding there (|A-B| over its "
                     f"noise bound; what was found instead): " + ", ".join(
                         f"{s.case} ({s.at_expected:.2g}x; {s.verdict} {s.found})" for s in hidden))
    if refused:
        lines.append(f"  not run: the implementation refused {mode} here (unsupported): " + ", ".join(refused))
    return lines


def format_table(scores: list[Score]) -> str:
    head = (f"{'case':34} {'kind':6} {'expected':44} {'verdict':9} {'found':38} {'false':>5} {'resid':>8} "
            f"{'suspect':>7} {'to-orig':>7} {'ok':>3}  {'diagnosis expected':18} {'found':14}")
    lines = [head, "-" * len(head)]
    for s in scores:
        closest = f"{s.to_origin:.2g}" if s.kind == BENIGN and s.suspects else "-"
        lines.append(f"{s.case:34} {s.kind:6} {s.expected:44} {s.verdict:9} {s.found:38} {s.false_origins:5d} "
                     f"{s.worst_explained:8.3g} {s.suspects:7d} {closest:>7} "
                     f"{'yes' if s.ok else 'NO':>3}  {s.diagnosis_expected or '-':18} "
                     f"{s.diagnosis or '-':14}" + (f"  ({s.error})" if s.error else ""))
    bugs = [s for s in scores if s.kind == BUG]
    good = [s for s in scores if s.kind == BENIGN]
    lines.append("")
    if bugs:
        lines.append(f"bugs: {sum(map(bool, bugs))}/{len(bugs)} found as the first origin at the exact step and record")
        right = sum(1 for s in bugs if s.diagnosis and s.diagnosis == s.diagnosis_expected)
        wrong = sum(1 for s in bugs if s.diagnosis not in ("", "none", s.diagnosis_expected))
        lines.append(f"diagnoses: {right}/{len(bugs)} of the kind expected ({100 * right / len(bugs):.0f}%), "
                     f"{wrong} of another kind ({100 * wrong / len(bugs):.0f}%), {len(bugs) - right - wrong} with no "
                     f"known pattern")
    if good:
        lines.append(f"benign variants: {sum(map(bool, good))}/{len(good)} agree or drift")
    lines.append(f"false origins: {sum(s.false_origins for s in scores)}")
    if good:
        lines.append(f"largest residual of a benign variant: {max(s.worst_explained for s in good):.3g} of the op's "
                     f"random rounding (resid column; beyond 1 a record is a suspect or an origin)")
        lines.append(f"suspects in {sum(1 for s in good if s.suspects)} of {len(good)} benign variants; the closest "
                     f"any came to an origin: {max(s.to_origin for s in good):.2g} of the threshold (to-orig column: a "
                     f"suspect's residual over its sum's worst case in any order, or its lean over {Z_SIGMA:g}; an "
                     f"origin needs > 1)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="*", metavar="CASE", help="case names (default: the whole catalogue)")
    p.add_argument("--kind", choices=(BUG, BENIGN), help="only bugs or only benign variants")
    p.add_argument("--steps", type=positive_integer,
                   help=f"steps per run (default {BUG_STEPS} for bugs, {BENIGN_STEPS} for benign variants, 100 for the "
                        f"orders of summation)")
    p.add_argument("--data", metavar="DIR", help="MNIST directory (default: the bundled subset)")
    p.add_argument("--out", metavar="DIR", help="keep every run under DIR (default: a temporary directory, removed)")
    p.add_argument("--json", metavar="FILE", help="write the scores as JSON")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    p.add_argument("--precision-b", choices=MODES, metavar="MODE", help=f"run every planted side in this precision "
                   f"({', '.join(MODES)}): which bugs its rounding hides")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keep_freed_memory()  # the comparisons' float64 temporaries reuse the heap (compare/heap.py)
    cases = [c for c in CATALOGUE if (not args.cases or c.name in args.cases) and (not args.kind or c.kind == args.kind)]
    unknown = set(args.cases) - {c.name for c in CATALOGUE}
    if unknown:
        print(f"error: no such case: {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            print(f"{c.name:34} {c.kind:6} {_expected(c):44} {c.what}")
        return 0
    try:
        mnist = load_mnist(args.data)
    except InputError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="memstate-evaluate-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        ev = Evaluator(root, mnist, keep=bool(args.out), precision_b=args.precision_b)
        scores = []
        for case in cases:
            scores.append(ev.score(case, args.steps))
            s = scores[-1]
            print(f"  {s.case}: {s.verdict} {s.found} ({s.seconds:.1f} s)", file=sys.stderr, flush=True)
    print(format_table(scores))
    if args.precision_b:
        print("\n".join(precision_lines(scores, args.precision_b)))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(s) for s in scores], indent=1))
    return 0 if all(scores) else 1


if __name__ == "__main__":
    sys.exit(main())

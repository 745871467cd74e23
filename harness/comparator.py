"""Line two memstates up record by record, say which records diverge, which of those are origins.

A record *diverges* when the two sides differ by more than its noise bound: by default the noise
model of `noise.py` (the op's own rounding, from the magnitudes the sides recorded), or in the fixed
mode |a - b| <= rtol * max(|a|, |b|) + atol * S with S the record's largest magnitude. Both are
judged at the lower precision of the two sides. Integer records (labels) must match exactly, and
the parameters as loaded bit for bit.

A diverging record is an *origin* when its difference is not explained by its inputs: each side's
record minus the op applied to that side's own recorded inputs must be within the op's own
rounding; otherwise the op itself was computed differently. Otherwise it is *propagated*. The
verdict is agree (nothing diverges), drift (divergences, no origin) or diverged (an origin).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from collections.abc import Iterator
from typing import Any

import numpy as np
from deepdiff import DeepDiff

from .capture import Capture
from .config import Config
from .memstate import Memstate, unit_file
from .metrics import element_metrics
from .noise import SOURCES, UNIT_ROUNDOFF, Z_SIGMA, Expected, Inputs, MissingInput, carried, expected
from .records import LOAD, PARAMETERS, Step, expected_order, step_label, step_records
from .vacuous import judge_vacuous, vacuous_mask

# (rtol, atol) per comparison dtype for the fixed mode; docs/comparing.md explains the choice.
FIXED_TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-11, 1e-12)}

AGREE, VALUES, LABELS, SHAPE, MISSING, STOPPED = "agree", "values", "labels", "shape", "missing", "stopped"
UNJUDGED = "unjudged"  # every element non-finite and equal on both sides: nothing a bound can judge
ORIGIN, PROPAGATED = "origin", "propagated"
AGREE_VERDICT, DRIFT, DIVERGED = "agree", "drift", "diverged"


@dataclass(frozen=True)
class Tolerance:
    """How a record is judged: `noise` (the noise model) or `fixed` (rtol, atol), at `dtype`."""

    dtype: str
    rtol: float = 0.0
    atol: float = 0.0
    mode: str = "noise"

    @property
    def u(self) -> float:
        return UNIT_ROUNDOFF[self.dtype]

    def describe(self) -> str:
        if self.mode == "noise":
            return (f"noise model at {self.dtype} (u={self.u:.3g}): |A-B| <= {Z_SIGMA:g}*sqrt(sA^2+sB^2) + fA + fB, "
                    f"from each op's own rounding (docs/comparing.md)")
        return (f"fixed, judged at {self.dtype}: |A-B| <= {self.rtol:g}*max(|A|,|B|) "
                f"+ {self.atol:g}*(largest |value| in the record)")


@dataclass
class RecordDiff:
    """How one record compares. Truthy when it agrees."""

    step: Step
    name: str
    kind: str = AGREE  # agree | values | labels | shape | missing | stopped | unjudged
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    size: int = 0
    n_over: int = 0  # elements beyond tolerance
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulp: float = 0.0  # in the comparison dtype
    worst_ratio: float = 0.0  # |A-B| / allowed at the worst element; > 1 diverges
    worst_index: tuple[int, ...] | None = None
    worst_a: float | None = None
    worst_b: float | None = None
    nan_a: int = 0
    nan_b: int = 0
    inf_a: int = 0
    inf_b: int = 0
    note: str = ""
    role: str = ""  # for a divergence: origin | propagated
    judged_by: str = ""  # noise | fixed | exact | graph (inputs not recorded: an origin when no input diverged)
    explained_ratio: float = 0.0  # worst |(B - f(B's inputs)) - (A - f(A's inputs))| / the op's own rounding
    n_unexplained: int = 0  # elements beyond the op's own rounding once the inputs' differences are taken out
    unexplained_index: tuple[int, ...] | None = None
    inconsistent: str = ""  # the side(s) whose value is not the op applied to their own inputs: A, B or A and B

    def __bool__(self) -> bool:
        return self.kind == AGREE

    @property
    def is_origin(self) -> bool:
        """Structural differences (labels, shape, missing, stopped) always are; values when classified so."""
        return self.kind not in (AGREE, UNJUDGED) and (self.kind != VALUES or self.role == ORIGIN)

    @property
    def where(self) -> str:
        return f"{step_label(self.step)}, {self.name}"


@dataclass
class Side:
    """What the report says about one side."""

    label: str
    path: str
    name: str
    status: str
    stop_summary: str
    manifest: dict[str, Any]


@dataclass
class Comparison:
    """The outcome of comparing two memstates.

    Truthy when it passes: agree, or drift unless `strict` (then only agree passes).
    """

    a: Side
    b: Side
    tolerance: Tolerance
    records: list[RecordDiff]
    notes: list[str] = field(default_factory=list)
    manifest_diff: list[tuple[str, Any, Any]] = field(default_factory=list)
    strict: bool = False

    @property
    def divergences(self) -> list[RecordDiff]:
        return [r for r in self.records if not r]

    @property
    def origins(self) -> list[RecordDiff]:
        """Every origin, in step order."""
        return [r for r in self.records if r.is_origin]

    @property
    def first(self) -> RecordDiff | None:
        """The answer: the first origin, else (drift) the first divergence, else None."""
        origins = self.origins  # a RecordDiff that diverges is falsy, so no `or` here
        if origins:
            return origins[0]
        return next(iter(self.divergences), None)

    @property
    def verdict(self) -> str:
        if self.origins:
            return DIVERGED
        return DRIFT if self.divergences else AGREE_VERDICT

    def __bool__(self) -> bool:
        return self.verdict == AGREE_VERDICT or (self.verdict == DRIFT and not self.strict)

    @property
    def exit_code(self) -> int:
        """0 passes, 1 fails, 2 when a side's memstate is damaged (compared only up to the damage)."""
        return 2 if "damaged" in (self.a.status, self.b.status) else 0 if self else 1

    def to_dict(self) -> dict[str, Any]:
        def rec(r: RecordDiff) -> dict[str, Any]:
            return {k: v for k, v in asdict(r).items()}
        return {
            "verdict": self.verdict,
            "passed": bool(self),
            "exit_code": self.exit_code,
            "strict": self.strict,
            "first": rec(self.first) if self.first is not None else None,
            "origins": [(r.step, r.name) for r in self.origins],
            "not_judged": [{"step": r.step, "name": r.name, "why": r.note} for r in self.records if r.kind == UNJUDGED],
            "judged_by_consistency": [(r.step, r.name) for r in self.records if r.judged_by == "consistency"],
            "tolerance": asdict(self.tolerance),
            "a": {k: v for k, v in asdict(self.a).items() if k != "manifest"},
            "b": {k: v for k, v in asdict(self.b).items() if k != "manifest"},
            "notes": self.notes,
            "manifest_diff": [{"path": p, "a": a, "b": b} for p, a, b in self.manifest_diff],
            "counts": {"records": len(self.records), "diverged": len(self.divergences),
                       "origins": len(self.origins)},
            "records": [rec(r) for r in self.records],
        }


def compare_values(diff: RecordDiff, a: np.ndarray, b: np.ndarray, tol: Tolerance,
                   allowed: np.ndarray | None = None) -> RecordDiff:
    """Fill the metrics of `diff` for two arrays of one shape; `allowed` (the noise bound per
    element) replaces the fixed tolerance when given."""
    diff.size = int(a.size)
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        over = np.asarray(a != b)
        diff.n_over = int(over.sum())
        if diff.n_over:
            i = np.unravel_index(int(np.argmax(over)), a.shape)
            diff.worst_index, diff.worst_a, diff.worst_b = tuple(int(k) for k in i), float(a[i]), float(b[i])
            diff.max_abs = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
            diff.worst_ratio = float("inf")
            diff.kind = LABELS if diff.name == "input/y" else VALUES
        return diff
    if diff.size == 0:
        return diff
    m = element_metrics(a, b, np.dtype(tol.dtype), allowed, tol.rtol, tol.atol)
    diff.nan_a, diff.nan_b, diff.inf_a, diff.inf_b = m.nan_a, m.nan_b, m.inf_a, m.inf_b
    diff.n_over, diff.max_abs, diff.max_rel, diff.max_ulp = m.n_over, m.max_abs, m.max_rel, m.max_ulp
    diff.worst_ratio = m.worst_ratio
    i = np.unravel_index(m.worst, a.shape)
    diff.worst_index = tuple(int(k) for k in i)
    diff.worst_a, diff.worst_b = float(np.asarray(a)[i]), float(np.asarray(b)[i])
    if diff.n_over:
        diff.kind = VALUES
        if diff.name == "input/x":
            diff.note = "the two sides did not see the same pixels (check x = byte/255 and the batch layout)"
    return diff


def printed_format(exact: np.ndarray, seen: np.ndarray, sample: int = 500) -> str | None:
    """The printf format (%.Ng or %.Nf) that turns `exact` into `seen` when printed and read
    back, if one does: the mark of a port that wrote its floats with too few digits."""
    if exact.dtype.kind != "f" or seen.dtype.kind != "f":
        return None
    differ = np.flatnonzero(np.asarray(exact != seen).ravel())
    if not differ.size:
        return None
    xs, ys = exact.ravel()[differ[:sample]], seen.ravel()[differ[:sample]]
    for digits in range(1, 17):
        for fmt in (f"%.{digits}g", f"%.{digits}f"):
            back = np.array([float(fmt % float(x)) for x in xs]).astype(seen.dtype)
            if np.array_equal(back, ys):
                return fmt
    return None


CLASSES = 10


def label_problem(y: np.ndarray) -> str:
    """Why `y` is not a vector of class indices 0..9 (integers), or "" when it is."""
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            what = "are whole numbers"
        else:
            what = "are not whole numbers"
        return f"labels are {y.dtype.name} ({what}); labels are integer class indices 0..{CLASSES - 1}"
    out = np.flatnonzero((y.ravel() < 0) | (y.ravel() >= CLASSES))
    if out.size:
        i = int(out[0])
        return f"labels hold {int(y.ravel()[i])} at element {i} ({out.size} outside 0..{CLASSES - 1} in all)"
    return ""


def compare_record(step: Step, name: str, a: np.ndarray, b: np.ndarray, tol: Tolerance,
                   labels: tuple[str, str] = ("A", "B"), allowed: np.ndarray | None = None) -> RecordDiff:
    """Compare one record: against `allowed` (its noise bound) when given, else the fixed tolerance."""
    diff = RecordDiff(step, name, shape_a=tuple(a.shape), shape_b=tuple(b.shape),
                      dtype_a=a.dtype.name, dtype_b=b.dtype.name)
    if name == "input/y":  # labels are class indices on both sides, or nothing downstream means anything
        bad = [f"{lab}'s {why}" for lab, v in zip(labels, (a, b)) if (why := label_problem(v))]
        if bad:
            diff.kind, diff.note, diff.size = LABELS, "; ".join(bad), int(max(a.size, b.size))
            return diff
    if a.shape == b.shape:
        diff.judged_by = "exact" if step == LOAD else ("noise" if allowed is not None else "fixed")
        compare_values(diff, a, b, tol, allowed)
        if a.dtype.kind != b.dtype.kind:  # e.g. a float record written as integers
            diff.note = f"{labels[0]} holds {a.dtype.name}, {labels[1]} {b.dtype.name}"
        if step == LOAD and diff.kind == VALUES:  # the loaded parameters: the same file on both sides
            for exact, seen, (x, y) in ((a, b, labels), (b, a, labels[::-1])):
                fmt = printed_format(np.asarray(exact), np.asarray(seen))
                if fmt:
                    diff.note = (f"{y}'s values are {x}'s printed as {fmt} and read back: {y} wrote its floats "
                                 f"with too few digits (print float32 with %.9g, float64 with %.17g)")
                    break
        return diff
    diff.kind = SHAPE
    if a.ndim == 2 and b.ndim == 2 and a.shape == b.shape[::-1]:
        again = compare_values(RecordDiff(step, name), a, b.T, tol)
        reshaped = compare_values(RecordDiff(step, name), a, b.reshape(a.shape), tol)
        if again or not reshaped:
            diff.note = (f"B holds the transposed layout {b.shape} of A's {a.shape}; "
                         + ("the values agree once transposed" if again else
                            f"even transposed, {again.n_over} of {again.size} elements differ"))
        else:  # the right values in row-major order, written with the wrong shape
            diff.note = (f"B holds A's values in A's order with the shape {b.shape} instead of {a.shape}: the same "
                         f"values reshaped (not transposed)")
    elif a.size == b.size:
        again = compare_values(RecordDiff(step, name), a, b.reshape(a.shape), tol)
        diff.note = (f"same {a.size} elements in shapes {a.shape} and {b.shape}; "
                     + ("the values agree once reshaped" if again else "the values differ even reshaped"))
    else:
        diff.note = f"shapes {a.shape} and {b.shape} hold {a.size} and {b.size} elements"
    return diff


def noise_bound(ma: Expected, mb: Expected, tol: Tolerance, harness: bool = False) -> np.ndarray:
    """Z * sqrt(sigma_A^2 + sigma_B^2) + fixed_A + fixed_B, plus the smallest normal number on each
    side (flushing subnormals to zero is an accepted way to compute). With `harness`, the harness's
    own float64 arithmetic counts as two more sides when the comparison itself is at float64."""
    k = 2.0 if harness and tol.dtype == "float64" else 1.0
    floor = 2 * float(np.finfo(np.dtype(tol.dtype)).tiny)
    return (Z_SIGMA * np.sqrt(k * (np.square(ma.sigma) + np.square(mb.sigma)))
            + k * (np.asarray(ma.fixed) + mb.fixed) + floor)


def _deviation(r: np.ndarray, value: np.ndarray) -> np.ndarray:
    """r - value, with equal non-finite values (NaN and NaN, equal infinities) counted as no deviation."""
    with np.errstate(invalid="ignore", over="ignore"):
        same = (r == value) | (np.isnan(r) & np.isnan(value))
        d = np.where(same, 0.0, r - value)
    return np.where(np.isnan(d), np.inf, d)


def explain(diff: RecordDiff, a: np.ndarray, b: np.ndarray, ma: Expected, mb: Expected, tol: Tolerance,
            labels: tuple[str, str] = ("A", "B")) -> None:
    """Origin or propagated, for a diverging record both of whose sides have a model: does
    (B - f(B's inputs)) - (A - f(A's inputs)) stay within the op's own rounding?"""
    assert ma.value is not None and mb.value is not None
    ea = _deviation(np.asarray(a, dtype=np.float64), ma.value)
    eb = _deviation(np.asarray(b, dtype=np.float64), mb.value)
    allowed = np.nan_to_num(noise_bound(ma, mb, tol, harness=True), nan=np.inf)  # NaN inputs explain anything
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        resid = np.abs(eb - ea)
        resid = np.where(np.isnan(resid), 0.0, resid)  # the same infinity on both sides
        ratio = np.where(resid == 0, 0.0, resid / np.broadcast_to(allowed, resid.shape))
    diff.judged_by = "noise" if tol.mode == "noise" else "fixed"
    diff.n_unexplained = int((ratio > 1).sum())
    worst = int(np.argmax(ratio)) if ratio.size else 0
    diff.explained_ratio = float(ratio.flat[worst]) if ratio.size else 0.0
    if diff.n_unexplained:
        diff.role = ORIGIN
        diff.unexplained_index = tuple(int(k) for k in np.unravel_index(worst, ratio.shape))
        diff.inconsistent = _inconsistent_sides(ea, eb, ma, mb, tol, labels)
    else:
        diff.role = PROPAGATED


def _inconsistent_sides(ea: np.ndarray, eb: np.ndarray, ma: Expected, mb: Expected, tol: Tolerance,
                        labels: tuple[str, str]) -> str:
    """The side(s) whose deviation from the op applied to their own inputs exceeds the op's own rounding."""
    k = 2.0 if tol.dtype == "float64" else 1.0
    off = []
    for label, e, m in ((labels[0], ea, ma), (labels[1], eb, mb)):
        own = np.nan_to_num(Z_SIGMA * np.sqrt(k) * np.asarray(m.sigma) + k * np.asarray(m.fixed)
                            + float(np.finfo(np.dtype(tol.dtype)).tiny), nan=np.inf)
        with np.errstate(invalid="ignore", divide="ignore"):
            if np.any(np.abs(e) > np.broadcast_to(own, e.shape)):
                off.append(label)
    return " and ".join(off)


def check_vacuous(diff: RecordDiff, a: np.ndarray, b: np.ndarray, allowed: np.ndarray,
                  models: tuple[Expected | None, Expected | None], tol: Tolerance,
                  labels: tuple[str, str] = ("A", "B")) -> str:
    """A record that passed its bound where the bound exceeds every value it holds: judge those elements
    by each side's consistency with its own inputs (an origin when one is off), else say they are not
    judged (`unjudged`). Returns a note for the comparison, "" when there is nothing to say."""
    mask, scale = vacuous_mask(a, b, allowed)
    if not mask.any():
        return ""
    ma, mb = models
    resid = own = ea = eb = None
    if ma is not None and mb is not None and ma.value is not None and mb.value is not None:
        ea = _deviation(np.asarray(a, dtype=np.float64), ma.value)
        eb = _deviation(np.asarray(b, dtype=np.float64), mb.value)
        with np.errstate(invalid="ignore", over="ignore"):
            resid = np.abs(eb - ea)
        resid = np.where(np.isnan(resid), 0.0, resid)  # the same infinity on both sides
        own = np.nan_to_num(noise_bound(ma, mb, tol, harness=True), nan=np.inf)
    v = judge_vacuous(mask, scale, allowed, resid, own)
    why = (f"the noise bound at {v.n} of {diff.size} element(s) (up to {v.bound:.3g}) exceeds every value the "
           f"record holds (|value| <= {v.scale:.3g}), so |A-B| within it proves nothing"
           + (" (P[y] near 0: -log P[y] magnifies P's rounding)" if diff.name == "loss/value" else ""))
    diff.judged_by = "consistency"
    if v.n_inconsistent:
        assert ea is not None and eb is not None and ma is not None and mb is not None
        diff.kind, diff.role = VALUES, ORIGIN
        diff.n_over = diff.n_unexplained = v.n_inconsistent
        diff.unexplained_index, diff.explained_ratio = v.worst_index, v.worst_ratio
        diff.inconsistent = _inconsistent_sides(ea, eb, ma, mb, tol, labels)
        diff.note = why + "; judged instead by each side's consistency with its own inputs"
        return ""
    if v.n_unjudged:
        diff.kind = UNJUDGED
        diff.note = f"not judged at {v.n_unjudged} element(s): {why}, and so does the op's own rounding there"
    else:
        diff.note = why + "; judged instead by each side's consistency with its own inputs: both are consistent"
    return f"{diff.name} at {step_label(diff.step)}: {diff.note}"


def saturated(a: np.ndarray, b: np.ndarray) -> bool:
    """Every element is inf or NaN, the same on both sides: equal, and yet nothing was compared."""
    if a.dtype.kind != "f" or b.dtype.kind != "f" or a.size == 0:
        return False
    fa, fb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(~np.isfinite(fa) & ~np.isfinite(fb)))


def _nonfinite(a: np.ndarray) -> str:
    kinds = {("nan" if np.isnan(v) else "inf" if v > 0 else "-inf") for v in np.asarray(a, np.float64).ravel()[:1000]}
    return " or ".join(sorted(kinds))


def _side(label: str, ms: Memstate) -> Side:
    return Side(label, str(ms.dir), ms.name, ms.status, ms.stop_summary(), ms.manifest)


def _facts(ms: Memstate) -> dict[str, Any]:
    m = ms.manifest
    facts = {"implementation": m.get("implementation", {}).get("name"), "runtime": m.get("runtime", {}),
             "dtype": m.get("dtype"), "config": m.get("config"), "params_sha256": m.get("params_sha256"),
             "data": m.get("data")}
    return {k: v for k, v in facts.items() if v not in (None, {}, [])}


def manifest_differences(a: Memstate, b: Memstate) -> list[tuple[str, Any, Any]]:
    """(path, A's value, B's value) for every fact that differs between the two manifests."""
    tree = DeepDiff(_facts(a), _facts(b), view="tree")
    out = []
    for items in tree.values():
        for item in items:
            path = ".".join(str(p) for p in item.path(output_format="list"))
            if "NotPresent" in (type(item.t1).__name__, type(item.t2).__name__):
                continue  # a fact only one side records (a C++ side has no numpy version): nothing to compare
            out.append((path, item.t1, item.t2))
    return sorted(out, key=lambda x: x[0])


def config_of(ms: Memstate) -> Config | None:
    """The config the memstate's manifest records (checked when it was opened); None without one."""
    return ms.cfg


def choose_tolerance(a: Memstate, b: Memstate, rtol: float | None = None, atol: float | None = None,
                     mode: str | None = None) -> Tolerance:
    """The lower precision of the two sides; the noise model unless `mode` is fixed or rtol/atol is given."""
    dtypes = {str(m.manifest.get("dtype") or m.config.get("dtype") or record_dtype(m)) for m in (a, b)}
    dtype = "float32" if "float32" in dtypes or not dtypes <= {"float64"} else "float64"
    r, t = FIXED_TOLERANCES[dtype]
    mode = mode or ("fixed" if rtol is not None or atol is not None else "noise")
    return Tolerance(dtype, r if rtol is None else rtol, t if atol is None else atol, mode)


def record_dtype(ms: Memstate) -> str:
    """A side that names no dtype (a JSON-lines file without a config) computed in what its float
    records hold: float64 when every one of them is float64, else float32."""
    kinds = {ms._open[u].entries[n][0].name for u in ms.units[:3] for n in ms.names(u)
             if ms._open[u].entries[n][0].kind == "f"}
    return "float64" if kinds == {"float64"} else "float32"


def _keys(ms: Memstate) -> list[tuple[Step, str]]:
    return [(step, name) for step in ms.units for name in ms.names(step)]


def record_keys(a: Memstate, b: Memstate, cfg: Config | None) -> Iterator[tuple[Step, str]]:
    """Every (step, name) to look at, lazily: the config's records in spec order, with any record the
    spec does not name placed at the end of its step. The steps are those either side holds, and those
    a side's config asks for up to one past the last held step (enough to say where a side stopped),
    so a config of 10^9 steps over a memstate of 3 costs nothing."""
    names = [s.name for s in step_records(cfg)] if cfg else []
    held = {u for m in (a, b) for u in m.units if u != LOAD}
    last = max(held, default=-1)
    steps = set(held)
    for m in (a, b):
        want = m.expected if m.expected is not None else (range(cfg.steps) if cfg else range(0))
        steps.update(range(want.start, min(want.stop, max(last + 2, want.start + 1))))
    for step in [LOAD, *sorted(steps)]:
        spec = list(PARAMETERS) if step == LOAD and cfg else names if cfg else []
        extra: list[str] = []
        for m in (a, b):
            extra += [n for n in m.names(step) if n not in spec and n not in extra]
        for name in spec + extra:
            yield step, name


class _Models:
    """Each side's noise model, one step's inputs at a time (float64 copies are made lazily)."""

    def __init__(self, cfg: Config | None, sides: dict[str, Memstate], u: float):
        self.cfg, self.sides, self.u = cfg, sides, u
        self.inputs: dict[str, Inputs] = {}

    def get(self, label: str, step: Step, name: str) -> Expected | None:
        if self.cfg is None or step == LOAD:
            return None
        inp = self.inputs.get(label)
        if inp is None or inp.step != step:
            side = self.sides[label]
            inp = self.inputs[label] = Inputs(side.get, int(step), side.first_step)
        try:
            with np.errstate(all="ignore"):
                return expected(name, self.cfg, inp, self.u)
        except (MissingInput, KeyError, IndexError, ValueError):
            return None  # an input not recorded, a name the spec does not know, or inputs of the wrong shape

    def bound(self, step: Step, name: str, pair: tuple[Expected | None, Expected | None], tol: Tolerance,
              bounds: dict[str, np.ndarray]) -> np.ndarray | None:
        """The record's noise bound: both sides' own rounding, plus the most either side's inputs'
        bounds (`bounds`, this step's records so far) can carry into it; None without a model."""
        if tol.mode != "noise" or None in pair or self.cfg is None:
            return None
        assert pair[0] is not None and pair[1] is not None

        def input_bound(n: str) -> np.ndarray:
            if n not in bounds:
                raise MissingInput(n)
            return bounds[n]
        try:
            with np.errstate(all="ignore"):
                carry = [np.asarray(carried(name, self.cfg, self.inputs[lab], input_bound), dtype=np.float64)
                         for lab in self.sides]
        except (MissingInput, KeyError, IndexError, ValueError):
            return None
        return noise_bound(pair[0], pair[1], tol) + np.nan_to_num(np.maximum(*carry), nan=0.0)


def _graph_inputs(cfg: Config | None, step: Step, name: str, first: int = 0) -> list[tuple[Step, str]] | None:
    """The records a record is computed from, per records.py; None when the spec does not name it."""
    spec = next((s for s in step_records(cfg) if s.name == name), None) if cfg and step != LOAD else None
    if spec is None:
        return None
    if step == first:  # the loaded parameters; velocities start at zero, which is no record
        prev: list[tuple[Step, str]] = [(LOAD, p) for p in spec.previous if p in PARAMETERS]
    else:
        prev = [(int(step) - 1, p) for p in spec.previous]
    return [(step, i) for i in spec.inputs] + prev


def _pixels(x: np.ndarray, cfg: Config | None) -> bool:
    """Every value is a byte / 255 (scaled to the config's input range), to float32 accuracy."""
    lo, hi = (cfg.input_min, cfg.input_max) if cfg else (0.0, 1.0)
    v = (np.asarray(x, dtype=np.float64) - lo) / (hi - lo) * 255
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and Inf are simply not pixels
        return bool(np.all((np.abs(v - np.round(v)) <= 1e-4) & (v > -0.5) & (v < 255.5)))


def classify(diff: RecordDiff, x: np.ndarray, y: np.ndarray, models: tuple[Expected | None, Expected | None],
             tol: Tolerance, labels: tuple[str, str], cfg: Config | None, diverged: set[tuple[Step, str]],
             first: int = 0) -> None:
    """Set `role` of a diverging record: sources, loads and structural differences are origins;
    others by `explain` when both models exist, else by the graph (no recorded input diverged)."""
    ma, mb = models
    if diff.step == LOAD and first and diff.kind == VALUES:  # a replay's start: each side's own earlier steps
        diff.role, diff.judged_by = PROPAGATED, "graph"
        diff.note = f"each side starts from its own state after step {first - 1}: the differences of the steps before"
    elif diff.step == LOAD or diff.kind != VALUES or diff.name in SOURCES:
        diff.role = ORIGIN
        if diff.name == "input/x" and diff.kind == VALUES:  # pixels are bytes / 255: whose are not?
            diff.inconsistent = " and ".join(lab for lab, v in zip(labels, (x, y)) if not _pixels(v, cfg))
    elif ma is not None and mb is not None and ma.value is not None and mb.value is not None:
        explain(diff, x, y, ma, mb, tol, labels)
    else:
        inputs = _graph_inputs(cfg, diff.step, diff.name, first)
        diff.judged_by = "graph"
        if inputs is None:
            diff.role = ORIGIN  # nothing upstream is known to explain it, so it must not pass as drift
            diff.note = ((diff.note + " " if diff.note else "") + "no model or dataflow for this record (not in the "
                         "spec's graph): counted as an origin, since nothing upstream is known to explain it")
        else:
            diff.role = PROPAGATED if any(k in diverged for k in inputs) else ORIGIN


def compare_memstates(a: Memstate, b: Memstate, tolerance: Tolerance | None = None,
                      labels: tuple[str, str] = ("A", "B"), strict: bool = False,
                      stop_at_origin: bool = False) -> Comparison:
    """Compare every record both sides hold, in the spec's order; see the module docstring.

    A side that did not complete yields a `stopped` divergence at the first record it lacks,
    so two runs that both failed never read as agreeing. Steps are read one at a time and
    unmapped once passed, so memory follows a step, not the memstate; `stop_at_origin` ends
    the comparison at the first origin.
    """
    tol = tolerance or choose_tolerance(a, b)
    result = Comparison(_side(labels[0], a), _side(labels[1], b), tol, [], strict=strict)
    result.manifest_diff = manifest_differences(a, b)
    changed = {p for p, x, y in result.manifest_diff if x is not None and y is not None}  # both sides say
    first = a.first_step if a.first_step == b.first_step else 0  # replays of one window start there
    if "params_sha256" in changed and not first:
        result.notes.append("the two sides were given different parameter files (params_sha256 differs)")
    config_fields = sorted(p.removeprefix("config.") for p in changed if p.startswith("config.") and p != "config.dtype")
    if config_fields:
        result.notes.append("the two sides ran different configs: " + ", ".join(config_fields))
    cfg = config_of(a) or config_of(b)
    spec_names = {n for _, n in expected_order(cfg.replace(steps=1))} if cfg else set()
    keys = record_keys(a, b, cfg)
    have = {labels[0]: set(_keys(a)), labels[1]: set(_keys(b))}
    sides = {labels[0]: a, labels[1]: b}
    unmapped = {lab: {(u[0], u[1]): u[2] for u in ms.manifest.get("unmapped", [])} for lab, ms in sides.items()}
    for lab, items in unmapped.items():
        by_reason: dict[str, list[str]] = {}
        for (s, n), why in items.items():
            by_reason.setdefault(why, []).append(f"{step_label(s)} {n}")
        for why, where in by_reason.items():
            result.notes.append(f"{lab} cannot hold {', '.join(where)}: {why}")
        for name, how in sides[lab].manifest.get("legacy_notes", {}).items():
            result.notes.append(f"{lab} {name}: {how}")
    for lab, ms in sides.items():
        if ms.unlisted:
            result.notes.append(f"{lab}'s directory holds {', '.join(unit_file(u) for u in ms.unlisted)}, which its "
                                f"manifest does not list: not compared")
    unknown: set[str] = set()
    one_sided: dict[tuple[str, str], list[Step]] = {}
    models = _Models(cfg, sides, tol.u)
    diverged: set[tuple[Step, str]] = set()
    bounds: dict[str, np.ndarray] = {}  # this step's noise bounds so far, for the records after them
    bounds_step: Step | None = None
    captures = [Capture.from_dict(ms.manifest.get("capture")) for ms in (a, b)]
    last: tuple[Step, str] = (LOAD, "-")
    for step, name in keys:
        last = (step, name)
        x, y = a.get(step, name), b.get(step, name)
        if x is None or y is None:
            if any((step, name) in unmapped[lab] for lab in sides):
                continue  # a record that side's format cannot hold: listed in the notes
            lacking = [lab for lab, k in have.items() if (step, name) not in k]
            stopped = [lab for lab in lacking if sides[lab].status != "complete"]
            if stopped:
                why = "; ".join(f"{lab} {sides[lab].stop_summary()}" for lab in stopped)
                result.records.append(RecordDiff(step, name, STOPPED, note=why))
                result.notes.append(why)
                break
            if len(lacking) == 2:
                if cfg is None or name not in spec_names or not all(c.keeps(step, name) for c in captures):
                    continue  # not the spec's, or a record neither side's capture keeps
                result.records.append(RecordDiff(step, name, MISSING, note="neither side has this record, which "
                                                 "their config asks for"))
                continue
            if cfg is not None and name not in spec_names:
                own = next(lab for lab in sides if lab not in lacking)
                one_sided.setdefault((own, name), []).append(step)  # a side's own extra record: not the spec's
                continue
            if step != LOAD and not any(s == step for s, _ in have[lacking[0]]):
                result.notes.append(f"{lacking[0]} has no {step_label(step)} (it ran fewer steps); "
                                    f"compared the steps both have")
                break
            result.records.append(RecordDiff(step, name, MISSING, note=f"{lacking[0]} has no such record"))
            continue
        if name not in spec_names:
            unknown.add(name)
        # Loading is parsing and rounding, no arithmetic: both sides must hold the file's exact values.
        record_tol = Tolerance(tol.dtype, 0.0, 0.0, "fixed") if step == LOAD else tol
        pair = (models.get(labels[0], step, name), models.get(labels[1], step, name))
        if step != bounds_step:
            if isinstance(bounds_step, int):  # done with the step before the one just finished
                for ms in (a, b):
                    ms.release(bounds_step - 1)
            bounds, bounds_step = {}, step
        allowed = models.bound(step, name, pair, tol, bounds) if x.shape == y.shape else None
        if allowed is not None:
            bounds[name] = np.broadcast_to(allowed, x.shape)
        diff = compare_record(step, name, x, y, record_tol, labels, allowed)
        if diff and step != LOAD and saturated(x, y):
            diff.kind = UNJUDGED  # never "within noise": say it, and never let it read as agree
            diff.note = (f"not judged: both sides hold {_nonfinite(x)} at every element"
                         + (" (P[y] underflows to 0)" if name == "loss/value" else "")
                         + "; no bound can tell a difference there")
            result.notes.append(f"{name} at {step_label(step)} {diff.note}")
        elif diff and allowed is not None and step != LOAD and x.dtype.kind == "f" and y.dtype.kind == "f":
            note = check_vacuous(diff, x, y, allowed, pair, tol, labels)
            if note:
                result.notes.append(note)
        if not diff and diff.kind != UNJUDGED:
            if not diff.role:  # an origin by consistency (check_vacuous) is classified already
                classify(diff, x, y, pair, tol, labels, cfg, diverged, first)
            diverged.add((step, name))
        result.records.append(diff)
        if stop_at_origin and diff.is_origin:
            result.notes.append(f"stopped at the first origin ({diff.where}): later records were not compared")
            break
    else:
        for lab, ms in sides.items():  # stopped after writing everything the config asks for
            if ms.status != "complete":
                result.records.append(RecordDiff(last[0], last[1], STOPPED, note=f"{lab} {ms.stop_summary()}"))
                break
    for (lab, name), steps in one_sided.items():
        other = next(x for x in sides if x != lab)
        result.notes.append(f"{lab} records {name} ({len(steps)} unit(s) from {step_label(steps[0])}), which the spec "
                            f"does not name and {other} does not have: not compared")
    return _finish(result, unknown)


def _finish(result: Comparison, unknown: set[str]) -> Comparison:
    if unknown:
        result.notes.append("records the spec does not name (compared all the same): " + ", ".join(sorted(unknown)))
    for side in (result.a, result.b):
        if side.status != "complete" and not any(side.label in n for n in result.notes):
            result.notes.append(f"{side.label} {side.stop_summary}")
    return result


def step_bounds(a: Memstate, b: Memstate, step: int, tol: Tolerance | None = None) -> dict[str, np.ndarray]:
    """Every record's noise bound at one step (name -> |A-B| allowed per element), for reports and
    benchmarks: what `compare_memstates` judges that step's records against."""
    tol = tol or choose_tolerance(a, b, mode="noise")
    cfg = config_of(a) or config_of(b)
    models = _Models(cfg, {"A": a, "B": b}, tol.u)
    bounds: dict[str, np.ndarray] = {}
    for spec in step_records(cfg) if cfg else []:
        x = a.get(step, spec.name)
        pair = (models.get("A", step, spec.name), models.get("B", step, spec.name))
        allowed = models.bound(step, spec.name, pair, tol, bounds) if x is not None else None
        if allowed is not None:
            bounds[spec.name] = np.broadcast_to(allowed, x.shape)
    return bounds


@dataclass
class RecordArrays:
    """One record on both sides, for a report: the values, the |A-B| allowed per element, and
    each side's deviation from the op applied to its own inputs (None where there is no model)."""

    a: np.ndarray
    b: np.ndarray
    allowed: np.ndarray | None
    off_a: np.ndarray | None
    off_b: np.ndarray | None


def record_arrays(a: Memstate, b: Memstate, step: Step, name: str, tol: Tolerance) -> RecordArrays | None:
    """What the report draws for one record; None when either side lacks it or the shapes differ."""
    x, y = a.get(step, name), b.get(step, name)
    if x is None or y is None or x.shape != y.shape:
        return None
    cmp = np.dtype(tol.dtype)
    da, db = np.asarray(x).astype(cmp).astype(np.float64), np.asarray(y).astype(cmp).astype(np.float64)
    if step == LOAD:
        return RecordArrays(da, db, np.zeros_like(da), None, None)
    if tol.mode == "noise":
        allowed = step_bounds(a, b, int(step), tol).get(name)
    else:
        scale = np.fmax(np.abs(da), np.abs(db))
        allowed = tol.rtol * scale + tol.atol * max(float(np.nanmax(scale, initial=0.0)), float(np.finfo(cmp).tiny))
    models = _Models(config_of(a) or config_of(b), {"A": a, "B": b}, tol.u)
    off = []
    for label, v in (("A", da), ("B", db)):
        m = models.get(label, step, name)
        off.append(None if m is None or m.value is None else _deviation(v, np.broadcast_to(m.value, v.shape)))
    return RecordArrays(da, db, None if allowed is None else np.asarray(allowed, dtype=np.float64), off[0], off[1])

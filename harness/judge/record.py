"""One record on both sides, judged: the tolerance, the result (RecordDiff), and the comparison of two
arrays of one record (values, labels, shapes). A pure function of two arrays, a tolerance and, in the
noise mode, the bound per element (`allowed`) that the noise model gives.

A record *diverges* when the two sides differ by more than its noise bound (the op's own rounding,
from the magnitudes the sides recorded; `noise.py`), or in the fixed mode |a - b| <= rtol * max(|a|, |b|)
+ atol * S with S the record's largest magnitude. Both are judged at the lower precision of the two
sides. Integer records (labels) must match exactly, and the parameters as loaded bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from harness.judge.diagnose import Diagnosis
from harness.judge.metrics import element_metrics
from harness.judge.noise import UNIT_ROUNDOFF, Z_SIGMA
from harness.spec.records import LOAD, Step, step_label

# (rtol, atol) per comparison dtype for the fixed mode; docs/comparing.md explains the choice.
FIXED_TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-11, 1e-12)}


AGREE, VALUES, LABELS, SHAPE, MISSING, STOPPED = "agree", "values", "labels", "shape", "missing", "stopped"


UNJUDGED = "unjudged"  # every element non-finite and equal on both sides: nothing a bound can judge


ORIGIN, PROPAGATED, SUSPECT = "origin", "propagated", "suspect"  # a divergence's role; judge/origin.py grades them


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
    role: str = ""  # for a divergence: origin | suspect (possible rounding, not an origin) | propagated
    judged_by: str = ""  # noise | fixed | exact | graph (inputs not recorded: an origin when no input diverged)
    explained_ratio: float = 0.0  # worst |(B - f(B's inputs)) - (A - f(A's inputs))| / the op's own rounding
    n_unexplained: int = 0  # elements beyond the op's own rounding once the inputs' differences are taken out
    unexplained_index: tuple[int, ...] | None = None
    worst_case_ratio: float = 0.0  # worst residual / the most any order of summation can round (> 1: origin)
    systematic: float = 0.0  # |sum of the residuals in units of their bound| / its spread (> Z_SIGMA: origin)
    evidence: str = ""  # what made an origin or a suspect of a record the noise model judged
    inconsistent: str = ""  # the side(s) whose value is not the op applied to their own inputs: A, B or A and B
    diagnosis: Diagnosis | None = None  # for an origin: what kind of bug it looks like (judge/diagnose.py)

    def __bool__(self) -> bool:
        return self.kind == AGREE

    @property
    def is_origin(self) -> bool:
        """Structural differences (labels, shape, missing, stopped) always are; values when classified so."""
        return self.kind not in (AGREE, UNJUDGED) and (self.kind != VALUES or self.role == ORIGIN)

    @property
    def where(self) -> str:
        return f"{step_label(self.step)}, {self.name}"


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


@cache
def _name(dtype: np.dtype) -> str:
    """dtype.name, which numpy works out in Python at every call (a comparison asks for it twice a record)."""
    return dtype.name


def compare_record(step: Step, name: str, a: np.ndarray, b: np.ndarray, tol: Tolerance,
                   labels: tuple[str, str] = ("A", "B"), allowed: np.ndarray | None = None) -> RecordDiff:
    """Compare one record: against `allowed` (its noise bound) when given, else the fixed tolerance."""
    diff = RecordDiff(step, name, shape_a=tuple(a.shape), shape_b=tuple(b.shape),
                      dtype_a=_name(a.dtype), dtype_b=_name(b.dtype))
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

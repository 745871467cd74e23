"""Line two memstates up record by record and name the first place they part.

Tolerance here is the fixed mode: |a - b| <= rtol * max(|a|, |b|) + atol * S, where S is the
largest magnitude in the record (so one atol serves pixels, logits and gradients alike), with
(rtol, atol) chosen by the lower precision of the two sides, so a float64 side is judged at float32
against a float32 side. Integer records (labels) must match exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from deepdiff import DeepDiff

from .config import Config
from .errors import InputError
from .memstate import Memstate
from .records import LOAD, Step, expected_order, step_label

# (rtol, atol) per comparison dtype; docs/comparing.md explains the choice.
FIXED_TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-11, 1e-12)}

AGREE, VALUES, LABELS, SHAPE, MISSING, STOPPED = "agree", "values", "labels", "shape", "missing", "stopped"


@dataclass(frozen=True)
class Tolerance:
    dtype: str
    rtol: float
    atol: float

    def describe(self) -> str:
        return (f"fixed, judged at {self.dtype}: |A-B| <= {self.rtol:g}*max(|A|,|B|) "
                f"+ {self.atol:g}*(largest |value| in the record)")


@dataclass
class RecordDiff:
    """How one record compares. Truthy when it agrees."""

    step: Step
    name: str
    kind: str = AGREE  # agree | values | labels | shape | missing | stopped
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

    def __bool__(self) -> bool:
        return self.kind == AGREE

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
    """The outcome of comparing two memstates. Truthy when they agree."""

    a: Side
    b: Side
    tolerance: Tolerance
    records: list[RecordDiff]
    notes: list[str] = field(default_factory=list)
    manifest_diff: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def divergences(self) -> list[RecordDiff]:
        return [r for r in self.records if not r]

    @property
    def first(self) -> RecordDiff | None:
        return next((r for r in self.records if not r), None)

    @property
    def verdict(self) -> str:
        return "agree" if self.first is None else "diverged"

    def __bool__(self) -> bool:
        return self.verdict == "agree"

    def to_dict(self) -> dict[str, Any]:
        def rec(r: RecordDiff) -> dict[str, Any]:
            return {k: v for k, v in asdict(r).items()}
        return {
            "verdict": self.verdict,
            "first": rec(self.first) if self.first is not None else None,
            "tolerance": asdict(self.tolerance),
            "a": {k: v for k, v in asdict(self.a).items() if k != "manifest"},
            "b": {k: v for k, v in asdict(self.b).items() if k != "manifest"},
            "notes": self.notes,
            "manifest_diff": [{"path": p, "a": a, "b": b} for p, a, b in self.manifest_diff],
            "counts": {"records": len(self.records), "diverged": len(self.divergences)},
            "records": [rec(r) for r in self.records],
        }


def _ordered(x: np.ndarray) -> np.ndarray:
    """Floats mapped to integers that count ULPs (monotone through zero), as float64."""
    bits = x.view(np.int32 if x.dtype == np.float32 else np.int64).astype(np.float64)
    top = float(2**31) if x.dtype == np.float32 else float(2**63)
    return np.where(bits < 0, -top - bits, bits)


def compare_values(diff: RecordDiff, a: np.ndarray, b: np.ndarray, tol: Tolerance) -> RecordDiff:
    """Fill the metrics of `diff` for two arrays of one shape."""
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
    exact = tol.rtol == 0 and tol.atol == 0
    cmp = np.dtype(tol.dtype)
    ca, cb = np.asarray(a).astype(cmp), np.asarray(b).astype(cmp)  # judged at the lower precision
    da, db = ca.astype(np.float64), cb.astype(np.float64)
    diff.nan_a, diff.nan_b = int(np.isnan(da).sum()), int(np.isnan(db).sum())
    diff.inf_a, diff.inf_b = int(np.isinf(da).sum()), int(np.isinf(db).sum())
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same = (da == db) | (np.isnan(da) & np.isnan(db))  # equal, equal infinities, or NaN on both
        err = np.where(same, 0.0, np.abs(da - db))
        err = np.where(np.isnan(err), np.inf, err)  # NaN against a number
        scale = np.fmax(np.abs(da), np.abs(db))
        scale = np.where(np.isfinite(scale), scale, 0.0)
        record_scale = max(float(scale.max(initial=0.0)), float(np.finfo(cmp).tiny))
        allowed = tol.atol * record_scale + tol.rtol * scale  # atol is relative to the record's largest |value|
        ratio = np.where(err == 0, 0.0, np.inf) if exact else err / allowed
        rel = np.where(err == 0, 0.0, err / np.where(scale > 0, scale, np.inf))
        ulp = np.where(same, 0.0, np.abs(_ordered(ca) - _ordered(cb)))
    if diff.size == 0:
        return diff
    worst = int(np.argmax(ratio))
    diff.n_over = int((ratio > 1).sum())
    diff.max_abs, diff.max_rel, diff.max_ulp = float(err.max()), float(rel.max()), float(ulp.max())
    diff.worst_ratio = float(ratio.flat[worst])
    i = np.unravel_index(worst, a.shape)
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


def compare_record(step: Step, name: str, a: np.ndarray, b: np.ndarray, tol: Tolerance,
                   labels: tuple[str, str] = ("A", "B")) -> RecordDiff:
    diff = RecordDiff(step, name, shape_a=tuple(a.shape), shape_b=tuple(b.shape),
                      dtype_a=a.dtype.name, dtype_b=b.dtype.name)
    if a.shape == b.shape:
        compare_values(diff, a, b, tol)
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
        diff.note = (f"B holds the transposed layout {b.shape} of A's {a.shape}; "
                     + ("the values agree once transposed" if again else
                        f"even transposed, {again.n_over} of {again.size} elements differ"))
    elif a.size == b.size:
        again = compare_values(RecordDiff(step, name), a, b.reshape(a.shape), tol)
        diff.note = (f"same {a.size} elements in shapes {a.shape} and {b.shape}; "
                     + ("the values agree once reshaped" if again else "the values differ even reshaped"))
    else:
        diff.note = f"shapes {a.shape} and {b.shape} hold {a.size} and {b.size} elements"
    return diff


def _side(label: str, ms: Memstate) -> Side:
    return Side(label, str(ms.dir), ms.name, ms.status, ms.stop_summary(), ms.manifest)


def _facts(ms: Memstate) -> dict[str, Any]:
    m = ms.manifest
    return {"implementation": m.get("implementation", {}).get("name"), "runtime": m.get("runtime", {}),
            "dtype": m.get("dtype"), "config": m.get("config", {}), "params_sha256": m.get("params_sha256"),
            "data": m.get("data")}


def manifest_differences(a: Memstate, b: Memstate) -> list[tuple[str, Any, Any]]:
    """(path, A's value, B's value) for every fact that differs between the two manifests."""
    tree = DeepDiff(_facts(a), _facts(b), view="tree")
    out = []
    for items in tree.values():
        for item in items:
            path = ".".join(str(p) for p in item.path(output_format="list"))
            t1 = None if type(item.t1).__name__ == "NotPresent" else item.t1
            t2 = None if type(item.t2).__name__ == "NotPresent" else item.t2
            out.append((path, t1, t2))
    return sorted(out, key=lambda x: x[0])


def _config(ms: Memstate) -> Config | None:
    try:
        return Config.from_dict(ms.config, source=str(ms.dir))
    except InputError:
        return None


def choose_tolerance(a: Memstate, b: Memstate, rtol: float | None = None, atol: float | None = None) -> Tolerance:
    dtypes = {str(m.manifest.get("dtype") or m.config.get("dtype") or "float32") for m in (a, b)}
    dtype = "float32" if "float32" in dtypes or not dtypes <= {"float64"} else "float64"
    r, t = FIXED_TOLERANCES[dtype]
    return Tolerance(dtype, r if rtol is None else rtol, t if atol is None else atol)


def _keys(ms: Memstate) -> list[tuple[Step, str]]:
    return [(step, name) for step in ms.units for name in ms.unit(step)]


def record_keys(a: Memstate, b: Memstate, cfg: Config | None) -> list[tuple[Step, str]]:
    """Every (step, name) to look at: the config's expected records in spec order, with any
    record the spec does not name placed at the end of its step."""
    steps = max([cfg.steps if cfg else 0] + [u + 1 for m in (a, b) for u in m.units if u != LOAD])
    expected = expected_order(cfg.replace(steps=steps)) if cfg else []
    known = set(expected)
    extra = [k for k in _keys(a) + _keys(b) if k not in known]
    by_step: dict[Step, list[str]] = {}
    for step, name in extra:
        if name not in by_step.setdefault(step, []):
            by_step[step].append(name)
    out: list[tuple[Step, str]] = []
    units = [LOAD] + sorted({s for s, _ in expected + extra if s != LOAD})
    for step in units:
        out += [k for k in expected if k[0] == step] + [(step, n) for n in by_step.get(step, [])]
    return out


def compare_memstates(a: Memstate, b: Memstate, tolerance: Tolerance | None = None,
                      labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare every record both sides hold, in the spec's order; see the module docstring.

    A side that did not complete yields a `stopped` divergence at the first record it lacks,
    so two runs that both failed never read as agreeing.
    """
    tol = tolerance or choose_tolerance(a, b)
    result = Comparison(_side(labels[0], a), _side(labels[1], b), tol, [])
    result.manifest_diff = manifest_differences(a, b)
    changed = {p for p, x, y in result.manifest_diff if x is not None and y is not None}  # both sides say
    if "params_sha256" in changed:
        result.notes.append("the two sides were given different parameter files (params_sha256 differs)")
    config_fields = sorted(p.removeprefix("config.") for p in changed if p.startswith("config.") and p != "config.dtype")
    if config_fields:
        result.notes.append("the two sides ran different configs: " + ", ".join(config_fields))
    cfg = _config(a) or _config(b)
    known = set(expected_order(cfg.replace(steps=1))) if cfg else set()
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
    unknown: set[str] = set()
    for step, name in keys:
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
                continue  # neither side has it (e.g. both ran fewer steps than the config says)
            if step != LOAD and not any(s == step for s, _ in have[lacking[0]]):
                result.notes.append(f"{lacking[0]} has no {step_label(step)} (it ran fewer steps); "
                                    f"compared the steps both have")
                break
            result.records.append(RecordDiff(step, name, MISSING, note=f"{lacking[0]} has no such record"))
            continue
        if (0, name) not in known and (LOAD, name) not in known:
            unknown.add(name)
        # Loading is parsing and rounding, no arithmetic: both sides must hold the file's exact values.
        record_tol = Tolerance(tol.dtype, 0.0, 0.0) if step == LOAD else tol
        result.records.append(compare_record(step, name, x, y, record_tol, labels))
    else:
        for lab, ms in sides.items():  # stopped after writing everything the config asks for
            if ms.status != "complete":
                last = keys[-1] if keys else (LOAD, "-")
                result.records.append(RecordDiff(last[0], last[1], STOPPED, note=f"{lab} {ms.stop_summary()}"))
                break
    return _finish(result, unknown)


def _finish(result: Comparison, unknown: set[str]) -> Comparison:
    if unknown:
        result.notes.append("records the spec does not name (compared all the same): " + ", ".join(sorted(unknown)))
    for side in (result.a, result.b):
        if side.status != "complete" and not any(side.label in n for n in result.notes):
            result.notes.append(f"{side.label} {side.stop_summary}")
    return result

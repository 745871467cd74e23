"""Line two memstates up record by record, in the spec's order, one step at a time: each record's noise
bound from both sides' models (judge/noise.py), its verdict (judge/record.py), and for a divergence
origin or propagated (judge/origin.py). Memory follows a step, not the memstate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.compare.comparison import Comparison, Side
from harness.compare.diagnosis import MAX_DIAGNOSED, diagnose_origin, moved_factors
from harness.compare.stated import origin_notes, side_notes
from harness.judge.noise import Expected, Inputs, MissingInput, carried, expected
from harness.judge.origin import (
    _deviation,
    _graph_inputs,
    _nonfinite,
    check_vacuous,
    classify,
    noise_bound,
    noise_bound_scale,
    saturated,
)
from harness.judge.record import (
    FIXED_TOLERANCES,
    LABELS,
    SHAPE,
    VALUES,
    MISSING,
    STOPPED,
    UNJUDGED,
    RecordDiff,
    Tolerance,
    compare_record,
)
from harness.run.capture import Capture
from harness.spec.network import network
from harness.spec.config import Config
from harness.spec.records import (
    LOAD,
    LOSS_SCALE,
    Step,
    expected_order,
    step_label,
    step_records,
)
from harness.store.format import unit_file
from harness.store.memstate import Memstate


def _side(label: str, ms: Memstate) -> Side:
    return Side(label, str(ms.dir), ms.name, ms.status, ms.stop_summary(), ms.manifest, ms.precision.mode)


def _facts(ms: Memstate) -> dict[str, Any]:
    m = ms.manifest
    facts = {"implementation": m.get("implementation", {}).get("name"), "runtime": m.get("runtime", {}),
             "dtype": m.get("dtype"), "config": m.get("config"), "params_sha256": m.get("params_sha256"),
             "data": m.get("data")}
    return {k: v for k, v in facts.items() if v not in (None, {}, [])}


def manifest_differences(a: Memstate, b: Memstate) -> list[tuple[str, Any, Any]]:
    """(path, A's value, B's value) for every fact both manifests record and hold differently; a fact only
    one side records (a C++ side has no numpy version) is nothing to compare."""
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in x.keys() & y.keys():
                walk(x[k], y[k], f"{path}.{k}" if path else str(k))
        elif x != y:
            out.append((path, x, y))
    walk(_facts(a), _facts(b), "")
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
        spec = list(network(cfg).parameters) if step == LOAD and cfg else names if cfg else []
        extra: list[str] = []
        for m in (a, b):
            extra += [n for n in m.names(step) if n not in spec and n not in extra and n != LOSS_SCALE]
        for name in spec + extra:
            yield step, name


class _Models:
    """Each side's noise model, one step's inputs at a time (float64 copies are made lazily)."""

    def __init__(self, cfg: Config | None, sides: dict[str, Memstate], u: float):
        self.cfg, self.sides, self.u = cfg, sides, u
        self.inputs: dict[str, Inputs] = {}
        self.scales: dict[str, tuple[float, float]] = {}  # this step's bounds that are k |record| + f (a source's)
        self.scales_step: Step | None = None

    def pair(self, step: Step, name: str) -> tuple[Expected | None, Expected | None]:
        """Both sides' models of one record, in the sides' order."""
        first, second = self.sides
        return self.get(first, step, name), self.get(second, step, name)

    def get(self, label: str, step: Step, name: str) -> Expected | None:
        if self.cfg is None or step == LOAD:
            return None
        inp = self.inputs.get(label)
        if inp is None or inp.step != step:
            side = self.sides[label]
            inp = self.inputs[label] = Inputs(side.get, int(step), side.first_step, absent=side.missing,
                                              precision=side.precision)
            if side.missing:
                cfg, u, own = self.cfg, self.u, inp
                inp.model = lambda n, rounding: expected(n, cfg, own, u, rounding)
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
        if step != self.scales_step:
            self.scales, self.scales_step = {}, step
        try:
            with np.errstate(all="ignore"):
                carry = [np.asarray(carried(name, self.cfg, self.inputs[lab], input_bound, self.scales.get),
                                    dtype=np.float64) for lab in self.sides]
            scale = noise_bound_scale(pair[0], pair[1], tol)
            if scale is not None and not np.any(carry) and np.array_equal(*(self.inputs[lab].cur(name)
                                                                            for lab in self.sides)):
                self.scales[name] = scale  # the same record on both sides: its bound is k |record| + f on each
        except (MissingInput, KeyError, IndexError, ValueError):
            return None
        inherited = np.maximum(*carry)
        if not np.isfinite(inherited).all():  # one pass where all is finite, as it nearly always is
            inherited = np.nan_to_num(inherited, nan=0.0)
        return noise_bound(pair[0], pair[1], tol) + inherited


def compare_memstates(a: Memstate, b: Memstate, tolerance: Tolerance | None = None,
                      labels: tuple[str, str] = ("A", "B"), strict: bool = False,
                      stop_at_origin: bool = False, diagnose: bool = True) -> Comparison:
    """Compare every record both sides hold, in the spec's order; see the module docstring.

    A side that did not complete yields a `stopped` divergence at the first record it lacks,
    so two runs that both failed never read as agreeing. Steps are read one at a time and
    unmapped once passed, so memory follows a step, not the memstate; `stop_at_origin` ends
    the comparison at the first origin. The first origin of each record gets a diagnosis
    (`diagnose=False`: none, for benchmarks).
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
    stored = (max(ms.precision.stored[0] for ms in (a, b)), max(ms.precision.stored[1] for ms in (a, b)))
    one_sided: dict[tuple[str, str], list[Step]] = {}
    models = _Models(cfg, sides, tol.u)
    noise = tol.mode == "noise"
    diverged: set[tuple[Step, str]] = set()
    bounds: dict[str, np.ndarray] = {}  # this step's noise bounds so far, for the records after them
    bounds_step: Step | None = None
    captures = [Capture.from_dict(ms.manifest.get("capture")) for ms in (a, b)]
    last: tuple[Step, str] = (LOAD, "-")
    diagnosed: set[str] = set()  # the records whose first origin was diagnosed
    for lab, ms in sides.items():
        result.notes += side_notes(lab, ms)
    for step, name in keys:
        last = (step, name)
        if step != bounds_step:
            if isinstance(bounds_step, int):  # done with the step before the one just finished
                for ms in (a, b):
                    ms.release(bounds_step - 1)
            bounds, bounds_step = {}, step
        x, y = a.get(step, name), b.get(step, name)
        if x is None or y is None:
            if any((step, name) in unmapped[lab] for lab in sides):
                continue  # a record that side's format cannot hold: listed in the notes
            lacking = [lab for lab, k in have.items() if (step, name) not in k]
            if step != LOAD and all(name in sides[lab].missing for lab in lacking):
                _not_computed(models, step, name, tol, bounds, diverged, first)
                continue
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
        # Loading is parsing and rounding, no arithmetic: both sides must hold the file's exact values, each
        # rounded to the format it keeps them in (bfloat16, float16 storage).
        record_tol = _load_tolerance(tol, stored, x, y) if step == LOAD else tol
        # the models: the noise bound's, or (a fixed tolerance) only to classify a divergence
        pair = models.pair(step, name) if noise else (None, None)
        allowed = models.bound(step, name, pair, tol, bounds) if x.shape == y.shape else None
        if allowed is not None:
            bounds[name] = allowed if allowed.shape == x.shape else np.broadcast_to(allowed, x.shape)
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
                if not noise:
                    pair = models.pair(step, name)
                classify(diff, x, y, pair, tol, labels, cfg, diverged, first)
            diverged.add((step, name))
            why, overflow = origin_notes(cfg, step, name, sides, (x, y)) if diff.is_origin else ([], False)
            diff.note = "; ".join(([diff.note] if diff.note else []) + why)
            if diagnose and diff.is_origin and diff.kind in (VALUES, LABELS, SHAPE) and name not in diagnosed \
                    and len(diagnosed) < MAX_DIAGNOSED and not overflow:  # an overflow is its own reason
                diagnosed.add(name)
                diff.diagnosis = diagnose_origin(diff, x, y, allowed, record_tol, cfg, (a, b), labels)
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
    moved_factors(result.records, cfg)
    return _finish(result, unknown)


def _load_tolerance(tol: Tolerance, stored: tuple[float, float], x: np.ndarray, y: np.ndarray) -> Tolerance:
    """The load unit's: exact, or within one rounding to the format a side keeps its values in (relative,
    and absolute below that format's range: fixed mode's atol is relative to the record's largest value)."""
    if not stored[1]:
        return Tolerance(tol.dtype, stored[0], 0.0, "fixed")
    with np.errstate(invalid="ignore"):
        scale = max((float(np.nanmax(np.abs(v), initial=0.0)) for v in (x, y) if v.size and v.dtype.kind == "f"),
                    default=0.0)
    return Tolerance(tol.dtype, stored[0], stored[1] / scale if scale > 0 else 0.0, "fixed")


def _not_computed(models: _Models, step: Step, name: str, tol: Tolerance, bounds: dict[str, np.ndarray],
                  diverged: set[tuple[Step, str]], first: int) -> None:
    """A record a side declared it does not compute: nothing to compare, but its noise bound (from each
    side's model) still carries into its consumers, and it diverged where any of its inputs did."""
    pair = models.pair(step, name)
    allowed = models.bound(step, name, pair, tol, bounds)
    if allowed is not None and pair[0] is not None and pair[0].value is not None:
        bounds[name] = np.broadcast_to(allowed, np.shape(pair[0].value))
    if any(k in diverged for k in _graph_inputs(models.cfg, step, name, first) or []):
        diverged.add((step, name))


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
        pair = models.pair(step, spec.name)
        x = next((v for v in (a.get(step, spec.name), b.get(step, spec.name), pair[0] and pair[0].value)
                  if v is not None), None)  # a record one side does not compute: the other's, or the model's
        allowed = models.bound(step, spec.name, pair, tol, bounds) if x is not None else None
        if allowed is not None and x is not None:
            bounds[spec.name] = np.broadcast_to(allowed, np.shape(x))
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

"""Origin, suspect or propagated: a diverging record is *propagated* when its inputs explain it (each side's
record minus the op applied to that side's own recorded inputs stays within the op's own random rounding).
Beyond that the op itself may have been computed differently, or summed in an order that does not round
at random (sorted, grouped, blocked). It is an *origin* when the evidence rules rounding out: an element
beyond the most any order of summation can round, or differences that lean one way across the record
(rounding has no preferred sign); else a *suspect*: possible rounding, shown but not an origin. Where a
record has no model, the dataflow graph decides; where its bound says nothing, consistency does
(`vacuous.py`).
"""

from __future__ import annotations

import numpy as np

from harness.judge.noise import SOURCES, Z_SIGMA, Expected
from harness.judge.record import (
    ORIGIN,
    PROPAGATED,
    SUSPECT,
    UNJUDGED,
    VALUES,
    RecordDiff,
    Tolerance,
)
from harness.judge.vacuous import judge_vacuous, vacuous_mask
from harness.spec.config import Config
from harness.spec.network import network
from harness.spec.records import LOAD, Step, step_label, step_records


def _sides(tol: Tolerance, harness: bool) -> tuple[float, float]:
    """(k, floor): with `harness`, the harness's own float64 arithmetic counts as two more sides (k = 2)
    when the comparison itself is at float64; the smallest normal number on each side (flushing
    subnormals to zero is an accepted way to compute)."""
    return 2.0 if harness and tol.dtype == "float64" else 1.0, 2 * float(np.finfo(np.dtype(tol.dtype)).tiny)


def noise_bound(ma: Expected, mb: Expected, tol: Tolerance, harness: bool = False) -> np.ndarray:
    """Z * sqrt(sigma_A^2 + sigma_B^2) + fixed_A + fixed_B, plus the smallest normal number on each
    side; `harness`: see _sides."""
    k, floor = _sides(tol, harness)
    return (Z_SIGMA * np.sqrt(k * (np.square(ma.sigma) + np.square(mb.sigma)))
            + k * (np.asarray(ma.fixed) + mb.fixed) + floor)


def noise_bound_scale(ma: Expected, mb: Expected, tol: Tolerance) -> tuple[float, float] | None:
    """(k, f) such that noise_bound is k |record| + f, where both sides' models are a source's, whose fixed
    term is proportional to the record (`Expected.scale`) and which has no sigma (both sides must hold the
    same record for this to describe either); else None."""
    if ma.scale is None or mb.scale is None or np.any(ma.sigma) or np.any(mb.sigma):
        return None
    k, floor = _sides(tol, harness=False)
    return k * (ma.scale + mb.scale), floor


def worst_bound(ma: Expected, mb: Expected, tol: Tolerance) -> np.ndarray:
    """The most the op's own rounding can reach on both sides in any order of summation (each side's
    `worst`, with the harness's own arithmetic as in `noise_bound`), never less than the statistical bound."""
    k, floor = _sides(tol, harness=True)
    with np.errstate(invalid="ignore", over="ignore"):
        worst = k * (np.asarray(ma.worst) + mb.worst + ma.fixed + mb.fixed) + floor
        return np.nan_to_num(np.maximum(worst, noise_bound(ma, mb, tol, harness=True)), nan=np.inf)


def systematic(d: np.ndarray, allowed: np.ndarray, value: np.ndarray) -> float:
    """How far the signed residuals `d` lean one way across the record: |sum z| / sqrt(sum z^2) with
    z = d / allowed, and the same with z signed by the expected value (a scale error leans with the
    value's sign), the larger. Rounding has no preferred sign, so for independent residuals each is
    about a standard normal's size; a constant offset or scale on every element gives about sqrt(n)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = np.where(np.isfinite(d) & (allowed > 0) & np.isfinite(allowed), d / allowed, 0.0)
    spread = float(np.sqrt(np.sum(z * z)))
    if spread == 0:
        return 0.0
    sign = np.sign(np.broadcast_to(value, z.shape))
    return max(abs(float(z.sum())), abs(float((z * sign).sum()))) / spread


def _deviation(r: np.ndarray, value: np.ndarray) -> np.ndarray:
    """r - value, with equal non-finite values (NaN and NaN, equal infinities) counted as no deviation."""
    with np.errstate(invalid="ignore", over="ignore"):
        same = (r == value) | (np.isnan(r) & np.isnan(value))
        d = np.where(same, 0.0, r - value)
    return np.where(np.isnan(d), np.inf, d)


def residual(a: np.ndarray, b: np.ndarray, ma: Expected, mb: Expected,
             tol: Tolerance) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(e_A, e_B, |e_B - e_A|, the op's own rounding): each side's deviation from the op applied to its own
    inputs, how far apart the two deviations are, and what the op's own rounding allows there."""
    assert ma.value is not None and mb.value is not None
    ea = _deviation(np.asarray(a, dtype=np.float64), ma.value)
    eb = _deviation(np.asarray(b, dtype=np.float64), mb.value)
    allowed = np.nan_to_num(noise_bound(ma, mb, tol, harness=True), nan=np.inf)  # NaN inputs explain anything
    with np.errstate(invalid="ignore", over="ignore"):
        resid = np.abs(eb - ea)
    return ea, eb, np.where(np.isnan(resid), 0.0, resid), allowed  # NaN: the same infinity on both sides


def explain(diff: RecordDiff, a: np.ndarray, b: np.ndarray, ma: Expected, mb: Expected, tol: Tolerance,
            labels: tuple[str, str] = ("A", "B")) -> None:
    """Origin, suspect or propagated, for a diverging record both of whose sides have a model: does
    (B - f(B's inputs)) - (A - f(A's inputs)) stay within the op's own random rounding, and where it
    does not, does the evidence rule every order of summation out? (module doc)"""
    ea, eb, resid, allowed = residual(a, b, ma, mb, tol)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.where(resid == 0, 0.0, resid / np.broadcast_to(allowed, resid.shape))
    diff.judged_by = "noise" if tol.mode == "noise" else "fixed"
    diff.n_unexplained = int((ratio > 1).sum())
    worst = int(np.argmax(ratio)) if ratio.size else 0
    diff.explained_ratio = float(ratio.flat[worst]) if ratio.size else 0.0
    if not diff.n_unexplained:
        diff.role = PROPAGATED
        return
    diff.unexplained_index = tuple(int(k) for k in np.unravel_index(worst, ratio.shape))
    diff.inconsistent = _inconsistent_sides(ea, eb, ma, mb, tol, labels)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        beyond = np.where(resid == 0, 0.0, resid / np.broadcast_to(worst_bound(ma, mb, tol), resid.shape))
        d = eb - ea
    diff.worst_case_ratio = float(beyond.max())
    diff.systematic = systematic(d, np.broadcast_to(allowed, d.shape), np.asarray(ma.value))
    over = f"{diff.n_unexplained} of {diff.size} element(s) beyond random rounding (up to {diff.explained_ratio:.3g}x)"
    if diff.worst_case_ratio > 1 and ma.any_order is None and mb.any_order is None:
        diff.role = ORIGIN
        diff.evidence = (f"{over}; the op is no sum, so no order of summation explains it")
    elif diff.worst_case_ratio > 1:
        diff.role = ORIGIN
        diff.evidence = (f"{int((beyond > 1).sum())} element(s) beyond the most any order of summation can round "
                         f"(up to {diff.worst_case_ratio:.3g}x)")
    elif diff.systematic > Z_SIGMA:
        diff.role = ORIGIN
        diff.evidence = (f"{over}, within what some order of summation can round, but leaning one way across "
                         f"the record (t = {diff.systematic:.3g} > {Z_SIGMA:g}); rounding has no preferred sign")
    else:
        diff.role = SUSPECT
        diff.evidence = (f"{over}, within what some order of summation can round ({diff.worst_case_ratio:.2g} of "
                         f"its worst case) and with no preferred sign (t = {diff.systematic:.2g}): possible "
                         f"rounding of a sorted, grouped or blocked sum, not an origin")


def _inconsistent_sides(ea: np.ndarray, eb: np.ndarray, ma: Expected, mb: Expected, tol: Tolerance,
                        labels: tuple[str, str]) -> str:
    """The side(s) whose deviation from the op applied to their own inputs exceeds the op's own rounding."""
    k, _ = _sides(tol, harness=True)
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
        ea, eb, resid, _ = residual(a, b, ma, mb, tol)
        own = worst_bound(ma, mb, tol)  # no statistics on a few vacuous elements: any order's worst case
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
    if a.dtype.kind != "f" or b.dtype.kind != "f" or a.size == 0 or np.isfinite(a.flat[0]):
        return False  # one finite element settles it (the common case), without a float64 copy of either side
    fa, fb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(~np.isfinite(fa) & ~np.isfinite(fb)))


def _nonfinite(a: np.ndarray) -> str:
    kinds = {("nan" if np.isnan(v) else "inf" if v > 0 else "-inf") for v in np.asarray(a, np.float64).ravel()[:1000]}
    return " or ".join(sorted(kinds))


def _graph_inputs(cfg: Config | None, step: Step, name: str, first: int = 0) -> list[tuple[Step, str]] | None:
    """The records a record is computed from, per records.py; None when the spec does not name it."""
    spec = next((s for s in step_records(cfg) if s.name == name), None) if cfg and step != LOAD else None
    if spec is None:
        return None
    if step == first:  # the loaded parameters; velocities start at zero, which is no record
        params = network(cfg).parameters
        prev: list[tuple[Step, str]] = [(LOAD, p) for p in spec.previous if p in params]
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

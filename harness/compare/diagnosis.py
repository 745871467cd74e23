"""Diagnosing the origins a comparison finds: the first origin of each record gets the pattern its two
tensors show (judge/diagnose.py), phrased with the sides' labels; a scale whose consumers all agree is a
factor that moved."""

from __future__ import annotations

import numpy as np

from harness.judge.diagnose import Diagnosis, Origin, diagnose
from harness.judge.record import RecordDiff, Tolerance
from harness.spec.config import Config
from harness.spec.records import Step, graph, step_label
from harness.store.memstate import Memstate

MAX_DIAGNOSED = 8  # distinct records diagnosed per comparison: the first origins are the ones read


def diagnose_origin(diff: RecordDiff, x: np.ndarray, y: np.ndarray, allowed: np.ndarray | None, tol: Tolerance,
                    cfg: Config | None, sides: tuple[Memstate, Memstate], labels: tuple[str, str]) -> Diagnosis:
    """What `diff` (an origin) looks like; the side whose op is off (`inconsistent`) is the buggy one."""
    with np.errstate(all="ignore"):  # NaN and Inf are data here: nothing is printed on the user's terminal
        return _diagnose(diff, x, y, allowed, tol, cfg, sides, labels)


def _diagnose(diff: RecordDiff, x: np.ndarray, y: np.ndarray, allowed: np.ndarray | None, tol: Tolerance,
              cfg: Config | None, sides: tuple[Memstate, Memstate], labels: tuple[str, str]) -> Diagnosis:
    swap = diff.inconsistent == labels[0]
    a, b = (np.asarray(v, dtype=np.float64) for v in (x, y))
    ref, bug = (b, a) if swap else (a, b)
    ref_ms, bug_ms = (sides[1], sides[0]) if swap else sides
    limit = np.zeros(0)  # "equal" per element: the record's bound (noise or fixed), at least 4 u |value|
    if a.shape == b.shape:
        scale = np.fmax(np.abs(a), np.abs(b))
        base = allowed if allowed is not None else tol.rtol * scale + tol.atol * float(np.nanmax(scale, initial=0.0))
        limit = np.maximum(np.broadcast_to(np.asarray(base, dtype=np.float64), a.shape), 4 * tol.u * scale)
    origin = Origin(diff.step, diff.name, ref, bug, limit, cfg, ref_ms.get, bug_ms.get, tol.u,
                    sides[0].first_step if sides[0].first_step == sides[1].first_step else 0)
    spec = graph(cfg).get(diff.name) if cfg is not None else None
    try:
        found = diagnose(origin, spec.op if spec is not None else "")
    except Exception as e:  # noqa: BLE001 - a diagnosis that fails must never hide the verdict it explains
        found = Diagnosis("none", "no known pattern", f"the diagnosis stopped: {type(e).__name__}: {e}", 0)
    ref_label, bug_label = (labels[1], labels[0]) if swap else labels
    for field in ("detail", "evidence"):  # replace, not format: an error message may hold braces
        setattr(found, field, getattr(found, field).replace("{ref}", ref_label).replace("{bug}", bug_label))
    return found


def moved_factors(records: list[RecordDiff], cfg: Config | None) -> None:
    """A record that is c times the other side's while every record computed from it at that step agrees: the
    factor moved to a consumer (a port applying 1/m to dW instead of dZ2), and training is unaffected."""
    if cfg is None:
        return
    by: dict[tuple[Step, str], RecordDiff] = {(r.step, r.name): r for r in records}
    for r in records:
        d = r.diagnosis
        if d is None or d.kind != "scale" or not d.factor or abs(np.log(abs(d.factor))) <= 0.01:
            continue  # a factor of 1.00001 is lost in the rounding downstream anyway, moved or not
        consumers = [s.name for s in graph(cfg).values() if r.name in s.inputs]
        judged = [by.get((r.step, n)) for n in consumers]
        if consumers and all(j is not None and bool(j) for j in judged):
            d.kind = "moved_factor"
            d.detail = (f"{d.detail.split(' at every element')[0]}, yet {', '.join(consumers)} at "
                        f"{step_label(r.step)} agree: the factor moved to where this record is used, and training is "
                        f"unaffected")

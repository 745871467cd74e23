"""Records whose noise bound says nothing: where the bound is larger than every value the record
holds, |A-B| within it proves nothing (a loss whose P[y] is near 0 divides a probability's rounding
by P[y]). Such elements are judged instead by each side's consistency with its own inputs, or
said to be not judged; they are never "within noise".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Vacuous:
    """Where a record's bound is vacuous, and what the consistency check made of it. Truthy when
    every such element was judged and found consistent on both sides."""

    n: int  # elements that differ and whose bound exceeds the record's largest magnitude
    scale: float  # the record's largest finite |value|, either side
    bound: float  # the largest bound among those elements
    n_inconsistent: int = 0  # of them, where (B - f(B's inputs)) - (A - f(A's inputs)) exceeds the op's own rounding
    n_unjudged: int = 0  # of them, where the op's own rounding is vacuous too (or there is no model)
    worst_index: tuple[int, ...] | None = None  # the worst inconsistent element
    worst_ratio: float = 0.0  # its residual over the op's own rounding

    def __bool__(self) -> bool:
        return not self.n_inconsistent and not self.n_unjudged


def vacuous_mask(a: np.ndarray, b: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask, scale): the elements, finite and different on the two sides, whose bound exceeds the
    record's largest finite magnitude `scale` (the bound would pass any value the record holds)."""
    with np.errstate(invalid="ignore", over="ignore"):  # the common case first, without float64 copies
        top = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
        if np.isfinite(top) and float(np.max(allowed, initial=0.0)) <= top:
            return np.zeros(np.shape(a), dtype=bool), top
    fa, fb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(fa) & np.isfinite(fb)
        mags = np.fmax(np.abs(fa), np.abs(fb))
        scale = float(np.max(mags, where=finite, initial=0.0))
        bound = np.broadcast_to(np.asarray(allowed, dtype=np.float64), fa.shape)
        return finite & (fa != fb) & ~(bound <= scale), scale


def judge_vacuous(mask: np.ndarray, scale: float, allowed: np.ndarray, resid: np.ndarray | None,
                  own: np.ndarray | None) -> Vacuous:
    """Judge the masked elements by consistency: `resid` is |(B - f(B's inputs)) - (A - f(A's inputs))| and
    `own` the op's own rounding on both sides (None without a model). An element whose `own` is vacuous too
    is not judged."""
    bound = np.broadcast_to(np.asarray(allowed, dtype=np.float64), mask.shape)
    out = Vacuous(int(mask.sum()), scale, float(np.max(np.where(mask, bound, 0.0), initial=0.0)))
    if resid is None or own is None:
        out.n_unjudged = out.n
        return out
    own = np.broadcast_to(np.asarray(own, dtype=np.float64), mask.shape)
    judgeable = mask & (own <= scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(judgeable & (resid > 0), resid / own, 0.0)  # (shape of the record)
    out.n_unjudged = int((mask & ~judgeable).sum())
    out.n_inconsistent = int((ratio > 1).sum())
    if out.n_inconsistent:
        worst = int(np.argmax(ratio))
        out.worst_index = tuple(int(k) for k in np.unravel_index(worst, ratio.shape))
        out.worst_ratio = float(ratio.flat[worst])
    return out

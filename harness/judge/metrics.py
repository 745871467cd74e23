"""Element metrics of one record pair, computed in cache-sized chunks on every core.

`element_metrics` is the comparator's inner loop: for two float arrays of one shape and the |A-B|
allowed per element it finds the elements over the bound, the worst one, the largest absolute,
relative and ULP differences and the NaN/Inf counts. It reads both sides once, a chunk of elements at
a time, so its memory is a few chunks however large the record, and splits the chunks between threads
(numpy releases the GIL inside each operation).

Each chunk first takes a fast path in the comparison dtype: one compiled pass (kernel.c, built on
first use) where a C compiler is, else a handful of numpy passes over data that stays in cache, with
the same figures bit for bit. A chunk holding NaN, Inf, a sign change, a zero against a nonzero or an
overflow is done again by the exact path in float64, which is what the comparator always did. The
paths give the same figures up to the rounding of |A-B| in the comparison dtype.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from harness.judge import kernel

CHUNK = 1 << 17  # elements per chunk: four float32 buffers of this size stay in a 2 MB L2 cache
WORKERS = max(1, min(int(os.environ.get("MEMSTATE_THREADS") or os.cpu_count() or 1), 8))
_pool: ThreadPoolExecutor | None = None
_local = threading.local()


@dataclass
class Metrics:
    """What one chunk, or a whole record, contributes; `worst` is a flat index into the record."""

    n_over: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulp: float = 0.0
    worst_ratio: float = 0.0
    worst: int = 0
    nan_a: int = 0
    nan_b: int = 0
    inf_a: int = 0
    inf_b: int = 0

    def merge(self, other: Metrics) -> None:
        """Fold a later chunk in; ties keep the earlier worst element, as one argmax would."""
        if other.worst_ratio > self.worst_ratio:
            self.worst_ratio, self.worst = other.worst_ratio, other.worst
        self.n_over += other.n_over
        self.max_abs = max(self.max_abs, other.max_abs)
        self.max_rel = max(self.max_rel, other.max_rel)
        self.max_ulp = max(self.max_ulp, other.max_ulp)
        self.nan_a += other.nan_a
        self.nan_b += other.nan_b
        self.inf_a += other.inf_a
        self.inf_b += other.inf_b


def _ordered(x: np.ndarray) -> np.ndarray:
    """Floats mapped to integers that count ULPs (monotone through zero), as float64."""
    bits = x.view(np.int32 if x.dtype == np.float32 else np.int64).astype(np.float64)
    top = float(2**31) if x.dtype == np.float32 else float(2**63)
    return np.where(bits < 0, -top - bits, bits)


def exact_chunk(x: np.ndarray, y: np.ndarray, allowed: np.ndarray | None, rtol: float, atol_abs: float,
                exact: bool, offset: int = 0) -> Metrics:
    """The float64 path: every special value handled. `x`, `y` are already in the comparison dtype;
    `allowed` is the bound (None: fixed mode, rtol * max(|a|,|b|) + atol_abs; `exact`: zero)."""
    m = Metrics()
    da, db = x.astype(np.float64), y.astype(np.float64)
    m.nan_a, m.nan_b = int(np.isnan(da).sum()), int(np.isnan(db).sum())
    m.inf_a, m.inf_b = int(np.isinf(da).sum()), int(np.isinf(db).sum())
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same = (da == db) | (np.isnan(da) & np.isnan(db))  # equal, equal infinities, or NaN on both
        err = np.where(same, 0.0, np.abs(da - db))
        err = np.where(np.isnan(err), np.inf, err)  # NaN against a number
        scale = np.fmax(np.abs(da), np.abs(db))
        scale = np.where(np.isfinite(scale), scale, 0.0)
        if allowed is None:
            allowed = atol_abs + rtol * scale
        else:
            allowed = np.maximum(np.nan_to_num(allowed.astype(np.float64), nan=0.0), 0.0)  # NaN allows nothing
        # a NaN against a number, or an infinity against a finite value, is never within any bound
        ratio = (np.where(err == 0, 0.0, np.inf) if exact else
                 np.where(err == 0, 0.0, np.where(np.isinf(err), np.inf, err / allowed)))
        rel = np.where(err == 0, 0.0, err / np.where(scale > 0, scale, np.inf))
        rel = np.where(np.isnan(rel), np.inf, rel)  # an infinity against a finite value
        ulp = np.where(same, 0.0, np.abs(_ordered(x) - _ordered(y)))
    if not x.size:
        return m
    worst = int(np.argmax(ratio))
    m.n_over = int((ratio > 1).sum())
    m.max_abs, m.max_rel, m.max_ulp = float(err.max()), float(rel.max()), float(ulp.max())
    m.worst_ratio, m.worst = float(ratio.flat[worst]), offset + worst
    return m


def _buffers(n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """This thread's scratch arrays (allocating per chunk would fault fresh pages in every time)."""
    key = (n, dtype)
    if getattr(_local, "key", None) != key:
        ints = np.int32 if dtype == np.float32 else np.int64
        _local.key = key
        _local.bufs = (np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype), np.empty(n, ints))
    return _local.bufs


def _fast_chunk(x: np.ndarray, y: np.ndarray, allowed: np.ndarray, offset: int) -> Metrics | None:
    """The comparison-dtype path for finite values of one sign per element; None sends the chunk to
    `exact_chunk`. x, y: (k,) in the comparison dtype, allowed: (k,) the bound."""
    k = x.size
    d, s, t, u = (b[:k] for b in _buffers(CHUNK, x.dtype))
    with np.errstate(all="ignore"):
        np.subtract(x, y, out=d)
        np.abs(d, out=d)  # |A-B|, (k,)
        max_abs = d.max()
        if not np.isfinite(max_abs):  # NaN or Inf in a side, or a difference that overflows
            return None
        np.divide(d, allowed, out=t)  # ratio, (k,)
        worst = int(t.argmax())
        ratio = t[worst]
        if not 0 <= ratio <= np.finfo(t.dtype).max or t.min() < 0:  # NaN (0 over a zero or NaN bound), a negative
            return None  # bound, or an infinite ratio: over a zero bound, or beyond the dtype's range (float64 holds it)
        n_over = int(np.count_nonzero(t > 1)) if ratio > 1 else 0
        np.abs(x, out=s)
        np.abs(y, out=t)
        np.maximum(s, t, out=s)  # max(|a|, |b|)
        np.divide(d, s, out=s)  # relative difference; 0/0 is NaN, which fmax skips
        max_rel = np.fmax.reduce(s)
        if not max_rel < 1:  # opposite signs or a zero against a nonzero: ULPs need the exact path
            return None
        ints = u.dtype
        np.subtract(x.view(ints), y.view(ints), out=u)  # one sign per element: no overflow but -0 vs +0
        np.abs(u, out=u)
        max_ulp = max(int(u.max()), 0)  # -0 against +0 wraps to the most negative integer: ignored
    return Metrics(n_over, float(max_abs), 0.0 if np.isnan(max_rel) else float(max_rel), float(max_ulp),
                   float(ratio), offset + worst)


def _run_range(a: np.ndarray, b: np.ndarray, allowed: np.ndarray | None, cmp: np.dtype, rtol: float,
              atol_abs: float, exact: bool, lo: int, hi: int) -> Metrics:
    """Metrics of flat elements lo..hi, chunk by chunk."""
    total = Metrics()
    fast = allowed is not None and not exact
    compiled = fast and kernel.supports(cmp, allowed.dtype)  # one pass, not fifteen
    for i in range(lo, hi, CHUNK):
        j = min(i + CHUNK, hi)
        x, y = a[i:j], b[i:j]
        al = allowed[i:j] if allowed is not None else None
        with np.errstate(over="ignore", invalid="ignore"):  # too large for cmp is infinite there
            if x.dtype != cmp or y.dtype != cmp:  # judged at the lower precision
                x, y = x.astype(cmp), y.astype(cmp)
            if fast and not compiled and al is not None and al.dtype != cmp:
                al = al.astype(cmp)  # the kernel rounds the bound to cmp element by element, as this does
        if compiled:
            got = kernel.chunk(x, y, al)
            part = Metrics(*got[:5], i + got[5]) if got else None
        else:
            part = _fast_chunk(x, y, al, i) if fast else None
        if part is None:
            part = exact_chunk(x, y, None if allowed is None else allowed[i:j], rtol, atol_abs, exact, i)
        total.merge(part)
    return total


def _largest_finite(a: np.ndarray, cmp: np.dtype) -> float:
    """max |value| over the finite values of a flat array judged at `cmp`, chunk by chunk."""
    top = 0.0
    for i in range(0, a.size, CHUNK):
        with np.errstate(over="ignore"):
            x = np.abs(a[i:i + CHUNK].astype(cmp).astype(np.float64))
        x = x[np.isfinite(x)]
        top = max(top, float(x.max(initial=0.0)))
    return top


def element_metrics(a: np.ndarray, b: np.ndarray, cmp: np.dtype, allowed: np.ndarray | None = None,
                    rtol: float = 0.0, atol: float = 0.0) -> Metrics:
    """Metrics of two float arrays of one shape judged at `cmp`: against `allowed` (broadcastable to the
    shape) when given, else |A-B| <= rtol * max(|A|,|B|) + atol * (largest finite |value| in the
    record), which with rtol = atol = 0 means exact equality."""
    cmp = np.dtype(cmp)
    fa, fb = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)  # views of the mapped file
    exact = allowed is None and rtol == 0 and atol == 0
    flat_allowed = None
    if allowed is not None:
        allowed = np.asarray(allowed)
        flat_allowed = (np.broadcast_to(allowed, a.shape).reshape(-1) if allowed.size != a.size
                        else np.ascontiguousarray(allowed).reshape(-1))
    atol_abs = 0.0
    if allowed is None and not exact:
        scale = max(_largest_finite(fa, cmp), _largest_finite(fb, cmp))
        atol_abs = atol * max(scale, float(np.finfo(cmp).tiny))
    n = fa.size
    if WORKERS < 2 or n < 2 * CHUNK:
        return _run_range(fa, fb, flat_allowed, cmp, rtol, atol_abs, exact, 0, n)
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="memstate-compare")
    per = -(-n // (WORKERS * CHUNK)) * CHUNK  # whole chunks per worker
    jobs = [_pool.submit(_run_range, fa, fb, flat_allowed, cmp, rtol, atol_abs, exact, lo, min(lo + per, n))
            for lo in range(0, n, per)]
    total = Metrics()
    for job in jobs:
        total.merge(job.result())
    return total

"""Sums: the rounding of a sum of n terms in unknown order is a random walk over its partial sums, whose
size follows from the terms themselves; matmuls and batch sums are such sums."""

from __future__ import annotations

import numpy as np

def sum_sigma(n: np.ndarray, total: np.ndarray, squares: np.ndarray, u: float,
              ordered: np.ndarray | float = 0.0) -> np.ndarray:
    """Standard deviation of the rounding of a sum of n nonzero terms added one at a time.

    Each addition rounds its partial sum s_k by at most u|s_k|, uniformly (variance <= u^2 s_k^2 / 3),
    so the variance is u^2/3 * sum_k s_k^2 (plus `squares` for the products' own rounding). Two
    estimates of sum_k s_k^2 are added: terms in an order that does not follow their signs, with mean
    mu = total/n and variance v = squares/n - mu^2, give E[s_k^2] = k^2 mu^2 + k v, summing to
    n total^2 / 3 + (n squares - total^2) / 2; and `ordered`, the partial sums of the terms in index
    order, forwards or backwards, which is what a loop over pixels meets when trained weights are
    smooth across the image (see `dot`). Blocked and pairwise orders round less than either.
    """
    spread = np.maximum(n * squares - total * total, 0.0)
    return np.sqrt(u * u / 3 * (n * total * total / 3 + spread / 2 + ordered + squares))


def _blocks(x: np.ndarray, k: int) -> np.ndarray:
    """(p, n) zero-padded to n' = a multiple of k and split into (n'/k, p, k)."""
    x = np.pad(x, [(0, 0), (0, -x.shape[1] % k)])
    return x.reshape(x.shape[0], -1, k).transpose(1, 0, 2)


def ordered_partial_sums(a: np.ndarray, b: np.ndarray, value: np.ndarray) -> np.ndarray:
    """An estimate of sum_k s_k^2 for the sums of a @ b taken in index order, forwards or backwards
    (the larger), from the running totals at block boundaries: each block's nonzero terms are
    counted at the larger of the running totals on either side of it. Blocks of about sqrt(n) terms
    keep this at the cost of two more matmuls; float32 is plenty for an estimate."""
    n = a.shape[1]
    k = max(1, int(np.ceil(np.sqrt(n))))
    ab, bb = _blocks(a, k), _blocks(b.T, k).transpose(0, 2, 1)  # (B, p, k), (B, k, q)
    partial = (ab @ bb).astype(np.float32)  # (B, p, q): each block's sum
    counts = (ab != 0).astype(np.float32) @ (bb != 0).astype(np.float32)  # (B, p, q)
    after = np.cumsum(partial, axis=0)  # running total after each block
    before = after - partial
    forwards = np.maximum(np.abs(before), np.abs(after))
    total = value.astype(np.float32)
    backwards = np.maximum(np.abs(total - before), np.abs(total - after))  # the same, summed from the end
    return np.maximum((counts * forwards * forwards).sum(axis=0),
                      (counts * backwards * backwards).sum(axis=0)).astype(np.float64)  # (p, q)


def dot(a: np.ndarray, b: np.ndarray, u: float, ordered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """a @ b in float64 and the sigma of its rounding, for (p, n) @ (n, q). `ordered` adds the
    index-order estimate, for sums over pixels, whose weights grow smooth across the image as they
    train; sums over the (shuffled) batch, hidden units or classes have no such order."""
    value = a @ b  # (p, q)
    squares = (a * a) @ (b * b)  # (p, q)
    if np.all(b != 0):
        n = np.count_nonzero(a, axis=1).astype(np.float64)[:, None] * np.ones((1, b.shape[1]))
    elif np.all(a != 0):
        n = np.ones((a.shape[0], 1)) * np.count_nonzero(b, axis=0).astype(np.float64)[None, :]
    else:
        n = (a != 0).astype(np.float64) @ (b != 0).astype(np.float64)
    extra = ordered_partial_sums(a, b, value) if ordered else 0.0
    return value, sum_sigma(n, value, squares, u, extra)


def batch_sum(t: np.ndarray, u: float) -> tuple[np.ndarray, np.ndarray]:
    """t summed over axis 0 (the batch) in float64 and the sigma of its rounding."""
    value = t.sum(axis=0)
    return value, sum_sigma(np.count_nonzero(t, axis=0).astype(np.float64), value, (t * t).sum(axis=0), u)


def rss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt((a*a) @ (b*b)): how independent errors a, each scaled by |b|, add up in a @ b."""
    return np.sqrt((a * a) @ (b * b))

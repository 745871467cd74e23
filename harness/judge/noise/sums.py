"""Sums: the rounding of a sum of n terms in unknown order is a random walk over its partial sums, whose
size follows from the terms themselves (`sum_sigma`); matmuls and batch sums are such sums. A correct
order need not round at random, so each sum also has a deterministic worst case over every order
(`sum_worst`): what no correct implementation can exceed."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from harness.judge import kernel

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


def sum_worst(n: np.ndarray, value: np.ndarray, magnitude: np.ndarray, u: float) -> np.ndarray:
    """The most the rounding of a sum of n nonzero terms can reach in any order of addition (sequential,
    sorted, blocked, a tree): n - 1 additions, each rounding a partial sum of some of the terms by at most
    u times its size, and no partial sum exceeds the larger of P (the positive terms' total) and N (the
    negative terms' magnitude), max(P, N) = (sum|t| + |sum t|) / 2; plus u sum|t| for the products' own
    rounding. `value` is sum t, `magnitude` sum |t|. First order in u, as sum_sigma."""
    top = (magnitude + np.abs(value)) / 2  # max(P, N)
    return u * (np.maximum(n - 1, 0.0) * top + magnitude)


# Rows and columns of a @ b estimated at a time: their blocks' sums, (nb, 256, 128), stay small (7 MB at
# 784 terms). 128 columns let BLAS's kernels run full width on each (256, k) @ (k, 128): at (1000 x 784) @
# (784 x 800) 63 ms a call against 78 ms for (1024, 32), the same figures bit for bit.
TILE = (256, 128)


def ordered_partial_sums(a: np.ndarray, b: np.ndarray, value: np.ndarray) -> np.ndarray:
    """An estimate of sum_k s_k^2 for the sums of a @ b taken in index order, forwards or backwards
    (the larger), from the running totals at block boundaries: each block's nonzero terms are
    counted at the larger of the running totals on either side of it. Blocks of about sqrt(n) terms
    keep this at the cost of one more matmul, one tile of the result at a time (memory of a few MB).
    The pass over the blocks runs compiled where it can (kernel.c `ordered_sums`), else in numpy: the
    same figures, bit for bit."""
    (p, n), q = a.shape, b.shape[1]
    k = max(1, int(np.ceil(np.sqrt(n))))
    starts = range(0, n, k)
    dense = bool(np.all(b != 0))  # weights: a block's count of nonzero terms is a's alone
    out = np.zeros((p, q))
    if n == 0:
        return out  # no terms, no partial sums
    rows, cols = TILE
    run = kernel.ordered if kernel.has_ordered() else _ordered_pass
    for p0 in range(0, p, rows):
        pieces = [a[p0:p0 + rows, j:j + k] for j in starts]  # (r, k) each: views, which BLAS reads in place
        counts = np.ascontiguousarray(np.add.reduceat(a[p0:p0 + rows] != 0, list(starts), axis=1, dtype=np.int64).T,
                                      dtype=np.float32)  # (nb, r): each block's nonzero terms in each row
        full = np.empty((len(pieces), len(pieces[0]), min(cols, q)))  # (nb, r, c): each block's sum, reused
        for q0 in range(0, q, cols):
            sides = [b[j:j + k, q0:q0 + cols] for j in starts]  # (k, c) each
            c = sides[0].shape[1]
            blocks = full if c == full.shape[2] else np.empty(full.shape[:2] + (c,))  # the last strip may be narrower
            for x, y, into in zip(pieces, sides, blocks):
                np.matmul(x, y, out=into)
            if not dense:
                counts = np.stack([(x != 0).astype(np.float32) @ (y != 0).astype(np.float32)
                                   for x, y in zip(pieces, sides)])  # (nb, r, c)
            tile = (slice(p0, p0 + rows), slice(q0, q0 + cols))
            total = np.asarray(value[tile], dtype=np.float64)  # (r, c)
            run(blocks, counts, total, out[tile])
    return out  # (p, q)


def _ordered_pass(blocks: np.ndarray, counts: np.ndarray, total: np.ndarray, out: np.ndarray) -> None:
    """kernel.c's `ordered_sums` in numpy, the same operations in the same order."""
    running = np.zeros_like(total)  # (r, c)
    forwards, backwards = np.zeros_like(total), np.zeros_like(total)
    for block, count in zip(blocks, counts):
        count = count if count.ndim == 2 else count[:, None]  # (r, c) or (r, 1)
        after = running + block  # the running total after this block
        top = np.maximum(np.abs(running), np.abs(after))
        forwards += count * top * top
        top = np.maximum(np.abs(total - running), np.abs(total - after))  # the same, summed from the end
        backwards += count * top * top
        running = after
    out[...] = np.maximum(forwards, backwards)


Worst = Callable[..., np.ndarray]  # a sum's worst case, computed only when a residual asks for it


class Dot(NamedTuple):
    """A sum a @ b as the model sees it: its float64 value, the sigma of its rounding, its worst case over every
    order, and the squares of its terms summed, (a*a) @ (b*b), which a bound carried through it may reuse."""

    value: np.ndarray  # (p, q)
    sigma: np.ndarray  # (p, q)
    worst: Worst
    squares: np.ndarray  # (p, q)


def dot(a: np.ndarray, b: np.ndarray, u: float, ordered: bool = False,
        operand: tuple[float, float] = (0.0, 0.0)) -> Dot:
    """a @ b in float64, the sigma of its rounding and its worst case over every order (sum_worst), for
    (p, n) @ (n, q). `ordered` adds the index-order estimate, for sums over pixels, whose weights grow
    smooth across the image as they train; sums over the (shuffled) batch, hidden units or classes have
    no such order. `operand` (relative, absolute): a side that rounds both operands before multiplying
    (TF32, bfloat16, float16 matmuls; spec/precision.py) adds `operand_sigma` and `operand_worst`."""
    value = a @ b  # (p, q)
    squares = (a * a) @ (b * b)  # (p, q)
    if np.all(b != 0):
        n = np.count_nonzero(a, axis=1).astype(np.float64)[:, None] * np.ones((1, b.shape[1]))
    elif np.all(a != 0):
        n = np.ones((a.shape[0], 1)) * np.count_nonzero(b, axis=0).astype(np.float64)[None, :]
    else:
        # counts of nonzero products: whole numbers below 2^24, exact in float32 in any order (half a float64 matmul)
        n = ((a != 0).astype(np.float32) @ (b != 0).astype(np.float32)).astype(np.float64)
    extra = ordered_partial_sums(a, b, value) if ordered else 0.0
    magnitude: list[np.ndarray] = []  # sum |t|, one matmul, made at the first call

    def worst(start: np.ndarray | float = 0.0) -> np.ndarray:
        """`start`: a term the sum may begin with (a bias a port adds first), one term more."""
        if not magnitude:
            magnitude.append(np.abs(a) @ np.abs(b))  # (p, q)
        terms = n + (np.asarray(start) != 0)
        total = sum_worst(terms, value + start, magnitude[0] + np.abs(start), u)
        return total + (operand_worst(a, b, magnitude[0], operand) if operand[0] else 0.0)
    sigma = sum_sigma(n, value, squares, u, extra)
    if operand[0]:
        sigma = np.sqrt(sigma * sigma + operand_sigma(a, b, squares, operand) ** 2)
    return Dot(value, sigma, worst, squares)


def operand_sigma(a: np.ndarray, b: np.ndarray, squares: np.ndarray, operand: tuple[float, float]) -> np.ndarray:
    """The sigma of a @ b whose operands are each rounded first, relatively by at most r (an operand below the
    format's range by at most e instead): a product a_k b_k moves by a_k b_k (d_a + d_b), d uniform within
    +-r, variance 2 r^2 / 3 (a_k b_k)^2; summed over k, r sqrt(2/3) sqrt((a*a) @ (b*b)) (`squares`), plus e
    times the other operand's sizes."""
    r, e = operand
    sigma = r * np.sqrt(2 / 3) * np.sqrt(squares)
    if e:
        sigma = sigma + e * np.sqrt(((a * a).sum(axis=1)[:, None] + (b * b).sum(axis=0)[None, :]) / 3)  # (p, q)
    return sigma


def operand_worst(a: np.ndarray, b: np.ndarray, magnitude: np.ndarray, operand: tuple[float, float]) -> np.ndarray:
    """The most that rounding (operand_sigma) can reach: 2 r |a_k b_k| per product, 2 r |a| @ |b|
    (`magnitude`) in all, plus e times the other operand's sizes."""
    r, e = operand
    worst = 2 * r * magnitude
    if e:
        worst = worst + e * (np.abs(a).sum(axis=1)[:, None] + np.abs(b).sum(axis=0)[None, :])  # (p, q)
    return worst


def batch_sum(t: np.ndarray, u: float) -> tuple[np.ndarray, np.ndarray, Worst]:
    """t summed over axis 0 (the batch) in float64, the sigma of its rounding and its worst case."""
    value = t.sum(axis=0)
    n = np.count_nonzero(t, axis=0).astype(np.float64)
    return value, sum_sigma(n, value, (t * t).sum(axis=0), u), lambda: sum_worst(n, value, np.abs(t).sum(axis=0), u)


def rss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt((a*a) @ (b*b)): how independent errors a, each scaled by |b|, add up in a @ b."""
    return np.sqrt((a * a) @ (b * b))


def proportional_rss(squares: np.ndarray, scale: tuple[float, float], other: np.ndarray) -> np.ndarray:
    """rss(k|a| + f, b) (or rss(b, k|a| + f)) with no matmul, from the sum a @ b's own `squares`,
    (a*a) @ (b*b), and `other`, the sums of b*b over the summed index (broadcast against squares).
    Element by element an rss is a 2-norm, so Minkowski's inequality bounds it by its two parts' norms,
    k sqrt(squares) + f sqrt(other): never less than the matmul, and more by at most the smaller part.
    For a source's bound (stream.py) f is the smallest normal number, so that is at the scale of the
    floor every bound already holds. One matmul saved each: rss took 41 ms at (1000 x 784) @ (784 x 800)."""
    k, f = scale
    return k * np.sqrt(squares) + f * np.sqrt(other)

"""The fingerprints a port's bug leaves in one record's two tensors, each a pure test of the reference side's
values `ref` against the buggy side's `bug` within a per-element tolerance `tol`: a scale, a sign, an offset
by a constant, a precision, a layout, a wrong normalisation axis, a mask, a collapsed reduction, a partial
difference. Each returns (detail, evidence) when it fits at every element it claims, else None: a pattern
that holds on 90% of the elements is not that pattern.
"""

from __future__ import annotations

import math

import numpy as np

Found = tuple[str, str] | None  # (detail, evidence)


def fits(x: np.ndarray, y: np.ndarray, tol: np.ndarray) -> bool:
    """x == y within tol at every element (NaN nowhere)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(x - y) <= tol))


def worst(x: np.ndarray, y: np.ndarray, tol: np.ndarray) -> float:
    """The largest |x - y| / tol, for the evidence line."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        r = np.abs(x - y) / np.maximum(tol, np.finfo(np.float64).tiny)
    return float(np.nanmax(r, initial=0.0))


def ratio_of(ref: np.ndarray, bug: np.ndarray) -> float | None:
    """The least-squares c of bug = c * ref, or None when ref is all zero."""
    den = float(np.vdot(ref, ref))
    return float(np.vdot(ref, bug)) / den if den > 0 else None


def scale(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> float | None:
    """c when bug = c * ref at every element (c not 1), else None."""
    c = ratio_of(ref, bug)
    if c is None or not np.isfinite(c) or c == 0 or abs(c - 1) < 1e-12 or not fits(bug, c * ref, tol):
        return None
    return c


def zeros(ref: np.ndarray, bug: np.ndarray) -> Found:
    if ref.size > 1 and not np.any(bug) and np.any(ref):
        return "{bug} is 0 at every element: never computed, never written, or masked out entirely?", \
            f"all {bug.size} elements of {{bug}} are 0; {int(np.count_nonzero(ref))} of {{ref}}'s are not"
    return None


def complement(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> Found:
    """bug = 1 - ref: a sigmoid of -z, or a 0/1 mask inverted."""
    if ref.size > 1 and fits(bug, 1 - ref, tol):
        cause = "a 0/1 mask inverted (kept where dropped)?" if np.all((ref == 0) | (ref == 1)) else \
            "sigmoid(-z) where sigmoid(z) was meant?"
        return f"{{bug}} = 1 - {{ref}} at every element: {cause}", \
            f"{ref.size} elements within the bound of 1 - {{ref}} ({worst(bug, 1 - ref, tol):.2g}x at worst)"
    return None


def offset(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> Found:
    """bug = ref + c for one constant c at every element."""
    d = bug - ref
    c = float(np.median(d))
    if ref.size > 1 and c != 0 and fits(bug, ref + c, tol):
        return f"{{bug}} = {{ref}} {'+' if c > 0 else '-'} {abs(c):.6g} at every element (a constant shift missing or added?)", \
            f"{ref.size} elements within the bound of {{ref}} + c ({worst(bug, ref + c, tol):.2g}x at worst)"
    return None


def precision(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray, wide: bool = False) -> Found:
    """bug is ref rounded to N decimals, or ref to 10 (float16, TF32) or 7 (bfloat16) mantissa bits; in a
    float64 run (`wide`) also to float32's 24."""
    for n in range(1, 9):  # %.Nf printing
        r = np.round(ref, n)
        if fits(bug, r, tol) and not fits(bug, ref, tol):
            return f"{{bug}} = {{ref}} rounded to {n} decimals (printed with %.{n}f and read back?)", \
                f"all {ref.size} elements equal {{ref}} rounded to {n} decimals"
    with np.errstate(invalid="ignore", divide="ignore"):
        big = np.abs(ref) > 1e-6 * float(np.max(np.abs(ref), initial=0.0))  # relative error where it means something
        rel = float(np.max(np.abs(bug - ref)[big] / np.abs(ref)[big], initial=0.0)) if big.any() else 0.0
    if 0 < rel and ref.size > 1 and not fits(bug, ref, tol):  # one number is within some bits of any other
        bits = int(np.floor(-np.log2(rel)))
        loose = 2.0 ** -bits * np.abs(ref) + tol + 2.0 ** -bits * 1e-6 * float(np.max(np.abs(ref), initial=0.0))
        single = wide and 22 <= bits <= 25  # float32's rounding, 2^-24 relative, in a float64 run
        if (6 <= bits <= 12 or single) and fits(bug, ref, loose):
            cause = "an op computed in float32 in a float64 run?" if single else \
                "an op computed in lower precision (float16 and TF32 keep 10, bfloat16 7)?"
            return f"{{bug}} = {{ref}} to about {bits} mantissa bits at every element: {cause}", \
                f"|{{ref}}-{{bug}}| <= 2^-{bits} |{{ref}}| at all {ref.size} elements, beyond the bound"
    return None


def layout(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> Found:
    """bug holds ref's values in another arrangement: column-major, rows or columns shifted or reversed."""
    if ref.ndim == 2 and ref.shape[0] > 1 and ref.shape[1] > 1:
        if fits(bug.ravel(order="F"), ref.ravel(), tol.ravel(order="F") if tol.ndim == 2 else tol):
            return "{bug} holds {ref}'s values read in column-major order (row-major meant)", \
                "{bug} read in column-major order equals {ref} read in row-major order at every element"
    side = math.isqrt(ref.shape[1]) if ref.ndim == 2 else 0
    if side >= 8 and side * side == ref.shape[1]:  # each row a square image (28 x 28 pixels) read column by column
        squares = ref.reshape(ref.shape[0], side, side).transpose(0, 2, 1).reshape(ref.shape)
        if not fits(squares, ref, tol) and fits(bug, squares, tol):
            return f"{{bug}} holds each row of {{ref}} as a {side} x {side} image transposed (pixels read " \
                   f"column by column: a column-major image format?)", \
                f"all {ref.size} elements equal {{ref}}'s with each row's {side} x {side} square transposed"
    for axis, what in ((0, "rows"), (1, "columns")):
        if ref.ndim <= axis or ref.shape[axis] < 2:
            continue
        if fits(bug, np.flip(ref, axis), tol):
            return f"{{bug}} = {{ref}} with its {what} reversed", f"all {ref.size} elements equal {{ref}}'s, {what} in reverse order"
        for k in (1, -1, 2, -2, 3, -3):
            if abs(k) < ref.shape[axis] and fits(bug, np.roll(ref, k, axis), tol):
                return f"{{bug}} = {{ref}} with its {what} shifted by {k}", f"all {ref.size} elements equal {{ref}}'s {what} moved by {k}"
    return None


def axis(ref: np.ndarray, bug: np.ndarray) -> Found:
    """A per-sample normalisation (rows of ref sum to 1) taken over another axis or the whole batch."""
    if ref.ndim != 2 or not np.allclose(ref.sum(axis=1), 1, atol=1e-4):
        return None
    rows = bug.sum(axis=1)
    if np.allclose(rows, 1, atol=1e-4):
        return None
    if abs(float(bug.sum()) - 1) < 1e-4:
        return ("{bug} is normalised over the whole batch: its rows sum to "
                f"{float(rows.min()):.3g}..{float(rows.max()):.3g}, the whole matrix to {float(bug.sum()):.6g}"), \
            "{ref}'s rows each sum to 1; {bug}'s sum over every element is 1 (a sum over the matrix where one per sample was meant)"
    cols = bug.sum(axis=0)
    if np.allclose(cols, 1, atol=1e-4):
        return "{bug} is normalised over the batch axis: its columns sum to 1, not its rows", \
            f"{{bug}}'s {bug.shape[1]} column sums are 1; its row sums {float(rows.min()):.3g}..{float(rows.max()):.3g}"
    return None


def mask(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> Found:
    """bug equals ref except on the elements where one of them is exactly 0."""
    zero_ref, zero_bug = ref == 0, bug == 0
    same = np.abs(bug - ref) <= tol
    for where, who in ((zero_ref & ~same, "{ref}"), (zero_bug & ~same, "{bug}")):
        n = int(where.sum())
        if n and bool(np.all(same | where)):
            return (f"{{bug}} equals {{ref}} except at {n} of {ref.size} elements where {who} is 0 and the other is not: a mask "
                    f"applied differently (a leaky relu, relu' as >= instead of >, a dropout mask?)"), \
                f"{ref.size - n} elements agree within the bound; the other {n} all have {who} = 0"
    return None


def collapsed(ref: np.ndarray, bug: np.ndarray) -> Found:
    """bug is one number (or one number broadcast) where ref is a vector: a reduction over every element."""
    if ref.size < 2 or bug.size != 1 and not (bug.size == ref.size and np.all(bug == bug.ravel()[0])):
        return None
    value = float(bug.ravel()[0])
    for what, reference in (("sum", float(ref.sum())), ("mean", float(ref.mean()))):
        if abs(value - reference) <= 1e-5 * (abs(reference) + float(np.abs(ref).sum())):
            return (f"{{bug}} is one number, the {what} over every element of {{ref}} ({value:.6g}): a reduction over the whole "
                    f"matrix where one per row or column was meant"), \
                f"{{ref}} holds {ref.size} values whose {what} is {reference:.6g}"
    return None


def partial(ref: np.ndarray, bug: np.ndarray, tol: np.ndarray) -> Found:
    """Only some rows, columns or one block differ."""
    over = np.abs(bug - ref) > tol
    if ref.ndim != 2 or not over.any():
        return None
    for ax, what in ((1, "rows"), (0, "columns")):
        hit = np.flatnonzero(over.any(axis=ax))
        total = ref.shape[1 - ax]
        if 0 < len(hit) <= total // 2:
            shown = ", ".join(map(str, hit[:8])) + (" ..." if len(hit) > 8 else "")
            block = " (one block)" if hit[-1] - hit[0] + 1 == len(hit) and len(hit) > 1 else ""
            return f"only {len(hit)} of {total} {what} differ{block}: {shown}", \
                f"every element outside those {what} is within the bound"
    return None

"""Elementwise ops: activations (relu, sigmoid, tanh) and the softmax, their values in float64 and the
bounds on their own rounding (a few ulp, and the conditioning of exp, sigmoid and tanh)."""

from __future__ import annotations

import numpy as np

from harness.judge.noise.base import C_ELEM

def activation_value(kind: str, z: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "sigmoid":
        return sigmoid(z)
    return np.tanh(z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def activation_rounding(kind: str, z: np.ndarray, a: np.ndarray, u: float) -> np.ndarray:
    """Bound on |computed - exact| of a = f(z): a few ulp of a, plus f'(z) times a few ulp of z
    (the argument's own rounding inside exp or tanh); zero for relu, which is exact."""
    if kind == "relu":
        return u * np.abs(a)
    slope = a * (1 - a) if kind == "sigmoid" else 1 - a * a
    return C_ELEM * u * (np.abs(a) + np.abs(slope * z))


def softmax_rounding(z: np.ndarray, p: np.ndarray, u: float, stored: bool = False) -> np.ndarray:
    """Bound on |computed - exact| of p = softmax(z) per row, whichever common form computed it:
    exp(z - max) / sum (argument rounding u|z - max|, a sum of 10 terms), exp(z - logsumexp)
    (rounding of logsumexp), or exp(z) / sum without the shift. Below the dtype's smallest normal
    number a side may flush to zero (4 tiny); `stored`: of a side's own recorded p, which it did not
    flush where it is not 0, so there it is off by at most two of the dtype's smallest subnormals."""
    top = z.max(axis=1, keepdims=True)  # (m, 1)
    lse = top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))  # (m, 1)
    rel = z.shape[1] + 2 + np.abs(z - top) + np.abs(top) + np.abs(lse)  # (m, 10)
    info = np.finfo(np.float64 if u < 1e-10 else np.float32)  # the dtype's own limits
    floor = np.where(p != 0, 2 * float(info.smallest_subnormal), 4 * float(info.tiny)) if stored else 4 * info.tiny
    return 2 * u * p * rel + floor

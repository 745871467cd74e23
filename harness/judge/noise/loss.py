"""The loss and its gradient at the logits, from the recorded probabilities: cross-entropy (softmax) or
the mean squared error (sigmoid), with soft targets and log_eps."""

from __future__ import annotations

import numpy as np

from harness.judge.noise.base import C_ELEM, Expected, Inputs
from harness.judge.noise.elementwise import activation_rounding, softmax_rounding
from harness.judge.noise.sums import batch_sum
from harness.spec.config import Config
from harness.spec.network import LABELS, network

def _probs(cfg: Config, inp: Inputs, u: float, stored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The recorded output probabilities and a bound on their own rounding (`stored`: see softmax_rounding)."""
    out = network(cfg).output
    z = inp.cur(out.record("bias_add"))
    p = inp.cur(out.out)
    if cfg.loss == "cross_entropy":
        return p, softmax_rounding(z, p, u, stored)
    return p, activation_rounding("sigmoid", z, p, u)


def _targets(cfg: Config, y: np.ndarray) -> np.ndarray:
    """Y: target_max at the label's class, target_min elsewhere (one-hot by default)."""
    hot = np.eye(10)[y.astype(np.int64)]  # (m, 10)
    return cfg.target_min + (cfg.target_max - cfg.target_min) * hot


def _target_rounding(cfg: Config, y: np.ndarray, u: float) -> np.ndarray | float:
    """Soft targets (0.01, 0.99) are not exact in the dtype: their rounding moves P - Y as P's would."""
    if (cfg.target_min, cfg.target_max) == (0.0, 1.0):
        return 0.0
    return u * np.abs(_targets(cfg, y))


def _loss(cfg: Config, inp: Inputs, u: float, m: float) -> Expected:
    """Cross-entropy from P (a side may take it from the logits: P's rounding covers that); MSE as the
    config's squared_error (mean, sum or half the sum over the 10 outputs), each over the batch by its
    batch_reduction (mean or sum). Where P[y] is tiny its own recorded value, not the flush
    floor, says how precise the side's -log P[y] is (else the bound would exceed any loss)."""
    p, p_err = _probs(cfg, inp, u, stored=True)
    y = inp.cur(LABELS).astype(np.int64)
    p_err = p_err + _target_rounding(cfg, y, u)
    if cfg.loss == "cross_entropy":
        rows = np.arange(len(y))
        picked = p[rows, y] + cfg.log_eps  # (m,)
        with np.errstate(divide="ignore"):
            terms = -np.log(picked)  # (m,)
        value, sigma, worst = batch_sum(terms, u)
        rel_err = p_err[rows, y] / np.maximum(picked, np.finfo(np.float64).tiny)  # |d log p| = |dp| / p
        fixed = (rel_err + C_ELEM * u * np.abs(terms)).sum() + C_ELEM * u * abs(value)
        d = cfg.batch_divisor(int(m))
        return Expected(value / d, sigma / d, fixed / d, lambda: worst() / d)
    diff = p - _targets(cfg, y)  # (m, 10)
    terms = (diff * diff).ravel()
    value, sigma, worst = batch_sum(terms, u)
    fixed = (2 * np.abs(diff) * p_err + C_ELEM * u * terms.reshape(diff.shape)).sum() + C_ELEM * u * abs(value)
    k = cfg.loss_scale / cfg.batch_divisor(int(m))
    return Expected(value * k, sigma * k, fixed * k, lambda: worst() * k)


def _grad_logits(cfg: Config, inp: Inputs, u: float, m: float) -> Expected:
    """dZ2 from the recorded P: (P - Y) / d, or 2 c (P - Y) P (1 - P) / d (c: 1/10, 1 or 1/2 by squared_error;
    d: m or 1 by batch_reduction); an autograd side recomputes P internally, so P's own rounding is
    allowed through."""
    p, p_err = _probs(cfg, inp, u)
    y1 = _targets(cfg, inp.cur(LABELS))
    p_err = p_err + _target_rounding(cfg, inp.cur(LABELS), u)
    d = cfg.batch_divisor(int(m))
    if cfg.loss == "cross_entropy":
        value = (p - y1) / d
        return Expected(value, 0.0, (p_err + C_ELEM * u * np.abs(p - y1)) / d + u * np.abs(value))
    scale = 2 * cfg.loss_scale / d
    value = scale * (p - y1) * p * (1 - p)
    slope = scale * np.abs(p * (1 - p) + (p - y1) * (1 - 2 * p))  # |d value / d p|
    return Expected(value, 0.0, slope * p_err + 2 * C_ELEM * u * np.abs(value))

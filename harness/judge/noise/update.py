"""The optimizer: a parameter's update by SGD, momentum or Adam (with weight decay and the learning-rate
schedule), its buffers, and how far they move when the gradients move by their bounds."""

from __future__ import annotations

import numpy as np

from harness.judge.noise.base import C_ELEM, UNIT_ROUNDOFF, Expected, Inputs
from harness.spec.config import Config
from harness.spec.network import gradient_of
from harness.spec.records import adam_m, adam_v, velocity

def _update(name: str, p: str, cfg: Config, inp: Inputs, u: float) -> Expected:
    """A parameter's optimizer buffers and its update; g = G + weight_decay * p throughout, and the
    learning rate (and Adam's bias corrections) are the float64 numbers of the step."""
    w0, grad = inp.prev(p), inp.cur(gradient_of(p))
    g, g_err = grad + cfg.weight_decay * w0, np.abs(grad) + cfg.weight_decay * np.abs(w0)
    lr = cfg.lr_at(inp.step)
    if name == velocity(p):
        v0 = inp.prev(name)
        value = cfg.momentum * v0 + g
        return Expected(value, 0.0, C_ELEM * u * (cfg.momentum * np.abs(v0) + g_err + np.abs(value)))
    if name == adam_m(p):
        m0, b1 = inp.prev(name), cfg.adam_beta1
        value = b1 * m0 + (1 - b1) * g
        return Expected(value, 0.0, C_ELEM * u * (b1 * np.abs(m0) + (1 - b1) * g_err + np.abs(value)))
    if name == adam_v(p):
        v0, b2 = inp.prev(name), cfg.adam_beta2
        value = b2 * v0 + (1 - b2) * g * g
        return Expected(value, 0.0, C_ELEM * u * (b2 * v0 + 3 * (1 - b2) * g_err * np.abs(g) + np.abs(value)))
    if cfg.optimizer == "adam":
        r = _adam_step(cfg, inp.step, inp.cur(adam_m(p)), inp.cur(adam_v(p)))
        value = w0 - r
        return Expected(value, 0.0, C_ELEM * u * (np.abs(w0) + 2 * np.abs(r) + np.abs(value))
                        + _corrections_rounding(cfg, inp.step) * np.abs(r))
    step = inp.cur(velocity(p)) if cfg.optimizer == "momentum" else g
    step_err = np.abs(step) if cfg.optimizer == "momentum" else g_err
    value = w0 - lr * step
    return Expected(value, 0.0, C_ELEM * u * (np.abs(w0) + lr * step_err + np.abs(value)))


def _adam_corrections(cfg: Config, step: int) -> tuple[float, float]:
    """lr_t / (1 - beta1^t) and sqrt(1 - beta2^t), t = step + 1, in float64."""
    t = step + 1
    return cfg.lr_at(step) / (1 - cfg.adam_beta1 ** t), (1 - cfg.adam_beta2 ** t) ** 0.5


def _corrections_rounding(cfg: Config, step: int) -> float:
    """How far float64 bias corrections may move Adam's step, relatively: beta^t from a pow off by an ulp
    (Go's math.Pow, C's and Python's need not agree), then 1 - beta^t, which cancels: an error of
    u beta^t in beta^t is u beta^t / (1 - beta^t) of the correction (500 u for beta2 = 0.999 at t = 1).
    The step divides by 1 - beta1^t and by the square root of 1 - beta2^t (half its error). float64's u
    whatever the dtype: the docs ask for the corrections in float64, so a float32 run's are exact to it."""
    t = step + 1
    k1, k2 = (b ** t / (1 - b ** t) + 1 if b < 1 else 0.0 for b in (cfg.adam_beta1, cfg.adam_beta2))
    return UNIT_ROUNDOFF["float64"] * (k1 + k2 / 2)


def _adam_step(cfg: Config, step: int, m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """What Adam subtracts: lr_t * m_hat / (sqrt(v_hat) + eps)."""
    size, root2 = _adam_corrections(cfg, step)
    return size * m / (np.sqrt(np.maximum(v, 0.0)) / root2 + cfg.adam_eps)


def _adam_carried(cfg: Config, step: int, m: np.ndarray, v: np.ndarray, dm: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """How far Adam's step r = size * m / (sqrt(v_hat) + eps) may move when m and v move by up to dm
    and dv: r grows with |m| and shrinks with v, so the largest step is taken at |m| + dm and v - dv
    (exact, not first order: near v = 0 the square root's slope has no bound)."""
    low = _adam_step(cfg, step, np.abs(m), v)
    high = _adam_step(cfg, step, np.abs(m) + dm, np.maximum(v - dv, 0.0))
    return high - low

"""The optimizer: a parameter's update by SGD, momentum or Adam (with weight decay and the learning-rate
schedule), its buffers, and how far they move when the gradients move by their bounds."""

from __future__ import annotations

import numpy as np

from harness.judge.noise.base import C_ELEM, Expected, Inputs
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
        return Expected(value, 0.0, C_ELEM * u * (np.abs(w0) + 2 * np.abs(r) + np.abs(value)))
    step = inp.cur(velocity(p)) if cfg.optimizer == "momentum" else g
    step_err = np.abs(step) if cfg.optimizer == "momentum" else g_err
    value = w0 - lr * step
    return Expected(value, 0.0, C_ELEM * u * (np.abs(w0) + lr * step_err + np.abs(value)))


def _adam_corrections(cfg: Config, step: int) -> tuple[float, float]:
    """lr_t / (1 - beta1^t) and sqrt(1 - beta2^t), t = step + 1, in float64."""
    t = step + 1
    return cfg.lr_at(step) / (1 - cfg.adam_beta1 ** t), (1 - cfg.adam_beta2 ** t) ** 0.5


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

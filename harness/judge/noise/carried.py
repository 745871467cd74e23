"""What a record inherits: how far it may move when its inputs of the same step move by their noise
bounds, by the record's op and inputs in the dataflow graph."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.judge.noise.base import Inputs
from harness.judge.noise.loss import _targets
from harness.judge.noise.sums import proportional_rss, rss
from harness.judge.noise.update import _adam_carried
from harness.spec.config import Config
from harness.spec.network import LABELS, gradient_of, network
from harness.spec.records import adam_m, adam_v, graph, velocity


def carried(name: str, cfg: Config, inp: Inputs, bound: Callable[[str], np.ndarray],
            scale: Callable[[str], tuple[float, float] | None] = lambda name: None) -> np.ndarray | float:
    """How far a record may move when its inputs of the same step move by their noise bounds:
    sum over inputs of |d record / d input| * bound(input), to first order (the step's own inputs,
    the previous parameters, carry no bound: the step starts from them).

    With this a record's noise bound is the rounding two correct sides may accumulate from the
    start of the step to this record, so a relu that passes Z1's rounding on is not a divergence.
    Through sums the inputs' bounds add as a root sum of squares (`rss`): their rounding is
    independent from element to element, so it does not line up across the terms of a sum. Where an
    input's bound is k |input| + f (`scale`: a source's, stream.py), the sum's own squares give its rss
    without a matmul (`proportional_rss`).
    """
    spec = graph(cfg)[name]
    op, ins = spec.op, spec.inputs
    if op == "source":
        return 0.0
    if op == "matmul":
        w = inp.prev(spec.previous[0])  # (width, fan_in)
        s, squares = scale(ins[0]), inp.squares.get((ins[0], spec.previous[0]))
        if s is not None and squares is not None:
            return proportional_rss(squares, s, (w * w).sum(axis=1))  # (m, width)
        return rss(bound(ins[0]), w.T)  # (m, width)
    if op == "bias_add":
        return bound(ins[0])
    if op == "activation":
        kind = network(cfg).layer(spec.layer).activation
        dz = bound(ins[0])
        if kind == "relu":
            return dz  # relu moves no more than its input, kink included
        a = inp.cur(name)
        return dz * (a * (1 - a) if kind == "sigmoid" else 1 - a * a)
    if op == "dropout":  # the mask is data: only the scaled input moves
        return bound(ins[0]) * inp.cur(ins[1]) * network(cfg).layer(spec.layer).keep_scale
    if op == "softmax":
        p, dz = inp.cur(name), bound(ins[0])
        return p * (dz + (p * dz).sum(axis=1, keepdims=True))  # dP_i = P_i (dz_i - sum_j P_j dz_j)
    if op == "sigmoid":
        p = inp.cur(name)
        return p * (1 - p) * bound(ins[0])
    probs = network(cfg).output.out
    if op == "loss":
        p, dp = inp.cur(probs), bound(probs)
        y = inp.cur(LABELS).astype(np.int64)
        if cfg.loss == "cross_entropy":
            rows = np.arange(len(y))
            terms = dp[rows, y] / np.maximum(p[rows, y] + cfg.log_eps, np.finfo(np.float64).tiny)  # (m,)
        else:
            terms = (2 * np.abs(p - _targets(cfg, y)) * dp).ravel()  # (m * 10,)
        return float(np.sqrt(np.sum(terms * terms))) * cfg.loss_scale / cfg.batch_divisor(len(y))
    if op == "grad_logits":
        p, dp = inp.cur(probs), bound(probs)
        m = p.shape[0]
        d = cfg.batch_divisor(m)
        if cfg.loss == "cross_entropy":
            return dp / d
        y1 = _targets(cfg, inp.cur(LABELS))
        return 2 * cfg.loss_scale / d * np.abs(p * (1 - p) + (p - y1) * (1 - 2 * p)) * dp
    if op == "grad_weight":
        grad = inp.cur(ins[0])  # (m, width)
        s, squares = scale(ins[1]), inp.squares.get((ins[0], ins[1]))
        if s is not None and squares is not None:
            through_source = proportional_rss(squares, s, (grad * grad).sum(axis=0)[:, None])  # (width, fan_in)
        else:
            through_source = rss(grad.T, bound(ins[1]))
        return rss(bound(ins[0]).T, inp.cur(ins[1])) + through_source  # (width, fan_in)
    if op == "grad_bias":
        return np.sqrt((bound(ins[0]) ** 2).sum(axis=0))
    if op == "grad_activation":
        return rss(bound(ins[0]), inp.prev(spec.previous[0]))  # (m, width of the layer below)
    if op == "grad_preactivation":
        return _preactivation(network(cfg).layer(spec.layer).activation, ins, inp, bound)
    p = spec.previous[-1]  # the parameter an optimizer record belongs to
    if op == "velocity":
        return bound(gradient_of(p))
    if op == "adam_m":
        return (1 - cfg.adam_beta1) * bound(gradient_of(p))
    if op == "adam_v":
        g = inp.cur(gradient_of(p)) + cfg.weight_decay * inp.prev(p)
        return (1 - cfg.adam_beta2) * 2 * np.abs(g) * bound(gradient_of(p))
    if op == "update" and cfg.optimizer == "adam":
        return _adam_carried(cfg, inp.step, inp.cur(adam_m(p)), inp.cur(adam_v(p)), bound(adam_m(p)),
                             bound(adam_v(p)))
    if op == "update":
        return cfg.lr_at(inp.step) * bound(velocity(p) if cfg.optimizer == "momentum" else gradient_of(p))
    raise KeyError(name)


def _preactivation(kind: str, ins: tuple[str, ...], inp: Inputs, bound: Callable[[str], np.ndarray]) -> np.ndarray:
    grad_activation, bias_add, activation = ins
    dda, da, z = bound(grad_activation), inp.cur(grad_activation), inp.cur(bias_add)
    if kind == "relu":  # where Z is within its bound of zero the mask may flip
        return dda * (z > 0) + np.where(np.abs(z) <= bound(bias_add), np.abs(da), 0.0)
    a, daa = inp.cur(activation), bound(activation)
    if kind == "sigmoid":
        return dda * a * (1 - a) + np.abs(da) * np.abs(1 - 2 * a) * daa
    return dda * (1 - a * a) + np.abs(da) * 2 * np.abs(a) * daa

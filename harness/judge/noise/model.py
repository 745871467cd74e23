"""Which form computes each record: the record's op and inputs come from the dataflow graph
(spec/records.py), so a layer is a layer wherever it sits in the network."""

from __future__ import annotations

import numpy as np

from harness.judge.noise.base import C_ELEM, SOURCES, Z_SIGMA, Expected, Inputs
from harness.judge.noise.carried import carried
from harness.judge.noise.elementwise import activation_rounding, activation_value, sigmoid, softmax_rounding
from harness.judge.noise.loss import _grad_logits, _loss
from harness.judge.noise.sums import Worst, batch_sum, dot
from harness.judge.noise.update import _update
from harness.spec.config import Config
from harness.spec.network import INPUT, LABELS, network
from harness.spec.records import RecordSpec, graph


def _forward_matmul(inp: Inputs, x_name: str, w_name: str, u: float) -> tuple[np.ndarray, np.ndarray, Worst]:
    """X W^T, its sigma and its worst case, computed once per step (the matmul and the bias add both use
    it); the first layer sums over pixels, in image order."""
    if (x_name, w_name) not in inp.memo:
        value, sigma, worst, squares = dot(inp.cur(x_name), inp.prev(w_name).T, u, ordered=x_name == INPUT,
                                           operand=inp.precision.operand)
        inp.memo[x_name, w_name] = value, sigma, worst
        if x_name in SOURCES:  # for the bound the source carries into it (carried.py)
            inp.squares[x_name, w_name] = squares
    return inp.memo[x_name, w_name]


def expected(name: str, cfg: Config, inp: Inputs, u: float, absent_rounding: bool = True) -> Expected:
    """The model for one record of one side; raises MissingInput when an input is not recorded
    and KeyError for a name the spec does not know. An input the side declared it does not compute
    (`inp.absent`) is its own model from the side's inputs, and (`absent_rounding`) its rounding joins
    this op's own."""
    model = _op(name, cfg, inp, u)
    if inp.precision.stored[1]:  # float16 storage's underflow: an absolute error wherever a value is tiny
        model.fixed = np.asarray(model.fixed) + C_ELEM * inp.precision.stored[1]
        model.scale = None  # no longer proportional to the record
    absent = [i for i in graph(cfg)[name].inputs if i in inp.absent] if absent_rounding else []
    return _with_absent(model, name, cfg, inp, absent) if absent else model


def _with_absent(model: Expected, name: str, cfg: Config, inp: Inputs, absent: list[str]) -> Expected:
    """A record read from inputs this side never recorded is, for that side, the fused op: its own rounding
    plus what the absent ops' rounding (Z sigma + fixed, or any order's worst) carries into it."""
    stand = {n: inp.stand_in(n) for n in absent}

    def through(own: dict[str, np.ndarray | float]) -> np.ndarray:
        def bound(n: str) -> np.ndarray:
            return np.broadcast_to(own[n], inp.cur(n).shape) if n in own else np.zeros_like(inp.cur(n))
        return np.asarray(carried(name, cfg, inp, bound), dtype=np.float64)
    fixed = through({n: Z_SIGMA * np.asarray(e.sigma) + e.fixed for n, e in stand.items()})
    sums = {n: e for n, e in stand.items() if e.any_order is not None}
    any_order = model.any_order
    if sums:
        def any_order() -> np.ndarray | float:
            return np.asarray(model.worst) + through({n: np.asarray(e.worst) + e.fixed for n, e in sums.items()})
    return Expected(model.value, model.sigma, np.asarray(model.fixed) + fixed, any_order)


def _op(name: str, cfg: Config, inp: Inputs, u: float) -> Expected:
    """The model of the record's own op, from the side's inputs as recorded (or stood in for). A side that
    keeps its tensors in a shorter format (`inp.precision.stored`) rounds each elementwise op at that unit roundoff
    (`ue`), and each sum, accumulated in float32, once more when it is stored: at most 2 units of it, which
    a conversion that truncates (keeping float32's top 16 bits) reaches as well as one that rounds. A side
    that accumulates in that format as well (`inp.precision.summed`) rounds each addition of a sum at its unit."""
    spec = graph(cfg)[name]
    op = spec.op
    store = inp.precision.stored[0]
    ue, us = max(u, store), u + 2 * store
    u = max(u, inp.precision.summed)  # every sum below: its additions' unit roundoff
    if op == "source":
        if name == INPUT:  # byte / 255, correctly rounded or within an ulp; scaled, a multiply and an add more
            k = (C_ELEM if cfg.scaled_inputs else 2) * ue
            return Expected(None, 0.0, k * np.abs(inp.cur(name)), scale=k)
        return Expected(None, 0.0, 0.0)
    m = float(inp.cur(LABELS).shape[0])
    if op == "matmul":
        value, sigma, worst = _forward_matmul(inp, spec.inputs[0], spec.previous[0], u)
        return Expected(value, sigma, us * np.abs(value), worst)
    if op == "bias_add":
        layer = network(cfg).layer(spec.layer)
        mat = inp.cur(spec.inputs[0])
        value = mat + inp.prev(spec.previous[0])
        # A port may start its sum at the bias instead of adding it after: the matmul's rounding again
        # (in any order: the recorded matmul's and this sum's, each at its worst).
        _, sigma, worst = _forward_matmul(inp, layer.source, layer.weight, u)
        bias = inp.prev(spec.previous[0])
        return Expected(value, 1.5 * sigma, C_ELEM * ue * (np.abs(mat) + np.abs(value)),
                        lambda: worst() + worst(bias))
    if op == "activation":
        kind = network(cfg).layer(spec.layer).activation
        z = inp.cur(spec.inputs[0])
        value = activation_value(kind, z)
        # a stored result is rounded to the side's format, which (as for a sum's) may truncate: 2 units of it;
        # its Z may hold more (XLA keeps excess precision where it fuses ops), so even relu is off by that
        return Expected(value, 0.0, activation_rounding(kind, z, value, ue) + store * np.abs(value))
    if op == "dropout":  # x * mask / (1 - p), forward on the activation and backward on its gradient
        value = inp.cur(spec.inputs[0]) * inp.cur(spec.inputs[1]) * network(cfg).layer(spec.layer).keep_scale
        return Expected(value, 0.0, C_ELEM * ue * np.abs(value))
    if op == "softmax":
        z = inp.cur(spec.inputs[0])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        value = e / e.sum(axis=1, keepdims=True)
        return Expected(value, 0.0, softmax_rounding(z, value, ue))
    if op == "sigmoid":
        z = inp.cur(spec.inputs[0])
        value = sigmoid(z)
        return Expected(value, 0.0, activation_rounding("sigmoid", z, value, ue))
    if op == "loss":
        return _loss(cfg, inp, ue, m)
    if op == "grad_logits":
        return _grad_logits(cfg, inp, ue, m)
    if op == "grad_weight":
        grad, source = spec.inputs
        value, sigma, worst, squares = dot(inp.cur(grad).T, inp.cur(source), u, operand=inp.precision.operand)
        if source in SOURCES:  # for the bound the source carries into it (carried.py)
            inp.squares[grad, source] = squares
        return Expected(value, sigma, us * np.abs(value), worst)
    if op == "grad_bias":
        value, sigma, worst = batch_sum(inp.cur(spec.inputs[0]), u)
        return Expected(value, sigma, us * np.abs(value), worst)
    if op == "grad_activation":
        value, sigma, worst, _ = dot(inp.cur(spec.inputs[0]), inp.prev(spec.previous[0]), u,
                                     operand=inp.precision.operand)
        return Expected(value, sigma, us * np.abs(value), worst)
    if op == "grad_preactivation":
        return _grad_preactivation(spec, network(cfg).layer(spec.layer).activation, inp, ue)
    if op in ("velocity", "adam_m", "adam_v", "update"):
        param = spec.previous[-1]  # every optimizer record reads its parameter as the step began
        return _update(name, param, cfg, inp, ue)
    raise KeyError(name)


def _grad_preactivation(spec: RecordSpec, kind: str, inp: Inputs, u: float) -> Expected:
    """dZ = dA * f'(Z); relu's slope at exactly zero may be taken as 0 or 1."""
    grad_activation, bias_add, activation = spec.inputs
    da = inp.cur(grad_activation)
    z = inp.cur(bias_add)
    if kind == "relu":
        value = da * (z > 0)
        return Expected(value, 0.0, u * np.abs(value) + np.where(z == 0, np.abs(da), 0.0))
    a = inp.cur(activation)
    if kind == "sigmoid":
        value, dslope = da * a * (1 - a), np.abs(1 - 2 * a)
    else:
        value, dslope = da * (1 - a * a), 2 * np.abs(a)
    # The slope may come from A as recorded or from Z afresh: A's own rounding, times d slope / d A.
    a_err = activation_rounding(kind, z, a, u)
    return Expected(value, 0.0, np.abs(da) * dslope * a_err + 2 * C_ELEM * u * np.abs(value))

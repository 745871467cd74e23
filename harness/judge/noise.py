"""The noise model: what each record should hold given its own inputs, and how far rounding may move it.

For every record of the spec the model takes one side's recorded inputs (this step's records and
the previous step's parameters, as `records.py`'s dataflow graph names them) and returns:

- `value`: the op applied to those inputs, in float64 (the harness's own arithmetic, not an
  implementation's);
- `sigma`: the standard deviation of the op's own rounding where the op is a sum (matmuls, batch
  sums, means): the rounding of a sum of n terms in unknown order is a random walk over its partial
  sums, whose size follows from the terms themselves (see `sum_sigma`);
- `fixed`: a bound on the op's deterministic rounding (a few units of roundoff of elementwise ops,
  the conditioning of exp, log, sigmoid and tanh, storage in the record's dtype).

Two correct sides may then differ at a record by at most Z_SIGMA * sqrt(sigma_A^2 + sigma_B^2)
+ fixed_A + fixed_B (the record's *noise bound*), and each side's deviation from `value` is its own
rounding, so (R_B - value_B) - (R_A - value_A) must stay within the same bound unless the op
itself is computed differently (an *origin*). docs/comparing.md derives each form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.spec.config import Config
from harness.spec.records import (
    GRADIENT_OF,
    LOAD,
    PARAMETERS,
    Step,
    adam_m,
    adam_v,
    velocity,
)

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
Z_SIGMA = 6.0  # how many standard deviations a sum's rounding may reach (about 1 in 5e8 elements)
C_ELEM = 4.0  # units of roundoff an elementwise op (and its storage) may be off by
SOURCES = ("input/x", "input/y")  # records with no inputs: data the harness hands out


@dataclass
class Expected:
    """What one side's record should hold, given that side's recorded inputs (see module doc)."""

    value: np.ndarray | None  # float64; None for a source record (nothing to recompute it from)
    sigma: np.ndarray | float
    fixed: np.ndarray | float


class MissingInput(Exception):
    """A record the model needs is not in the memstate (a partial or converted dump)."""


@dataclass
class Inputs:
    """One side's records around one step, as float64, for the model."""

    get: Callable[[Step, str], np.ndarray | None]
    step: int
    first: int = 0  # the step a replay started at: its state before it is the load unit
    memo: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def cur(self, name: str) -> np.ndarray:
        return self._need(self.step, name)

    def prev(self, name: str) -> np.ndarray:
        """A parameter (or velocity) as the step began: the previous step's update, or the load."""
        if self.step == self.first:
            if name in PARAMETERS or self.get(LOAD, name) is not None:  # a replay's load holds velocities
                return self._need(LOAD, name)
            param = next(p for p in PARAMETERS if name.startswith(p))
            return np.zeros_like(self._need(LOAD, param))  # optimizer buffers start at 0
        return self._need(self.step - 1, name)

    def _need(self, step: Step, name: str) -> np.ndarray:
        x = self.get(step, name)
        if x is None:
            raise MissingInput(f"{step} {name}")
        return np.asarray(x, dtype=np.float64)


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


def _forward_matmul(inp: Inputs, x_name: str, w_name: str, u: float) -> tuple[np.ndarray, np.ndarray]:
    """X W^T and its sigma, computed once per step (the matmul and the bias add both use it);
    the hidden layer sums over pixels, in image order."""
    if (x_name, w_name) not in inp.memo:
        inp.memo[x_name, w_name] = dot(inp.cur(x_name), inp.prev(w_name).T, u, ordered=x_name == "input/x")
    return inp.memo[x_name, w_name]


def _layer_inputs(layer: str) -> tuple[str, str]:
    return ("input/x", "hidden/weight") if layer == "hidden" else ("hidden/activation", "output/weight")


def expected(name: str, cfg: Config, inp: Inputs, u: float) -> Expected:
    """The model for one record of one side; raises MissingInput when an input is not recorded
    and KeyError for a name the spec does not know."""
    if name == "input/x":
        x = inp.cur(name)  # byte / 255, correctly rounded or within an ulp; scaled, a multiply and an add more
        return Expected(None, 0.0, (C_ELEM if cfg.scaled_inputs else 2) * u * np.abs(x))
    if name == "input/y":
        return Expected(None, 0.0, 0.0)
    m = float(inp.cur("input/y").shape[0])
    if name in ("hidden/matmul", "output/matmul"):
        value, sigma = _forward_matmul(inp, *_layer_inputs(name.split("/")[0]), u)
        return Expected(value, sigma, u * np.abs(value))
    if name in ("hidden/bias_add", "output/bias_add"):
        layer = name.split("/")[0]
        mat = inp.cur(f"{layer}/matmul")
        value = mat + inp.prev(f"{layer}/bias")
        # A port may start its sum at the bias instead of adding it after: the matmul's rounding again.
        _, sigma = _forward_matmul(inp, *_layer_inputs(layer), u)
        return Expected(value, 1.5 * sigma, C_ELEM * u * (np.abs(mat) + np.abs(value)))
    if name == "hidden/activation":
        z = inp.cur("hidden/bias_add")
        value = activation_value(cfg.activation, z)
        return Expected(value, 0.0, activation_rounding(cfg.activation, z, value, u))
    if name == "output/softmax":
        z = inp.cur("output/bias_add")
        e = np.exp(z - z.max(axis=1, keepdims=True))
        value = e / e.sum(axis=1, keepdims=True)
        return Expected(value, 0.0, softmax_rounding(z, value, u))
    if name == "output/sigmoid":
        z = inp.cur("output/bias_add")
        value = sigmoid(z)
        return Expected(value, 0.0, activation_rounding("sigmoid", z, value, u))
    if name == "loss/value":
        return _loss(cfg, inp, u, m)
    if name == "output/grad_logits":
        return _grad_logits(cfg, inp, u, m)
    if name == "output/grad_weight":
        value, sigma = dot(inp.cur("output/grad_logits").T, inp.cur("hidden/activation"), u)
        return Expected(value, sigma, u * np.abs(value))
    if name in ("output/grad_bias", "hidden/grad_bias"):
        source = "output/grad_logits" if name == "output/grad_bias" else "hidden/grad_preactivation"
        value, sigma = batch_sum(inp.cur(source), u)
        return Expected(value, sigma, u * np.abs(value))
    if name == "hidden/grad_activation":
        value, sigma = dot(inp.cur("output/grad_logits"), inp.prev("output/weight"), u)
        return Expected(value, sigma, u * np.abs(value))
    if name == "hidden/grad_preactivation":
        return _grad_preactivation(cfg, inp, u)
    if name == "hidden/grad_weight":
        value, sigma = dot(inp.cur("hidden/grad_preactivation").T, inp.cur("input/x"), u)
        return Expected(value, sigma, u * np.abs(value))
    for p in PARAMETERS:
        if name in (velocity(p), adam_m(p), adam_v(p), p):
            return _update(name, p, cfg, inp, u)
    raise KeyError(name)


def _update(name: str, p: str, cfg: Config, inp: Inputs, u: float) -> Expected:
    """A parameter's optimizer buffers and its update; g = G + weight_decay * p throughout, and the
    learning rate (and Adam's bias corrections) are the float64 numbers of the step."""
    w0, grad = inp.prev(p), inp.cur(GRADIENT_OF[p])
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


def _probs(cfg: Config, inp: Inputs, u: float, stored: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The recorded output probabilities and a bound on their own rounding (`stored`: see softmax_rounding)."""
    z = inp.cur("output/bias_add")
    if cfg.loss == "cross_entropy":
        p = inp.cur("output/softmax")
        return p, softmax_rounding(z, p, u, stored)
    p = inp.cur("output/sigmoid")
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
    """Cross-entropy from P (a side may take it from the logits: P's rounding covers that);
    MSE as the mean over all m*10 elements. Where P[y] is tiny its own recorded value, not the flush
    floor, says how precise the side's -log P[y] is (else the bound would exceed any loss)."""
    p, p_err = _probs(cfg, inp, u, stored=True)
    y = inp.cur("input/y").astype(np.int64)
    p_err = p_err + _target_rounding(cfg, y, u)
    if cfg.loss == "cross_entropy":
        rows = np.arange(len(y))
        picked = p[rows, y] + cfg.log_eps  # (m,)
        with np.errstate(divide="ignore"):
            terms = -np.log(picked)  # (m,)
        value, sigma = batch_sum(terms, u)
        rel_err = p_err[rows, y] / np.maximum(picked, np.finfo(np.float64).tiny)  # |d log p| = |dp| / p
        fixed = (rel_err + C_ELEM * u * np.abs(terms)).sum() + C_ELEM * u * abs(value)
        return Expected(value / m, sigma / m, fixed / m)
    diff = p - _targets(cfg, y)  # (m, 10)
    terms = (diff * diff).ravel()
    value, sigma = batch_sum(terms, u)
    fixed = (2 * np.abs(diff) * p_err + C_ELEM * u * terms.reshape(diff.shape)).sum() + C_ELEM * u * abs(value)
    return Expected(value / (10 * m), sigma / (10 * m), fixed / (10 * m))


def _grad_logits(cfg: Config, inp: Inputs, u: float, m: float) -> Expected:
    """dZ2 from the recorded P: (P - Y)/m, or 2 (P - Y) P (1 - P) / (10 m); an autograd side
    recomputes P internally, so P's own rounding is allowed through."""
    p, p_err = _probs(cfg, inp, u)
    y1 = _targets(cfg, inp.cur("input/y"))
    p_err = p_err + _target_rounding(cfg, inp.cur("input/y"), u)
    if cfg.loss == "cross_entropy":
        value = (p - y1) / m
        return Expected(value, 0.0, (p_err + C_ELEM * u * np.abs(p - y1)) / m + u * np.abs(value))
    scale = 2 / (10 * m)
    value = scale * (p - y1) * p * (1 - p)
    slope = scale * np.abs(p * (1 - p) + (p - y1) * (1 - 2 * p))  # |d value / d p|
    return Expected(value, 0.0, slope * p_err + 2 * C_ELEM * u * np.abs(value))


def _grad_preactivation(cfg: Config, inp: Inputs, u: float) -> Expected:
    """dZ1 = dA1 * f'(Z1); relu's slope at exactly zero may be taken as 0 or 1."""
    da = inp.cur("hidden/grad_activation")
    z = inp.cur("hidden/bias_add")
    if cfg.activation == "relu":
        value = da * (z > 0)
        return Expected(value, 0.0, u * np.abs(value) + np.where(z == 0, np.abs(da), 0.0))
    a = inp.cur("hidden/activation")
    if cfg.activation == "sigmoid":
        value, dslope = da * a * (1 - a), np.abs(1 - 2 * a)
    else:
        value, dslope = da * (1 - a * a), 2 * np.abs(a)
    # The slope may come from A as recorded or from Z afresh: A's own rounding, times d slope / d A.
    a_err = activation_rounding(cfg.activation, z, a, u)
    return Expected(value, 0.0, np.abs(da) * dslope * a_err + 2 * C_ELEM * u * np.abs(value))


def rss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt((a*a) @ (b*b)): how independent errors a, each scaled by |b|, add up in a @ b."""
    return np.sqrt((a * a) @ (b * b))


def carried(name: str, cfg: Config, inp: Inputs, bound: Callable[[str], np.ndarray]) -> np.ndarray | float:
    """How far a record may move when its inputs of the same step move by their noise bounds:
    sum over inputs of |d record / d input| * bound(input), to first order (the step's own inputs,
    the previous parameters, carry no bound: the step starts from them).

    With this a record's noise bound is the rounding two correct sides may accumulate from the
    start of the step to this record, so a relu that passes Z1's rounding on is not a divergence.
    Through sums the inputs' bounds add as a root sum of squares (`rss`): their rounding is
    independent from element to element, so it does not line up across the terms of a sum.
    """
    if name in SOURCES:
        return 0.0
    if name == "hidden/matmul":
        return rss(bound("input/x"), inp.prev("hidden/weight").T)  # (m, H)
    if name in ("hidden/bias_add", "output/bias_add"):
        return bound(name.split("/")[0] + "/matmul")
    if name == "hidden/activation":
        dz = bound("hidden/bias_add")
        if cfg.activation == "relu":
            return dz  # relu moves no more than its input, kink included
        a = inp.cur(name)
        return dz * (a * (1 - a) if cfg.activation == "sigmoid" else 1 - a * a)
    if name == "output/matmul":
        return rss(bound("hidden/activation"), inp.prev("output/weight").T)  # (m, 10)
    if name == "output/softmax":
        p, dz = inp.cur(name), bound("output/bias_add")
        return p * (dz + (p * dz).sum(axis=1, keepdims=True))  # dP_i = P_i (dz_i - sum_j P_j dz_j)
    if name == "output/sigmoid":
        p = inp.cur(name)
        return p * (1 - p) * bound("output/bias_add")
    probs = f"output/{cfg.output}"
    if name == "loss/value":
        p, dp = inp.cur(probs), bound(probs)
        y = inp.cur("input/y").astype(np.int64)
        if cfg.loss == "cross_entropy":
            rows = np.arange(len(y))
            terms = dp[rows, y] / np.maximum(p[rows, y] + cfg.log_eps, np.finfo(np.float64).tiny)  # (m,)
        else:
            terms = (2 * np.abs(p - _targets(cfg, y)) * dp).ravel()  # (m * 10,)
        return float(np.sqrt(np.sum(terms * terms))) / len(terms)
    if name == "output/grad_logits":
        p, dp = inp.cur(probs), bound(probs)
        m = p.shape[0]
        if cfg.loss == "cross_entropy":
            return dp / m
        y1 = _targets(cfg, inp.cur("input/y"))
        return 2 / (10 * m) * np.abs(p * (1 - p) + (p - y1) * (1 - 2 * p)) * dp
    if name == "output/grad_weight":
        return (rss(bound("output/grad_logits").T, inp.cur("hidden/activation"))
                + rss(inp.cur("output/grad_logits").T, bound("hidden/activation")))  # (10, H)
    if name == "output/grad_bias":
        return np.sqrt((bound("output/grad_logits") ** 2).sum(axis=0))
    if name == "hidden/grad_activation":
        return rss(bound("output/grad_logits"), inp.prev("output/weight"))  # (m, H)
    if name == "hidden/grad_preactivation":
        dda, da, z = bound("hidden/grad_activation"), inp.cur("hidden/grad_activation"), inp.cur("hidden/bias_add")
        if cfg.activation == "relu":  # where Z1 is within its bound of zero the mask may flip
            return dda * (z > 0) + np.where(np.abs(z) <= bound("hidden/bias_add"), np.abs(da), 0.0)
        a, daa = inp.cur("hidden/activation"), bound("hidden/activation")
        if cfg.activation == "sigmoid":
            return dda * a * (1 - a) + np.abs(da) * np.abs(1 - 2 * a) * daa
        return dda * (1 - a * a) + np.abs(da) * 2 * np.abs(a) * daa
    if name == "hidden/grad_weight":
        return (rss(bound("hidden/grad_preactivation").T, inp.cur("input/x"))
                + rss(inp.cur("hidden/grad_preactivation").T, bound("input/x")))  # (H, 784)
    if name == "hidden/grad_bias":
        return np.sqrt((bound("hidden/grad_preactivation") ** 2).sum(axis=0))
    for p in PARAMETERS:
        if name == velocity(p):
            return bound(GRADIENT_OF[p])
        if name == adam_m(p):
            return (1 - cfg.adam_beta1) * bound(GRADIENT_OF[p])
        if name == adam_v(p):
            g = inp.cur(GRADIENT_OF[p]) + cfg.weight_decay * inp.prev(p)
            return (1 - cfg.adam_beta2) * 2 * np.abs(g) * bound(GRADIENT_OF[p])
        if name == p and cfg.optimizer == "adam":
            return _adam_carried(cfg, inp.step, inp.cur(adam_m(p)), inp.cur(adam_v(p)), bound(adam_m(p)),
                                 bound(adam_v(p)))
        if name == p:
            return cfg.lr_at(inp.step) * bound(velocity(p) if cfg.optimizer == "momentum" else GRADIENT_OF[p])
    raise KeyError(name)


def _adam_carried(cfg: Config, step: int, m: np.ndarray, v: np.ndarray, dm: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """How far Adam's step r = size * m / (sqrt(v_hat) + eps) may move when m and v move by up to dm
    and dv: r grows with |m| and shrinks with v, so the largest step is taken at |m| + dm and v - dv
    (exact, not first order: near v = 0 the square root's slope has no bound)."""
    low = _adam_step(cfg, step, np.abs(m), v)
    high = _adam_step(cfg, step, np.abs(m) + dm, np.maximum(v - dv, 0.0))
    return high - low

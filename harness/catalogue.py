"""The scorecard's catalogue: planted bugs and benign variants, as edits to a built-in implementation.

Each case copies an implementation directory (impls/numpy unless it says otherwise), replaces
lines of its code, runs it against the unedited reference on one job, and states what the
comparison must say: a bug is found as the *first origin* at exactly (step, record) with no origin
before it; a benign variant gives agree or drift, never diverged. The edits are textual so a
reader sees each bug as the one line a person would get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.spec.records import LOAD, Step

BUG, BENIGN = "bug", "benign"
MOMENTUM_WD = {"optimizer": "momentum", "weight_decay": 5e-4}
ADAM = {"optimizer": "adam", "lr": 0.001}
SOFT = {"activation": "sigmoid", "loss": "mse", "input_min": 0.01, "target_min": 0.01, "target_max": 0.99, "lr": 0.5}


@dataclass(frozen=True)
class Case:
    """One catalogue entry: edit `impl`'s mlp.py with `edits` (old -> new, each old found exactly once)."""

    name: str
    kind: str  # bug | benign
    what: str
    edits: tuple[tuple[str, str], ...] = ()
    expect: tuple[Step, str] | None = None  # a bug's first origin
    config: dict[str, Any] = field(default_factory=dict)
    impl: str = "numpy"  # the implementation that is edited
    reference: str = "numpy"  # the other side, unedited

    @property
    def phase(self) -> str:
        if self.expect is None:
            return "-"
        step, record = self.expect
        return "load" if step == LOAD else record.split("/")[0] if "/" in record else record


def bug(name: str, what: str, old: str, new: str, expect: tuple[Step, str], **config: Any) -> Case:
    return Case(name, BUG, what, ((old, new),), expect, config)


M1 = "M1 = X @ W1.T  # (m, H)"
UPDATE = 'params[name] = params[name] - lr * g'
VELOCITY = 'velocity[name] = cfg["momentum"] * velocity[name] + g'

BUGS: list[Case] = [
    bug("load-column-major", "parameters read in column-major order",
        'reshape(t["shape"])', 'reshape(t["shape"], order="F")', (LOAD, "hidden/weight")),
    bug("load-six-digits", "W2 kept to 6 decimals, as a port that printed %.6f would",
        '"output/weight": load_param(tensors, "W2", dt),',
        '"output/weight": np.round(load_param(tensors, "W2", np.float64), 6).astype(dt),', (LOAD, "output/weight")),
    bug("pixels-over-256", "pixels scaled by 1/256", "X = images[i].astype(dt) / 255", "X = images[i].astype(dt) / 256",
        (0, "input/x")),
    bug("labels-of-previous-batch", "labels taken from the previous batch (same at step 0)",
        "y = labels[i].astype(np.int64)", "y = labels[max(i - 1, 0)].astype(np.int64)", (1, "input/y")),
    bug("one-hot-reversed", "one-hot targets built from the batch's labels reversed",
        "Y = np.eye(10, dtype=dt)[y]", "Y = np.eye(10, dtype=dt)[y[::-1]]", (0, "output/grad_logits")),
    bug("matmul-32u", "hidden matmul off by 32 u |X||W| (a tiny systematic error)",
        M1, "M1 = X @ W1.T + 32 * (np.finfo(dt).eps / 2) * (np.abs(X) @ np.abs(W1).T)  # (m, H)", (0, "hidden/matmul")),
    bug("bias-subtracted", "hidden bias subtracted (biases start at zero, so from step 1)",
        "Z1 = M1 + b1", "Z1 = M1 - b1", (1, "hidden/bias_add")),
    bug("leaky-relu", "relu leaks 0.01 z below zero", "return np.maximum(z, 0)", "return np.maximum(z, 0.01 * z)",
        (0, "hidden/activation")),
    bug("sigmoid-sign", "sigmoid hidden layer computes 1/(1+e^z)", "return 1 / (1 + np.exp(-z))",
        "return 1 / (1 + np.exp(z))", (0, "hidden/activation"), activation="sigmoid"),
    bug("tanh-slope", "tanh derivative written 1 - a", "return 1 - a * a", "return 1 - a",
        (0, "hidden/grad_preactivation"), activation="tanh"),
    bug("output-from-preactivation", "output layer fed Z1 instead of relu(Z1)", "M2 = A1 @ W2.T", "M2 = Z1 @ W2.T",
        (0, "output/matmul")),
    bug("softmax-global-sum", "softmax normalised by the sum over the whole batch (the original story)",
        "P = E / E.sum(axis=1, keepdims=True)", "P = E / E.sum()", (0, "output/softmax")),
    bug("softmax-half-precision", "softmax's exponent taken in float16",
        "E = np.exp(Z2 - Z2.max(axis=1, keepdims=True))",
        "E = np.exp((Z2 - Z2.max(axis=1, keepdims=True)).astype(np.float16)).astype(dt)", (0, "output/softmax")),
    bug("loss-over-m-plus-1", "loss divided by m + 1 (feeds nothing else)",
        'loss = -np.mean(np.log(P[np.arange(m), y] + cfg["log_eps"]))',
        'loss = -np.sum(np.log(P[np.arange(m), y] + cfg["log_eps"])) / (m + 1)',
        (0, "loss/value")),
    bug("mse-loss-over-m", "MSE averaged over the batch only, not m*10 elements",
        "loss = np.mean((P - Y) ** 2)", "loss = np.sum((P - Y) ** 2) / m", (0, "loss/value"), loss="mse"),
    bug("output-sigmoid-twice", "MSE output squashed twice", "P = 1 / (1 + np.exp(-Z2))",
        "P = 1 / (1 + np.exp(-1 / (1 + np.exp(-Z2))))", (0, "output/sigmoid"), loss="mse"),
    bug("mse-grad-without-2", "MSE gradient missing its factor 2",
        "dZ2 = 2 * (P - Y) * P * (1 - P) / (m * 10)", "dZ2 = (P - Y) * P * (1 - P) / (m * 10)",
        (0, "output/grad_logits"), loss="mse"),
    bug("grad-logits-not-averaged", "cross-entropy gradient not divided by m", "dZ2 = (P - Y) / m", "dZ2 = (P - Y)",
        (0, "output/grad_logits")),
    bug("grad-w2-from-preactivation", "dW2 from Z1 instead of A1",
        'grads["output/weight"] = dZ2.T @ A1', 'grads["output/weight"] = dZ2.T @ Z1', (0, "output/grad_weight")),
    bug("grad-b2-mean", "db2 averaged instead of summed",
        'grads["output/bias"] = dZ2.sum(axis=0)', 'grads["output/bias"] = dZ2.mean(axis=0)', (0, "output/grad_bias")),
    bug("backprop-through-updated-w2", "dA1 through W2 already updated",
        "dA1 = dZ2 @ W2", 'dA1 = dZ2 @ (W2 - cfg["lr"] * grads["output/weight"])', (0, "hidden/grad_activation")),
    bug("relu-slope-is-z", "relu derivative written as relu itself", "return (z > 0).astype(z.dtype)",
        "return np.maximum(z, 0)", (0, "hidden/grad_preactivation")),
    bug("sigmoid-slope-from-z", "sigmoid derivative taken from z instead of a", "return a * (1 - a)",
        "return z * (1 - z)", (0, "hidden/grad_preactivation"), activation="sigmoid"),
    bug("grad-w1-scaled-1e-4", "dW1 divided by 0.9999: a wrong constant that scales a gradient slightly",
        'grads["hidden/weight"] = dZ1.T @ X', 'grads["hidden/weight"] = dZ1.T @ X / 0.9999', (0, "hidden/grad_weight")),
    bug("grad-b1-from-da1", "db1 summed from dA1 instead of dZ1",
        'grads["hidden/bias"] = dZ1.sum(axis=0)', 'grads["hidden/bias"] = dA1.sum(axis=0)', (0, "hidden/grad_bias")),
    bug("update-sign", "parameters climb the gradient", UPDATE, UPDATE.replace(" - ", " + "), (0, "hidden/weight")),
    bug("lr-decays-per-step", "learning rate decays 1% a step (same at step 0)",
        UPDATE, 'params[name] = params[name] - lr * 0.99 ** step * g', (1, "hidden/weight")),
    bug("no-decay-on-biases", "weight decay skipped for biases (biases are zero at step 0)",
        'g = grads[name] + cfg["weight_decay"] * params[name]',
        'g = grads[name] + (cfg["weight_decay"] * params[name] if name.endswith("weight") else 0)',
        (1, "hidden/bias_velocity"), **MOMENTUM_WD),
    bug("momentum-0.99", "momentum typed 0.99 (the buffer starts at zero, so from step 1)",
        VELOCITY, "velocity[name] = 0.99 * velocity[name] + g", (1, "hidden/weight_velocity"), **MOMENTUM_WD),
    bug("momentum-dampening", "gradient dampened by (1 - momentum) after the first step",
        VELOCITY, 'velocity[name] = cfg["momentum"] * velocity[name] + (1 - cfg["momentum"] if step else 1) * g',
        (1, "hidden/weight_velocity"), **MOMENTUM_WD),
    bug("nesterov-step", "a Nesterov step where plain momentum was meant",
        "g = velocity[name]", 'g = g + cfg["momentum"] * velocity[name]', (0, "hidden/weight"), **MOMENTUM_WD),
    bug("adam-one-minus-beta-in-float32", "Adam's 1 - beta2 taken in float32 (0.00099998713, not 0.001)",
        "adam_v[name] = beta2 * adam_v[name] + (1 - beta2) * g * g",
        "adam_v[name] = beta2 * adam_v[name] + (np.float32(1) - np.float32(beta2)) * g * g",
        (0, "hidden/weight_adam_v"), **ADAM),
    bug("adam-bias-correction-off-by-one", "Adam's first bias correction counts steps from 2",
        "m_hat = adam_m[name] / (1 - beta1 ** (step + 1))", "m_hat = adam_m[name] / (1 - beta1 ** (step + 2))",
        (0, "hidden/weight"), **ADAM),
    bug("lr-decay-every-step", "learning rate decayed every step, not every epoch (same at step 0)",
        'lr = cfg["lr"] * cfg["lr_decay"] ** (step // cfg["epoch_steps"])', 'lr = cfg["lr"] * cfg["lr_decay"] ** step',
        (1, "hidden/weight"), **MOMENTUM_WD, lr_decay=0.5, epoch_steps=10),
    bug("soft-targets-ignored", "soft targets 0.01/0.99 left one-hot",
        'Y = np.where(Y == 1, dt.type(cfg["target_max"]), dt.type(cfg["target_min"]))', "Y = Y * 1",
        (0, "loss/value"), **SOFT),
    bug("inputs-not-shifted", "inputs scaled to [0, 0.99] but not shifted by 0.01",
        'X = X * dt.type(cfg["input_max"] - cfg["input_min"]) + dt.type(cfg["input_min"])',
        'X = X * dt.type(cfg["input_max"] - cfg["input_min"])', (0, "input/x"), **SOFT),
]


def benign(name: str, what: str, *edits: tuple[str, str], impl: str = "numpy", reference: str = "numpy",
           **config: Any) -> Case:
    return Case(name, BENIGN, what, tuple(edits), None, config, impl, reference)


SEQUENTIAL_M1 = ("M1 = np.zeros((X.shape[0], W1.shape[0]), dt)  # (m, H)\n"
                 "        for k in range(X.shape[1]):\n"
                 "            M1 += np.outer(X[:, k], W1[:, k])  # one term at a time")

BENIGN_VARIANTS: list[Case] = [
    benign("float64-vs-float32", "computes in float64 whatever the config says",
           ('dt = np.dtype(cfg["dtype"])', 'dt = np.dtype("float64")')),
    benign("einsum", "every matmul as np.einsum",
           (M1, 'M1 = np.einsum("mk,hk->mh", X, W1)'), ("M2 = A1 @ W2.T", 'M2 = np.einsum("mh,oh->mo", A1, W2)'),
           ('grads["hidden/weight"] = dZ1.T @ X', 'grads["hidden/weight"] = np.einsum("mh,mk->hk", dZ1, X)'),
           ('grads["output/weight"] = dZ2.T @ A1', 'grads["output/weight"] = np.einsum("mo,mh->oh", dZ2, A1)')),
    benign("softmax-logsumexp", "softmax as exp(z - logsumexp(z))",
           ("E = np.exp(Z2 - Z2.max(axis=1, keepdims=True))",
            "top = Z2.max(axis=1, keepdims=True)\n            lse = top + np.log(np.exp(Z2 - top).sum(axis=1, keepdims=True))"),
           ("P = E / E.sum(axis=1, keepdims=True)", "P = np.exp(Z2 - lse)")),
    benign("softmax-unshifted", "softmax without subtracting the max",
           ("E = np.exp(Z2 - Z2.max(axis=1, keepdims=True))", "E = np.exp(Z2)")),
    benign("softmax-global-max", "softmax shifted by the batch's max, not each row's",
           ("E = np.exp(Z2 - Z2.max(axis=1, keepdims=True))", "E = np.exp(Z2 - Z2.max())")),
    benign("reversed-sums", "every matmul summed in reverse order",
           (M1, "M1 = X[:, ::-1] @ W1[:, ::-1].T"),
           ('grads["hidden/weight"] = dZ1.T @ X', 'grads["hidden/weight"] = dZ1[::-1].T @ X[::-1]'),
           ('grads["output/bias"] = dZ2.sum(axis=0)', 'grads["output/bias"] = dZ2[::-1].sum(axis=0)')),
    benign("sequential-sums", "hidden matmul and batch sums added one term at a time (no pairwise or blocked sums)",
           (M1, SEQUENTIAL_M1),
           ('grads["output/bias"] = dZ2.sum(axis=0)', 'grads["output/bias"] = np.cumsum(dZ2, axis=0)[-1]'),
           ('grads["hidden/bias"] = dZ1.sum(axis=0)', 'grads["hidden/bias"] = np.cumsum(dZ1, axis=0)[-1]')),
    benign("relu-as-product", "relu as z * (z > 0)", ("return np.maximum(z, 0)", "return z * (z > 0)")),
    benign("relu-as-where", "relu as np.where, its slope from a > 0",
           ("return np.maximum(z, 0)", "return np.where(z > 0, z, 0)"),
           ("return (z > 0).astype(z.dtype)", "return (a > 0).astype(a.dtype)")),
    benign("features-major", "hidden layer kept features-major, (H, m), and transposed back",
           (M1, "M1 = (W1 @ X.T).T"), ("dA1 = dZ2 @ W2", "dA1 = (W2.T @ dZ2.T).T"),
           ('grads["hidden/weight"] = dZ1.T @ X', 'grads["hidden/weight"] = (X.T @ dZ1).T')),
    benign("jit-vs-eager", "the JAX step run eagerly against the jit-compiled one",
           ('@partial(jax.jit, static_argnames=("cfg_items",))\n', ""), impl="jax", reference="jax"),
    benign("autograd-vs-hand-written", "PyTorch autograd against numpy's hand-written backward",
           impl="torch", reference="numpy"),
    benign("jax-vs-torch-sigmoid-mse", "JAX against PyTorch with sigmoid, MSE",
           impl="torch", reference="jax", activation="sigmoid", loss="mse"),
    benign("jax-vs-numpy-tanh-momentum", "JAX against numpy with tanh, momentum and weight decay",
           impl="jax", reference="numpy", activation="tanh", **MOMENTUM_WD),
    benign("torch-vs-numpy-float64", "PyTorch against numpy, both in float64",
           impl="torch", reference="numpy", dtype="float64"),
    benign("torch-vs-numpy-adam", "torch.optim.Adam against numpy's hand-written Adam",
           impl="torch", reference="numpy", **ADAM),
    benign("jax-vs-numpy-lr-decay", "JAX against numpy with momentum, weight decay and a learning rate halved "
           "every 50 steps", impl="jax", reference="numpy", **MOMENTUM_WD, lr_decay=0.5, epoch_steps=50),
    benign("torch-vs-numpy-soft-targets", "PyTorch against numpy with goml's sigmoid, MSE, scaled inputs and "
           "soft targets", impl="torch", reference="numpy", **SOFT),
]

CATALOGUE: list[Case] = BUGS + BENIGN_VARIANTS

# What each bug's first origin should be diagnosed as (judge/diagnose.py's kinds): what a person reading the
# two tensors would call it. The scorecard prints it beside what was found.
DIAGNOSES = {
    "load-column-major": "layout", "load-six-digits": "precision", "pixels-over-256": "scale",
    "labels-of-previous-batch": "wrong_operand", "one-hot-reversed": "wrong_operand", "matmul-32u": "precision",
    "bias-subtracted": "offset", "leaky-relu": "mask", "sigmoid-sign": "sign", "tanh-slope": "wrong_operand",
    "output-from-preactivation": "wrong_operand", "softmax-global-sum": "axis", "softmax-half-precision": "precision",
    "loss-over-m-plus-1": "scale", "mse-loss-over-m": "scale", "output-sigmoid-twice": "wrong_operand",
    "mse-grad-without-2": "scale", "grad-logits-not-averaged": "scale", "grad-w2-from-preactivation": "wrong_operand",
    "grad-b2-mean": "scale", "backprop-through-updated-w2": "wrong_operand", "relu-slope-is-z": "wrong_operand",
    "sigmoid-slope-from-z": "wrong_operand", "grad-w1-scaled-1e-4": "scale", "grad-b1-from-da1": "wrong_operand",
    "update-sign": "sign", "lr-decays-per-step": "update_scale", "no-decay-on-biases": "offset",
    "momentum-0.99": "offset", "momentum-dampening": "offset", "nesterov-step": "update_scale",
    "adam-one-minus-beta-in-float32": "scale", "adam-bias-correction-off-by-one": "update_scale",
    "lr-decay-every-step": "update_scale", "soft-targets-ignored": "wrong_operand", "inputs-not-shifted": "offset",
}

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


M1 = "M = inputs[-1] @ W.T  # (m, H_k)"  # every hidden layer's matmul (784-H-10: the one)
GRAD_W = 'grads[f"{name}/weight"] = dZ.T @ inputs[k - 1]  # (H_k, fan_in)'  # every layer's, output first
GRAD_B = 'grads[f"{name}/bias"] = dZ.sum(axis=0)  # (H_k,)'
BACKPROP = 'dOut = dZ @ params[f"{name}/weight"]  # (m, H_{k-1})'
DEEP = {"layers": (24, 24)}  # two hidden layers of one width: a transposed weight or a wrong operand still fits
DROPOUT = {"layers": (24, 16), "dropout": (0.2,)}
UPDATE = 'params[name] = params[name] - lr * g'
VELOCITY = 'velocity[name] = cfg["momentum"] * velocity[name] + g'

BUGS: list[Case] = [
    bug("load-column-major", "parameters read in column-major order",
        'reshape(t["shape"])', 'reshape(t["shape"], order="F")', (LOAD, "hidden/weight")),
    bug("load-six-digits", "W2 kept to 6 decimals, as a port that printed %.6f would",
        'params[f"{name}/weight"] = load_param(tensors, f"W{k}", dt)',
        'params[f"{name}/weight"] = load_param(tensors, f"W{k}", dt) if name != "output" else '
        'np.round(load_param(tensors, f"W{k}", np.float64), 6).astype(dt)', (LOAD, "output/weight")),
    bug("pixels-over-256", "pixels scaled by 1/256", "X = images[i].astype(dt) / 255", "X = images[i].astype(dt) / 256",
        (0, "input/x")),
    bug("labels-of-previous-batch", "labels taken from the previous batch (same at step 0)",
        "y = labels[i].astype(np.int64)", "y = labels[max(i - 1, 0)].astype(np.int64)", (1, "input/y")),
    bug("one-hot-reversed", "one-hot targets built from the batch's labels reversed",
        "Y = np.eye(10, dtype=dt)[y]", "Y = np.eye(10, dtype=dt)[y[::-1]]", (0, "output/grad_logits")),
    bug("matmul-32u", "hidden matmul off by 32 u |X||W| (a tiny systematic error)",
        M1, "M = inputs[-1] @ W.T + 32 * (np.finfo(dt).eps / 2) * (np.abs(inputs[-1]) @ np.abs(W).T)  # (m, H_k)",
        (0, "hidden/matmul")),
    bug("bias-subtracted", "hidden bias subtracted (biases start at zero, so from step 1)",
        "Z[k] = M + b", "Z[k] = M - b", (1, "hidden/bias_add")),
    bug("leaky-relu", "relu leaks 0.01 z below zero", "return np.maximum(z, 0)", "return np.maximum(z, 0.01 * z)",
        (0, "hidden/activation")),
    bug("sigmoid-sign", "sigmoid hidden layer computes 1/(1+e^z)", "return 1 / (1 + np.exp(-z))",
        "return 1 / (1 + np.exp(z))", (0, "hidden/activation"), activation="sigmoid"),
    bug("tanh-slope", "tanh derivative written 1 - a", "return 1 - a * a", "return 1 - a",
        (0, "hidden/grad_preactivation"), activation="tanh"),
    bug("output-from-preactivation", "output layer fed Z1 instead of relu(Z1)", "M_out = inputs[-1] @ W_out.T",
        "M_out = Z[L] @ W_out.T",
        (0, "output/matmul")),
    bug("softmax-global-sum", "softmax normalised by the sum over the whole batch (the original story)",
        "P = E / E.sum(axis=1, keepdims=True)", "P = E / E.sum()", (0, "output/softmax")),
    bug("softmax-half-precision", "softmax's exponent taken in float16",
        "E = np.exp(Z_out - Z_out.max(axis=1, keepdims=True))",
        "E = np.exp((Z_out - Z_out.max(axis=1, keepdims=True)).astype(np.float16)).astype(dt)", (0, "output/softmax")),
    bug("loss-over-m-plus-1", "loss divided by m + 1 (feeds nothing else)",
        'loss = -np.sum(np.log(P[np.arange(m), y] + cfg["log_eps"])) / divisor',
        'loss = -np.sum(np.log(P[np.arange(m), y] + cfg["log_eps"])) / (m + 1)',
        (0, "loss/value")),
    bug("mse-loss-over-m", "MSE averaged over the batch only, not m*10 elements",
        "loss = per_output * np.sum((P - Y) ** 2) / divisor", "loss = np.sum((P - Y) ** 2) / m", (0, "loss/value"),
        loss="mse"),
    bug("output-sigmoid-twice", "MSE output squashed twice", "P = 1 / (1 + np.exp(-Z_out))",
        "P = 1 / (1 + np.exp(-1 / (1 + np.exp(-Z_out))))", (0, "output/sigmoid"), loss="mse"),
    bug("mse-grad-without-2", "MSE gradient missing its factor 2",
        "dZ = 2 * per_output * (P - Y) * P * (1 - P) / divisor", "dZ = per_output * (P - Y) * P * (1 - P) / divisor",
        (0, "output/grad_logits"), loss="mse"),
    bug("grad-logits-not-averaged", "cross-entropy gradient not divided by m", "dZ = (P - Y) / divisor", "dZ = (P - Y)",
        (0, "output/grad_logits")),
    bug("grad-w2-from-preactivation", "dW2 from Z1 instead of A1",
        GRAD_W, GRAD_W.replace("@ inputs[k - 1]", "@ (Z[k - 1] if k == L + 1 else inputs[k - 1])"),
        (0, "output/grad_weight")),
    bug("grad-b2-mean", "db2 averaged instead of summed",
        GRAD_B, GRAD_B.replace("dZ.sum(axis=0)", "dZ.mean(axis=0) if k == L + 1 else dZ.sum(axis=0)"),
        (0, "output/grad_bias")),
    bug("backprop-through-updated-w2", "dA1 through W2 already updated",
        BACKPROP, BACKPROP.replace('params[f"{name}/weight"]',
                                   '(params[f"{name}/weight"] - cfg["lr"] * grads[f"{name}/weight"])'),
        (0, "hidden/grad_activation")),
    bug("relu-slope-is-z", "relu derivative written as relu itself", "return (z > 0).astype(z.dtype)",
        "return np.maximum(z, 0)", (0, "hidden/grad_preactivation")),
    bug("sigmoid-slope-from-z", "sigmoid derivative taken from z instead of a", "return a * (1 - a)",
        "return z * (1 - z)", (0, "hidden/grad_preactivation"), activation="sigmoid"),
    bug("grad-w1-scaled-1e-4", "dW1 divided by 0.9999: a wrong constant that scales a gradient slightly",
        GRAD_W, GRAD_W.replace("@ inputs[k - 1]", "@ inputs[k - 1] / (0.9999 if k == 1 else 1)"),
        (0, "hidden/grad_weight")),
    bug("grad-b1-from-da1", "db1 summed from dA1 instead of dZ1",
        GRAD_B, GRAD_B.replace("dZ.sum(axis=0)", "(dA if k <= L else dZ).sum(axis=0)"), (0, "hidden/grad_bias")),
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
    # deeper networks and dropout
    bug("grad-w2-from-own-activation", "the second hidden layer's weight gradient taken from its own activation "
        "instead of the first layer's", GRAD_W,
        GRAD_W.replace("@ inputs[k - 1]", "@ (A[k] if k == 2 else inputs[k - 1])"),
        (0, "hidden2/grad_weight"), **DEEP),
    bug("layer-weights-transposed", "the second hidden layer's weights used transposed (it is square)",
        M1, M1.replace("@ W.T", "@ (W if k == 2 else W.T)"), (0, "hidden2/matmul"), **DEEP),
    bug("activation-skipped-in-one-layer", "the second hidden layer's activation left out",
        'A[k] = activate(cfg["activation"], Z[k])', 'A[k] = Z[k] if k == 2 else activate(cfg["activation"], Z[k])',
        (0, "hidden2/activation"), **DEEP),
    bug("dropout-not-scaled", "inverted dropout without the 1 / (1 - p) scale",
        "D[k] = mask.astype(dt) * keep_scale[k]", "D[k] = mask.astype(dt)", (0, "hidden1/dropout"), **DROPOUT),
    bug("dropout-mask-reused", "each step applies the previous step's dropout mask (the same at step 0)",
        "mask = masks[k][i]", "mask = masks[k][max(i - 1, 0)]", (1, "hidden1/dropout_mask"), **DROPOUT),
    Case("dropout-before-bias", BUG, "dropout applied to the matmul, before the bias and the activation",
         (("Z[k] = M + b", "Z[k] = (M * masks[k][i].astype(dt) * keep_scale[k] if k in masks else M) + b"),
          ("out = A[k] * D[k]", "out = A[k]")), (0, "hidden1/bias_add"), DROPOUT),
    bug("dropout-backward-only", "dropout applied in the backward pass only",
        "out = A[k] * D[k]", "out = A[k]", (0, "hidden1/dropout"), **DROPOUT),
    bug("dropout-missing-in-backward", "the backward pass skips the dropout (the gradient reaches dropped units)",
        "dA = dOut * D[k] if k in D else dOut", "dA = dOut", (0, "hidden2/grad_activation"), **DROPOUT),
]


def benign(name: str, what: str, *edits: tuple[str, str], impl: str = "numpy", reference: str = "numpy",
           **config: Any) -> Case:
    return Case(name, BENIGN, what, tuple(edits), None, config, impl, reference)


SEQUENTIAL_M1 = ("M = np.zeros((inputs[-1].shape[0], W.shape[0]), dt)  # (m, H_k)\n"
                 "            for f in range(inputs[-1].shape[1]):\n"
                 "                M += np.outer(inputs[-1][:, f], W[:, f])  # one term at a time")

BENIGN_VARIANTS: list[Case] = [
    benign("float64-vs-float32", "computes in float64 whatever the config says",
           ('dt = np.dtype(cfg["dtype"])', 'dt = np.dtype("float64")')),
    benign("einsum", "every matmul as np.einsum",
           (M1, 'M = np.einsum("mk,hk->mh", inputs[-1], W)'),
           ("M_out = inputs[-1] @ W_out.T", 'M_out = np.einsum("mh,oh->mo", inputs[-1], W_out)'),
           (GRAD_W, 'grads[f"{name}/weight"] = np.einsum("mh,mk->hk", dZ, inputs[k - 1])')),
    benign("softmax-logsumexp", "softmax as exp(z - logsumexp(z))",
           ("E = np.exp(Z_out - Z_out.max(axis=1, keepdims=True))",
            "top = Z_out.max(axis=1, keepdims=True)\n"
            "            lse = top + np.log(np.exp(Z_out - top).sum(axis=1, keepdims=True))"),
           ("P = E / E.sum(axis=1, keepdims=True)", "P = np.exp(Z_out - lse)")),
    benign("softmax-unshifted", "softmax without subtracting the max",
           ("E = np.exp(Z_out - Z_out.max(axis=1, keepdims=True))", "E = np.exp(Z_out)")),
    benign("softmax-global-max", "softmax shifted by the batch's max, not each row's",
           ("E = np.exp(Z_out - Z_out.max(axis=1, keepdims=True))", "E = np.exp(Z_out - Z_out.max())")),
    benign("reversed-sums", "every matmul summed in reverse order",
           (M1, "M = inputs[-1][:, ::-1] @ W[:, ::-1].T"),
           (GRAD_W, 'grads[f"{name}/weight"] = dZ[::-1].T @ inputs[k - 1][::-1]'),
           (GRAD_B, 'grads[f"{name}/bias"] = dZ[::-1].sum(axis=0)')),
    benign("sequential-sums", "hidden matmul and batch sums added one term at a time (no pairwise or blocked sums)",
           (M1, SEQUENTIAL_M1),
           (GRAD_B, 'grads[f"{name}/bias"] = np.cumsum(dZ, axis=0)[-1]')),
    benign("relu-as-product", "relu as z * (z > 0)", ("return np.maximum(z, 0)", "return z * (z > 0)")),
    benign("relu-as-where", "relu as np.where, its slope from a > 0",
           ("return np.maximum(z, 0)", "return np.where(z > 0, z, 0)"),
           ("return (z > 0).astype(z.dtype)", "return (a > 0).astype(a.dtype)")),
    benign("features-major", "hidden layer kept features-major, (H, m), and transposed back",
           (M1, "M = (W @ inputs[-1].T).T"), (BACKPROP, 'dOut = (params[f"{name}/weight"].T @ dZ.T).T  # (m, H_{k-1})'),
           (GRAD_W, 'grads[f"{name}/weight"] = (inputs[k - 1].T @ dZ).T')),
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
    benign("dropout-as-where", "dropout written with np.where (forward and backward) instead of a multiply",
           ("out = A[k] * D[k]", "out = np.where(mask == 1, A[k] * keep_scale[k], 0).astype(dt)"),
           ("dA = dOut * D[k] if k in D else dOut",
            "dA = np.where(masks[k][i] == 1, dOut * keep_scale[k], 0).astype(dt) if k in D else dOut"), **DROPOUT),
    benign("torch-vs-numpy-deep-dropout", "PyTorch against numpy, 784-24-16-10 with dropout 0.2",
           impl="torch", reference="numpy", **DROPOUT),
    benign("jax-vs-numpy-three-layers-adam", "JAX against numpy, three hidden layers, Adam",
           impl="jax", reference="numpy", layers=(24, 16, 12), **ADAM),
    benign("torch-vs-numpy-deep-mse-sum", "PyTorch against numpy, two hidden layers, sigmoid, summed squared error "
           "and batch (goml's conventions)", impl="torch", reference="numpy", layers=(24, 16), activation="sigmoid",
           loss="mse", squared_error="sum", batch_reduction="sum", lr=0.01),
]


# Correct orders of summation that do not round at random, under configs that magnify rounding:
# batch 1000 (long batch sums), lr 1.0, sigmoid + MSE, Adam (its step divides by sqrt(v)), H = 800.
def _bias_sum(order: str, what: str) -> tuple[str, str]:
    """db as a sequential sum (np.cumsum adds one term at a time) of dZ's rows in the order `order` picks."""
    return GRAD_B, (f"o = {order}  # {what}\n"
                    '            grads[f"{name}/bias"] = np.cumsum(np.take_along_axis(dZ, o, axis=0), axis=0)[-1]')


BY_MAGNITUDE = _bias_sum("np.argsort(np.abs(dZ), axis=0)", "each column's terms, smallest magnitude first")
BY_MAGNITUDE_DOWN = _bias_sum("np.argsort(-np.abs(dZ), axis=0)", "largest magnitude first")
BY_VALUE = _bias_sum("np.argsort(dZ, axis=0)", "most negative first: the running sum swings furthest")
BY_LABEL = ((GRAD_B, ('grads[f"{name}/bias"] = np.cumsum(dZ[np.argsort(y, kind="stable")], axis=0)[-1]  '
                      "# grouped by label")),
            (GRAD_W, ('o = np.argsort(y, kind="stable")  # the batch grouped by label\n'
                      '            grads[f"{name}/weight"] = dZ[o].T @ inputs[k - 1][o]  # (H_k, fan_in)')))


def _sorted_dots(descending: bool) -> tuple[str, str]:
    """Every hidden matmul as dot products whose terms are added one at a time in sorted order."""
    order = "[:, :, ::-1]" if descending else ""
    return M1, ("T = inputs[-1][:, None, :] * W[None, :, :]  # (m, H_k, fan_in): every product\n"
                f"            M = np.cumsum(np.sort(T, axis=2){order}, axis=2)[:, :, -1]  # each dot product sorted")


BLOCKED = ((M1, ("M = np.zeros((inputs[-1].shape[0], W.shape[0]), dt)  # (m, H_k)\n"
                 "            for j in range(0, W.shape[1], 49):  # blocks of 49 inputs, each a matmul, added in turn\n"
                 "                M += inputs[-1][:, j:j + 49] @ W[:, j:j + 49].T")),
           (GRAD_B, ('grads[f"{name}/bias"] = np.cumsum(np.add.reduceat(dZ, np.arange(0, len(dZ), 50), axis=0), '
                     "axis=0)[-1]  # blocks of 50 samples")))
TREE = (GRAD_B, ("t = dZ  # (m, H_k): neighbours added in pairs, level by level, down to one row\n"
                 "            while len(t) > 1:\n"
                 "                odd = t[len(t) - 1:] if len(t) % 2 else t[:0]\n"
                 "                t = np.concatenate([t[0:len(t) - 1:2] + t[1::2], odd])\n"
                 '            grads[f"{name}/bias"] = t[0]'))
LONG = {"batch_size": 1000, "steps": 100}
MSE_LR1 = {"activation": "sigmoid", "loss": "mse", "lr": 1.0}

ORDER_VARIANTS: list[Case] = [
    benign("sums-by-magnitude", "batch sums added smallest magnitude first, batch 1000", BY_MAGNITUDE, **LONG),
    benign("sums-by-magnitude-down-adam", "batch sums added largest magnitude first, batch 1000, Adam",
           BY_MAGNITUDE_DOWN, **LONG, **ADAM),
    benign("sums-by-value-sigmoid-mse", "batch sums added most negative first, batch 1000, sigmoid + MSE, lr 1.0",
           BY_VALUE, **LONG, **MSE_LR1),
    benign("sums-by-value-adam", "batch sums added most negative first, batch 1000, Adam", BY_VALUE, **LONG, **ADAM),
    benign("sums-grouped-by-label", "batch sums with the batch grouped by label, batch 1000, lr 1.0", *BY_LABEL,
           **LONG, lr=1.0),
    benign("dot-products-sorted", "each hidden dot product's terms added in ascending order",
           _sorted_dots(descending=False), steps=100),
    benign("dot-products-sorted-down-adam", "each hidden dot product's terms added in descending order, Adam",
           _sorted_dots(descending=True), steps=100, **ADAM),
    benign("blocked-sums", "hidden matmul in blocks of 49 inputs and batch sums in blocks of 50, each added in turn, "
           "batch 1000, lr 1.0", *BLOCKED, **LONG, lr=1.0),
    benign("tree-sums-sigmoid-mse", "batch sums as a tree of neighbouring pairs, batch 1000, sigmoid + MSE, lr 1.0",
           TREE, **LONG, **MSE_LR1),
    benign("sorted-and-grouped-h800", "batch sums by value and weight gradients grouped by label, H=800, batch 1000",
           BY_VALUE, BY_LABEL[1], **LONG, hidden=800),
]

CATALOGUE: list[Case] = BUGS + BENIGN_VARIANTS + ORDER_VARIANTS

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
    "grad-w2-from-own-activation": "wrong_operand", "layer-weights-transposed": "layout",
    "activation-skipped-in-one-layer": "wrong_operand", "dropout-not-scaled": "scale",
    "dropout-mask-reused": "wrong_operand", "dropout-before-bias": "wrong_operand",
    "dropout-backward-only": "wrong_operand", "dropout-missing-in-backward": "wrong_operand",
}

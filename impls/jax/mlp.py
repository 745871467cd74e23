"""The MLP (784 -> hidden layers -> 10, dropout optional) in jax.numpy, one jit-compiled training step,
gradients from jax.grad.

The gradients of the intermediates (dZ, dA, the dropout's output) are read off by differentiating with
respect to zero "probes" added to those tensors: d loss / d probe = d loss / d tensor.
Matmuls run at full float32 precision, unless the job asks for TF32 or bfloat16 ones (`"precision"`),
which only a GPU has: on the CPU such a job is refused as unsupported. A job that asks for tensors kept in
bfloat16 or float16 gets mixed precision as a JAX user writes it (the jmp policy): float32 master weights
and optimizer, cast to the compute dtype for the forward and backward pass, gradients cast back.
"""

import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}
PER_OUTPUT = {"mean": 0.1, "sum": 1.0, "half_sum": 0.5}  # mse: a sample's squared error over the 10 outputs


def layer_names(depth):
    """hidden, output for one hidden layer; hidden1, hidden2, ..., output for more."""
    return (["hidden"] if depth == 1 else [f"hidden{k}" for k in range(1, depth + 1)]) + ["output"]


def forward_loss(params, probes, x, y, keeps, cfg):
    """The loss, and every forward tensor as auxiliary output. params = (W1, b1, W2, b2, ...); keeps[k] is
    hidden layer k's dropout mask scaled by 1 / (1 - p), or None."""
    weights, biases = params[0::2], params[1::2]
    h, fwd = x, {}
    for k in range(len(weights) - 1):
        mk = h @ weights[k].T  # (m, H_k)
        zk = mk + biases[k] + probes[f"z{k}"]  # (m, H_k)
        ak = ACTIVATIONS[cfg["activation"]](zk) + probes[f"a{k}"]  # (m, H_k)
        fwd.update({f"m{k}": mk, f"z{k}": zk, f"a{k}": ak})
        h = ak
        if keeps[k] is not None:
            h = ak * keeps[k] + probes[f"d{k}"]  # (m, H_k)
            fwd[f"d{k}"] = h
    m_out = h @ weights[-1].T  # (m, 10)
    z_out = m_out + biases[-1] + probes["z_out"]  # (m, 10)
    divisor = x.shape[0] if cfg["batch_reduction"] == "mean" else 1
    if cfg["loss"] == "cross_entropy":
        p = jax.nn.softmax(z_out, axis=-1)  # (m, 10)
        logp = jax.nn.log_softmax(z_out, axis=-1)  # (m, 10)
        loss = -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1)) / divisor
    else:
        p = jax.nn.sigmoid(z_out)  # (m, 10)
        target = jnp.where(jax.nn.one_hot(y, 10) > 0, cfg["target_max"], cfg["target_min"]).astype(x.dtype)
        loss = PER_OUTPUT[cfg["squared_error"]] * jnp.sum((p - target) ** 2) / divisor
    fwd.update({"m_out": m_out, "z_out": z_out, "p": p})
    return loss, fwd


@partial(jax.jit, static_argnames=("cfg_items",))
def train_step(params, state, pixels, y, keeps, lr, corrections, cfg_items):
    """One step. state = (velocity, adam_m, adam_v), each a tuple like params; lr and Adam's bias
    corrections (1 - beta1^t, 1 - beta2^t) come in from Python, computed in float64."""
    cfg = dict(cfg_items)
    dtype = params[0].dtype
    compute = jnp.dtype(cfg["compute"])  # the forward and backward passes' dtype: the model's, or half precision
    x = pixels.astype(compute) / 255  # (m, D)
    if (cfg["input_min"], cfg["input_max"]) != (0.0, 1.0):
        x = x * jnp.asarray(cfg["input_max"] - cfg["input_min"], compute) + jnp.asarray(cfg["input_min"], compute)
    m = x.shape[0]
    probes = {"z_out": jnp.zeros((m, 10), compute)}
    for k, W in enumerate(params[0:-2:2]):  # the hidden layers' weights; a dropout probe where there is dropout
        for kind in ("z", "a") if keeps[k] is None else ("z", "a", "d"):
            probes[f"{kind}{k}"] = jnp.zeros((m, W.shape[0]), compute)
    grad_fn = jax.value_and_grad(forward_loss, argnums=(0, 1), has_aux=True)
    cast = tuple(p.astype(compute) for p in params)  # the compute copy of the float32 master weights
    keeps = tuple(k if k is None else k.astype(compute) for k in keeps)
    (loss, fwd), (gparams, gprobes) = grad_fn(cast, probes, x, y, keeps, cfg)
    # back to the master dtype: exact, so the records hold the compute dtype's values
    x, loss = x.astype(dtype), loss.astype(dtype)
    fwd, gparams, gprobes = jax.tree_util.tree_map(lambda t: t.astype(dtype), (fwd, gparams, gprobes))
    if cfg["log_eps"]:  # the printed loss takes log(P + eps); the gradient stays that of plain cross-entropy
        loss = -jnp.sum(jnp.log(jnp.take_along_axis(fwd["p"], y[:, None], axis=1) + cfg["log_eps"]))
        loss = loss / m if cfg["batch_reduction"] == "mean" else loss
    beta1, beta2 = cfg["adam_beta1"], cfg["adam_beta2"]
    new_params, new_state = [], ([], [], [])
    for p, g, v, mom1, mom2 in zip(params, gparams, *state):
        g = g + cfg["weight_decay"] * p
        if cfg["optimizer"] == "momentum":
            v = cfg["momentum"] * v + g
            g = v
        elif cfg["optimizer"] == "adam":
            mom1 = beta1 * mom1 + (1 - beta1) * g
            mom2 = beta2 * mom2 + (1 - beta2) * g * g
            g = (mom1 / corrections[0]) / (jnp.sqrt(mom2 / corrections[1]) + cfg["adam_eps"])
        for buffers, value in zip(new_state, (v, mom1, mom2)):
            buffers.append(value)
        new_params.append(p - lr * g)
    return tuple(new_params), tuple(map(tuple, new_state)), x, loss, fwd, gparams, gprobes


def run(job_dir, record):
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    cfg = job["config"]
    if cfg["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(cfg["dtype"])
    device = jax.devices()[0]
    mode = (job.get("precision") or {}).get("matmul", "float32")  # asked for by the harness: --precision-b tf32
    storage = (job.get("precision") or {}).get("storage", "float32")  # --precision-b bfloat16-storage
    if storage != "float32":  # mixed precision: its matmuls' operands are the compute dtype's values already
        if cfg["dtype"] != "float32" or mode not in ("float32", storage):
            return record.unsupported(f"{storage} compute runs a float32 model with {storage} matmuls (this run: "
                                      f"{cfg['dtype']}, {mode} matmuls)")
        # as asked, and what XLA adds: it may keep a reduction's running total in the compute dtype (on the CPU
        # it does, for the bias gradients' sums over the batch)
        record.precision(**{**job["precision"], "accumulate": storage})
        mode = "float32"
    elif mode == "float16":
        return record.unsupported("matmul precision float16: JAX's matmul precisions are highest, tensorfloat32 "
                                  "and bfloat16")
    if mode != "float32" and (device.platform != "gpu" or cfg["dtype"] != "float32"):
        return record.unsupported(f"matmul precision {mode} needs float32 on a GPU (this run: {cfg['dtype']} on "
                                  f"{device.platform}, whose matmuls are float32 at any precision setting)")
    # "highest" is full float32; on a GPU "tensorfloat32" and "bfloat16" round the operands (one pass)
    jax.config.update("jax_default_matmul_precision", {"float32": "highest", "tf32": "tensorfloat32",
                                                       "bfloat16": "bfloat16"}[mode])
    if mode != "float32":
        record.precision(matmul=mode)
    record.describe(device=device.platform if device.platform == "cpu" else f"{device.platform}:{device.device_kind}", jax=jax.__version__,
                    jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__)

    tensors = json.loads((job_dir / job["params"]).read_text())["tensors"]
    widths = cfg.get("layers") or [cfg["hidden"]]
    layers = layer_names(len(widths))
    param_names = [f"{layer}/{kind}" for layer in layers for kind in ("weight", "bias")]
    keys = [f"{kind}{k}" for k in range(1, len(layers) + 1) for kind in ("W", "b")]  # W1, b1, W2, b2, ...
    params = tuple(
        jnp.asarray(np.array(tensors[k]["data"], dtype=np.float64).reshape(tensors[k]["shape"]), dtype=dtype)
        for k in keys
    )
    for name, p in zip(param_names, params):
        record("load", name, np.asarray(p))
    state = []  # velocity, adam_m, adam_v: zeros, or for a replay the buffers of its checkpoint
    for kind in ("velocity", "adam_m", "adam_v"):
        buffers = tuple(jnp.zeros_like(p) for p in params)
        if job.get(kind):
            saved = json.loads((job_dir / job[kind]).read_text())["tensors"]
            buffers = tuple(jnp.asarray(np.array(saved[k]["data"], dtype=np.float64).reshape(saved[k]["shape"]),
                                        dtype=dtype) for k in keys)
        state.append(buffers)
    state = tuple(state)

    m, steps = job["batch_size"], job["steps"]
    D = job.get("pixels", 784)  # pixels per image: 784 for MNIST
    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        order = np.fromfile(job_dir / job["batches"], dtype="<u4").reshape(steps, m)
        pool_x = np.fromfile(job_dir / job["pool_images"], dtype=np.uint8).reshape(-1, D)
        pool_y = np.fromfile(job_dir / job["pool_labels"], dtype=np.uint8)

        def batch(i):
            return pool_x[order[i]], pool_y[order[i]].astype(np.int32)
    else:
        images = np.fromfile(job_dir / job["images"], dtype=np.uint8).reshape(steps, m, D)
        labels = np.fromfile(job_dir / job["labels"], dtype=np.uint8).reshape(steps, m).astype(np.int32)

        def batch(i):
            return images[i], labels[i]
    cfg_items = tuple(sorted((k, v) for k, v in cfg.items() if k in (
        "activation", "loss", "optimizer", "momentum", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps",
        "input_min", "input_max", "target_min", "target_max", "log_eps")))
    cfg_items += (("batch_reduction", cfg.get("batch_reduction", "mean")),
                  ("squared_error", cfg.get("squared_error", "mean")),
                  ("compute", storage if storage != "float32" else cfg["dtype"]))  # the passes' dtype
    masks = {}  # dropout: hidden layer (0-based) -> (steps, m, width) uint8 keep masks, and 1 / (1 - p)
    for entry in job.get("dropout", []):
        raw = np.fromfile(job_dir / entry["file"], dtype=np.uint8).reshape(entry["shape"])
        masks[entry["layer"] - 1] = (raw, 1 / (1 - entry["p"]))
    out_name = "output/softmax" if cfg["loss"] == "cross_entropy" else "output/sigmoid"

    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        lr = cfg["lr"]
        if cfg["lr_decay"] != 1 and cfg["epoch_steps"]:  # decayed once per epoch
            lr = cfg["lr"] * cfg["lr_decay"] ** (step // cfg["epoch_steps"])
        corrections = (1 - cfg["adam_beta1"] ** (step + 1), 1 - cfg["adam_beta2"] ** (step + 1))
        pixels, y = batch(i)
        keeps = tuple(jnp.asarray(masks[k][0][i], dtype) * jnp.asarray(masks[k][1], dtype) if k in masks else None
                      for k in range(len(widths)))  # (m, H_k): 0 or 1 / (1 - p)
        params, state, x, loss, fwd, gparams, gprobes = train_step(
            params, state, jnp.asarray(pixels), jnp.asarray(y), keeps, lr, corrections, cfg_items)
        record(step, "input/x", np.asarray(x))
        record(step, "input/y", y.astype(np.int64))
        for k, name in enumerate(layers[:-1]):
            record(step, f"{name}/matmul", np.asarray(fwd[f"m{k}"]))
            record(step, f"{name}/bias_add", np.asarray(fwd[f"z{k}"]))
            record(step, f"{name}/activation", np.asarray(fwd[f"a{k}"]))
            if k in masks:
                record(step, f"{name}/dropout_mask", masks[k][0][i])
                record(step, f"{name}/dropout", np.asarray(fwd[f"d{k}"]))
        record(step, "output/matmul", np.asarray(fwd["m_out"]))
        record(step, "output/bias_add", np.asarray(fwd["z_out"]))
        record(step, out_name, np.asarray(fwd["p"]))
        record(step, "loss/value", np.asarray(loss))
        record(step, "output/grad_logits", np.asarray(gprobes["z_out"]))
        for k in range(len(layers) - 1, -1, -1):  # from the output layer down
            name = layers[k]
            if k < len(widths):
                if k in masks:
                    record(step, f"{name}/grad_dropout", np.asarray(gprobes[f"d{k}"]))
                record(step, f"{name}/grad_activation", np.asarray(gprobes[f"a{k}"]))
                record(step, f"{name}/grad_preactivation", np.asarray(gprobes[f"z{k}"]))
            record(step, f"{name}/grad_weight", np.asarray(gparams[2 * k]))
            record(step, f"{name}/grad_bias", np.asarray(gparams[2 * k + 1]))
        kinds = {"momentum": ("velocity",), "adam": ("adam_m", "adam_v")}.get(cfg["optimizer"], ())
        for kind, buffers in zip(("velocity", "adam_m", "adam_v"), state):
            if kind in kinds:
                for name, v in zip(param_names, buffers):
                    record(step, f"{name}_{kind}", np.asarray(v))
        for name, p in zip(param_names, params):
            record(step, name, np.asarray(p))

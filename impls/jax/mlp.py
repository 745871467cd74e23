"""The 784-H-10 MLP in jax.numpy, one jit-compiled training step, gradients from jax.grad.

The gradients of the intermediates (dZ2, dA1, dZ1) are read off by differentiating with
respect to zero "probes" added to those tensors: d loss / d probe = d loss / d tensor.
Matmuls run at full float32 precision (no TF32 or bf16 passes on a GPU).
"""

import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}
NAMES = ("hidden/weight", "hidden/bias", "output/weight", "output/bias")


def forward_loss(params, probes, x, y, activation, loss_kind, targets=(0.0, 1.0)):
    """The loss, and every forward tensor as auxiliary output."""
    W1, b1, W2, b2 = params
    m1 = x @ W1.T  # (m, H)
    z1 = m1 + b1 + probes["z1"]  # (m, H)
    a1 = ACTIVATIONS[activation](z1) + probes["a1"]  # (m, H)
    m2 = a1 @ W2.T  # (m, 10)
    z2 = m2 + b2 + probes["z2"]  # (m, 10)
    if loss_kind == "cross_entropy":
        p = jax.nn.softmax(z2, axis=-1)  # (m, 10)
        logp = jax.nn.log_softmax(z2, axis=-1)  # (m, 10)
        loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    else:
        p = jax.nn.sigmoid(z2)  # (m, 10)
        low, high = targets
        target = jnp.where(jax.nn.one_hot(y, 10) > 0, high, low).astype(x.dtype)  # (m, 10)
        loss = jnp.mean((p - target) ** 2)
    return loss, {"m1": m1, "z1": z1, "a1": a1, "m2": m2, "z2": z2, "p": p}


@partial(jax.jit, static_argnames=("cfg_items",))
def train_step(params, state, pixels, y, lr, corrections, cfg_items):
    """One step. state = (velocity, adam_m, adam_v), each a tuple like params; lr and Adam's bias
    corrections (1 - beta1^t, 1 - beta2^t) come in from Python, computed in float64."""
    cfg = dict(cfg_items)
    dtype = params[0].dtype
    x = pixels.astype(dtype) / 255  # (m, 784)
    if (cfg["input_min"], cfg["input_max"]) != (0.0, 1.0):
        x = x * jnp.asarray(cfg["input_max"] - cfg["input_min"], dtype) + jnp.asarray(cfg["input_min"], dtype)
    m, H = x.shape[0], params[0].shape[0]
    probes = {"z1": jnp.zeros((m, H), dtype), "a1": jnp.zeros((m, H), dtype), "z2": jnp.zeros((m, 10), dtype)}
    grad_fn = jax.value_and_grad(forward_loss, argnums=(0, 1), has_aux=True)
    (loss, fwd), (gparams, gprobes) = grad_fn(params, probes, x, y, cfg["activation"], cfg["loss"],
                                              (cfg["target_min"], cfg["target_max"]))
    if cfg["log_eps"]:  # the printed loss takes log(P + eps); the gradient stays that of plain cross-entropy
        loss = -jnp.mean(jnp.log(jnp.take_along_axis(fwd["p"], y[:, None], axis=1) + cfg["log_eps"]))
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
    jax.config.update("jax_default_matmul_precision", "highest")
    dtype = jnp.dtype(cfg["dtype"])
    device = jax.devices()[0]
    record.describe(device=device.platform if device.platform == "cpu" else f"{device.platform}:{device.device_kind}", jax=jax.__version__,
                    jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__)

    tensors = json.loads((job_dir / job["params"]).read_text())["tensors"]
    params = tuple(
        jnp.asarray(np.array(tensors[k]["data"], dtype=np.float64).reshape(tensors[k]["shape"]), dtype=dtype)
        for k in ("W1", "b1", "W2", "b2")
    )
    for name, p in zip(NAMES, params):
        record("load", name, np.asarray(p))
    state = []  # velocity, adam_m, adam_v: zeros, or for a replay the buffers of its checkpoint
    for kind in ("velocity", "adam_m", "adam_v"):
        buffers = tuple(jnp.zeros_like(p) for p in params)
        if job.get(kind):
            saved = json.loads((job_dir / job[kind]).read_text())["tensors"]
            buffers = tuple(jnp.asarray(np.array(saved[k]["data"], dtype=np.float64).reshape(saved[k]["shape"]),
                                        dtype=dtype) for k in ("W1", "b1", "W2", "b2"))
        state.append(buffers)
    state = tuple(state)

    m, steps = job["batch_size"], job["steps"]
    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        order = np.fromfile(job_dir / job["batches"], dtype="<u4").reshape(steps, m)
        pool_x = np.fromfile(job_dir / job["pool_images"], dtype=np.uint8).reshape(-1, 784)
        pool_y = np.fromfile(job_dir / job["pool_labels"], dtype=np.uint8)

        def batch(i):
            return pool_x[order[i]], pool_y[order[i]].astype(np.int32)
    else:
        images = np.fromfile(job_dir / job["images"], dtype=np.uint8).reshape(steps, m, 784)
        labels = np.fromfile(job_dir / job["labels"], dtype=np.uint8).reshape(steps, m).astype(np.int32)

        def batch(i):
            return images[i], labels[i]
    cfg_items = tuple(sorted((k, v) for k, v in cfg.items() if k in (
        "activation", "loss", "optimizer", "momentum", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps",
        "input_min", "input_max", "target_min", "target_max", "log_eps")))
    out_name = "output/softmax" if cfg["loss"] == "cross_entropy" else "output/sigmoid"

    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        lr = cfg["lr"]
        if cfg["lr_decay"] != 1 and cfg["epoch_steps"]:  # decayed once per epoch
            lr = cfg["lr"] * cfg["lr_decay"] ** (step // cfg["epoch_steps"])
        corrections = (1 - cfg["adam_beta1"] ** (step + 1), 1 - cfg["adam_beta2"] ** (step + 1))
        pixels, y = batch(i)
        params, state, x, loss, fwd, gparams, gprobes = train_step(
            params, state, jnp.asarray(pixels), jnp.asarray(y), lr, corrections, cfg_items)
        record(step, "input/x", np.asarray(x))
        record(step, "input/y", y.astype(np.int64))
        record(step, "hidden/matmul", np.asarray(fwd["m1"]))
        record(step, "hidden/bias_add", np.asarray(fwd["z1"]))
        record(step, "hidden/activation", np.asarray(fwd["a1"]))
        record(step, "output/matmul", np.asarray(fwd["m2"]))
        record(step, "output/bias_add", np.asarray(fwd["z2"]))
        record(step, out_name, np.asarray(fwd["p"]))
        record(step, "loss/value", np.asarray(loss))
        record(step, "output/grad_logits", np.asarray(gprobes["z2"]))
        record(step, "output/grad_weight", np.asarray(gparams[2]))
        record(step, "output/grad_bias", np.asarray(gparams[3]))
        record(step, "hidden/grad_activation", np.asarray(gprobes["a1"]))
        record(step, "hidden/grad_preactivation", np.asarray(gprobes["z1"]))
        record(step, "hidden/grad_weight", np.asarray(gparams[0]))
        record(step, "hidden/grad_bias", np.asarray(gparams[1]))
        kinds = {"momentum": ("velocity",), "adam": ("adam_m", "adam_v")}.get(cfg["optimizer"], ())
        for kind, buffers in zip(("velocity", "adam_m", "adam_v"), state):
            if kind in kinds:
                for name, v in zip(NAMES, buffers):
                    record(step, f"{name}_{kind}", np.asarray(v))
        for name, p in zip(NAMES, params):
            record(step, name, np.asarray(p))

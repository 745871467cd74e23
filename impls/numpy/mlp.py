"""The 784-H-10 MLP in vectorised numpy, backward pass written by hand.

Reads the job directory (job.json, params.json, images.u8, labels.u8, or for an indexed job
the image pool and batches.u32) and records every tensor of every step through
`record(step, name, array)`.
"""

import json
from pathlib import Path

import numpy as np


def load_param(tensors, key, dtype):
    t = tensors[key]
    return np.array(t["data"], dtype=np.float64).reshape(t["shape"]).astype(dtype)


def activate(kind, z):
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return np.tanh(z)


def activation_slope(kind, z, a):
    """d activation / d z, from the pre-activation z or the activation a."""
    if kind == "relu":
        return (z > 0).astype(z.dtype)
    if kind == "sigmoid":
        return a * (1 - a)
    return 1 - a * a


class Pool:
    """The batches of an indexed job: pool[i] is step i's samples, picked from the images once held."""

    def __init__(self, pool, order):
        self.pool, self.order = pool, order

    def __getitem__(self, i):
        return self.pool[self.order[i]]


def run(job_dir, record):
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    cfg = job["config"]
    dt = np.dtype(cfg["dtype"])
    m, steps = job["batch_size"], job["steps"]
    record.describe(device="cpu", numpy=np.__version__)

    tensors = json.loads((job_dir / job["params"]).read_text())["tensors"]
    params = {
        "hidden/weight": load_param(tensors, "W1", dt),  # (H, 784)
        "hidden/bias": load_param(tensors, "b1", dt),  # (H,)
        "output/weight": load_param(tensors, "W2", dt),  # (10, H)
        "output/bias": load_param(tensors, "b2", dt),  # (10,)
    }
    for name, value in params.items():
        record("load", name, value)
    # optimizer state: zeros, or for a replay the buffers of its checkpoint
    state = {}
    for kind in ("velocity", "adam_m", "adam_v"):
        state[kind] = {name: np.zeros_like(value) for name, value in params.items()}
        if job.get(kind):
            saved = json.loads((job_dir / job[kind]).read_text())["tensors"]
            state[kind] = {name: load_param(saved, key, dt) for name, key in zip(params, ("W1", "b1", "W2", "b2"))}
    velocity, adam_m, adam_v = state["velocity"], state["adam_m"], state["adam_v"]
    beta1, beta2 = cfg["adam_beta1"], cfg["adam_beta2"]

    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        order = np.fromfile(job_dir / job["batches"], dtype="<u4").reshape(steps, m)
        images = Pool(np.fromfile(job_dir / job["pool_images"], dtype=np.uint8).reshape(-1, 784), order)
        labels = Pool(np.fromfile(job_dir / job["pool_labels"], dtype=np.uint8), order)
    else:
        images = np.fromfile(job_dir / job["images"], dtype=np.uint8).reshape(steps, m, 784)
        labels = np.fromfile(job_dir / job["labels"], dtype=np.uint8).reshape(steps, m)
    scaled = (cfg["input_min"], cfg["input_max"]) != (0.0, 1.0)
    soft = (cfg["target_min"], cfg["target_max"]) != (0.0, 1.0)

    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        W1, b1 = params["hidden/weight"], params["hidden/bias"]
        W2, b2 = params["output/weight"], params["output/bias"]
        X = images[i].astype(dt) / 255  # (m, 784)
        if scaled:
            X = X * dt.type(cfg["input_max"] - cfg["input_min"]) + dt.type(cfg["input_min"])
        y = labels[i].astype(np.int64)  # (m,)
        Y = np.eye(10, dtype=dt)[y]  # (m, 10)
        if soft:
            Y = np.where(Y == 1, dt.type(cfg["target_max"]), dt.type(cfg["target_min"]))
        record(step, "input/x", X)
        record(step, "input/y", y)

        M1 = X @ W1.T  # (m, H)
        Z1 = M1 + b1  # (m, H)
        A1 = activate(cfg["activation"], Z1)  # (m, H)
        M2 = A1 @ W2.T  # (m, 10)
        Z2 = M2 + b2  # (m, 10)
        record(step, "hidden/matmul", M1)
        record(step, "hidden/bias_add", Z1)
        record(step, "hidden/activation", A1)
        record(step, "output/matmul", M2)
        record(step, "output/bias_add", Z2)

        if cfg["loss"] == "cross_entropy":
            E = np.exp(Z2 - Z2.max(axis=1, keepdims=True))  # (m, 10)
            P = E / E.sum(axis=1, keepdims=True)  # (m, 10)
            loss = -np.mean(np.log(P[np.arange(m), y] + cfg["log_eps"]))
            dZ2 = (P - Y) / m  # (m, 10)
            record(step, "output/softmax", P)
        else:
            P = 1 / (1 + np.exp(-Z2))  # (m, 10)
            loss = np.mean((P - Y) ** 2)
            dZ2 = 2 * (P - Y) * P * (1 - P) / (m * 10)  # (m, 10)
            record(step, "output/sigmoid", P)
        record(step, "loss/value", loss)

        grads = {}
        grads["output/weight"] = dZ2.T @ A1  # (10, H)
        grads["output/bias"] = dZ2.sum(axis=0)  # (10,)
        dA1 = dZ2 @ W2  # (m, H)
        dZ1 = dA1 * activation_slope(cfg["activation"], Z1, A1)  # (m, H)
        grads["hidden/weight"] = dZ1.T @ X  # (H, 784)
        grads["hidden/bias"] = dZ1.sum(axis=0)  # (H,)
        record(step, "output/grad_logits", dZ2)
        record(step, "output/grad_weight", grads["output/weight"])
        record(step, "output/grad_bias", grads["output/bias"])
        record(step, "hidden/grad_activation", dA1)
        record(step, "hidden/grad_preactivation", dZ1)
        record(step, "hidden/grad_weight", grads["hidden/weight"])
        record(step, "hidden/grad_bias", grads["hidden/bias"])

        lr = cfg["lr"]
        if cfg["lr_decay"] != 1 and cfg["epoch_steps"]:  # decayed once per epoch
            lr = cfg["lr"] * cfg["lr_decay"] ** (step // cfg["epoch_steps"])
        for name in params:
            g = grads[name] + cfg["weight_decay"] * params[name]
            if cfg["optimizer"] == "momentum":
                velocity[name] = cfg["momentum"] * velocity[name] + g
                record(step, name + "_velocity", velocity[name])
                g = velocity[name]
            elif cfg["optimizer"] == "adam":
                adam_m[name] = beta1 * adam_m[name] + (1 - beta1) * g
                adam_v[name] = beta2 * adam_v[name] + (1 - beta2) * g * g
                record(step, name + "_adam_m", adam_m[name])
                record(step, name + "_adam_v", adam_v[name])
                m_hat = adam_m[name] / (1 - beta1 ** (step + 1))  # bias corrections in float64, as PyTorch
                v_hat = adam_v[name] / (1 - beta2 ** (step + 1))
                g = m_hat / (np.sqrt(v_hat) + cfg["adam_eps"])
            params[name] = params[name] - lr * g
        for name, value in params.items():
            record(step, name, value)

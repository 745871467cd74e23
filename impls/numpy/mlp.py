"""The MLP (784 pixels -> hidden layers -> 10, dropout optional) in vectorised numpy, backward pass written by hand.

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


def rounding(fmt):
    """How a float32 value is rounded to TF32's or bfloat16's significand (nearest, ties to even), or to
    float16, as a GPU's tensor cores read a matmul operand or a half-precision tensor holds it."""
    if fmt == "float16":
        return lambda x: np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    drop = {"tf32": 13, "bfloat16": 16}[fmt]  # float32's 23 stored significand bits, less the format's

    def rounded(x):
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        lsb = (bits >> np.uint32(drop)) & np.uint32(1)
        kept = bits + np.uint32((1 << (drop - 1)) - 1) + lsb
        return (kept & np.uint32(0xFFFFFFFF ^ ((1 << drop) - 1))).view(np.float32)
    return rounded


class Reduced(np.ndarray):
    """float32 arrays computed at the precision the job asks for ("precision"): a matmul rounds both its
    operands first and accumulates in float32 (TF32, bfloat16 or float16 tensor cores); with a storage
    format, every op's result is rounded to it (a network kept in bfloat16 or float16). Each op is numpy's."""

    operand = None  # rounds a matmul's operands, or None
    store = None  # rounds every result, or None

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [np.asarray(x) if isinstance(x, Reduced) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(o) for o in kwargs["out"])
        if ufunc is np.matmul and method == "__call__" and Reduced.operand is not None:
            args = [Reduced.operand(x) for x in args]
        result = getattr(ufunc, method)(*args, **kwargs)
        if isinstance(result, np.ndarray) and result.dtype == np.float32:
            return (Reduced.store(result) if Reduced.store is not None else result).view(Reduced)
        return result


class Pool:
    """The batches of an indexed job: pool[i] is step i's samples, picked from the images once held."""

    def __init__(self, pool, order):
        self.pool, self.order = pool, order

    def __getitem__(self, i):
        return self.pool[self.order[i]]


def layer_names(depth):
    """hidden, output for one hidden layer; hidden1, hidden2, ..., output for more."""
    hidden = ["hidden"] if depth == 1 else [f"hidden{k}" for k in range(1, depth + 1)]
    return hidden + ["output"]


def run(job_dir, record):
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    cfg = job["config"]
    dt = np.dtype(cfg["dtype"])
    m, steps = job["batch_size"], job["steps"]
    pixels = job.get("pixels", 784)  # per image: 784 for MNIST
    record.describe(device="cpu", numpy=np.__version__)
    precision = {k: v for k, v in (job.get("precision") or {}).items() if v != "float32"}  # --precision-b tf32
    precision.pop("accumulate", None)  # its sums' running totals are float32 whatever it stores
    if precision and dt != np.float32:
        return record.unsupported(f"precision {precision} rounds float32 values; this run is {dt}")
    if precision:
        record.precision(**precision)
        Reduced.operand = rounding(precision["matmul"]) if "matmul" in precision else None
        Reduced.store = rounding(precision["storage"]) if "storage" in precision else None

    def operands(x):  # an array the step computes with, at the precision asked for
        return x if not precision else (Reduced.store(x) if Reduced.store else x).view(Reduced)
    widths = cfg.get("layers") or [cfg["hidden"]]
    names = layer_names(len(widths))  # L hidden layers, then the output
    L = len(widths)

    tensors = json.loads((job_dir / job["params"]).read_text())["tensors"]
    params = {}  # hidden/weight (H, pixels), hidden/bias (H,), ..., output/weight (10, H_L), output/bias (10,)
    keys = {}  # the parameter file's name of each
    for k, name in enumerate(names, start=1):
        params[f"{name}/weight"] = load_param(tensors, f"W{k}", dt)
        params[f"{name}/bias"] = load_param(tensors, f"b{k}", dt)
        keys[f"{name}/weight"], keys[f"{name}/bias"] = f"W{k}", f"b{k}"
    params = {name: operands(value) for name, value in params.items()}
    for name, value in params.items():
        record("load", name, value)
    # optimizer state: zeros, or for a replay the buffers of its checkpoint
    state = {}
    for kind in ("velocity", "adam_m", "adam_v"):
        state[kind] = {name: np.zeros_like(value) for name, value in params.items()}
        if job.get(kind):
            saved = json.loads((job_dir / job[kind]).read_text())["tensors"]
            state[kind] = {name: load_param(saved, keys[name], dt) for name in params}
    velocity, adam_m, adam_v = state["velocity"], state["adam_m"], state["adam_v"]
    beta1, beta2 = cfg["adam_beta1"], cfg["adam_beta2"]

    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        order = np.fromfile(job_dir / job["batches"], dtype="<u4").reshape(steps, m)
        images = Pool(np.fromfile(job_dir / job["pool_images"], dtype=np.uint8).reshape(-1, pixels), order)
        labels = Pool(np.fromfile(job_dir / job["pool_labels"], dtype=np.uint8), order)
    else:
        images = np.fromfile(job_dir / job["images"], dtype=np.uint8).reshape(steps, m, pixels)
        labels = np.fromfile(job_dir / job["labels"], dtype=np.uint8).reshape(steps, m)
    masks, keep_scale = {}, {}  # dropout: per hidden layer (1-based), (steps, m, width) of 0/1, and 1 / (1 - p)
    for entry in job.get("dropout", []):
        masks[entry["layer"]] = np.fromfile(job_dir / entry["file"], dtype=np.uint8).reshape(entry["shape"])
        keep_scale[entry["layer"]] = dt.type(1 / (1 - entry["p"]))
    scaled = (cfg["input_min"], cfg["input_max"]) != (0.0, 1.0)
    soft = (cfg["target_min"], cfg["target_max"]) != (0.0, 1.0)
    divisor = m if cfg.get("batch_reduction", "mean") == "mean" else 1  # the loss over the batch: mean or sum
    per_output = {"mean": 1 / 10, "sum": 1.0, "half_sum": 0.5}[cfg.get("squared_error", "mean")]  # mse only

    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        X = images[i].astype(dt) / 255  # (m, pixels)
        if scaled:
            X = X * dt.type(cfg["input_max"] - cfg["input_min"]) + dt.type(cfg["input_min"])
        y = labels[i].astype(np.int64)  # (m,)
        Y = np.eye(10, dtype=dt)[y]  # (m, 10)
        if soft:
            Y = np.where(Y == 1, dt.type(cfg["target_max"]), dt.type(cfg["target_min"]))
        X = operands(X)
        record(step, "input/x", X)
        record(step, "input/y", y)

        inputs, Z, A, D = [X], {}, {}, {}  # inputs[k - 1]: what layer k reads, (m, fan_in)
        for k in range(1, L + 1):
            name = names[k - 1]
            W, b = params[f"{name}/weight"], params[f"{name}/bias"]
            M = inputs[-1] @ W.T  # (m, H_k)
            Z[k] = M + b  # (m, H_k)
            A[k] = activate(cfg["activation"], Z[k])  # (m, H_k)
            record(step, f"{name}/matmul", M)
            record(step, f"{name}/bias_add", Z[k])
            record(step, f"{name}/activation", A[k])
            out = A[k]
            if k in masks:
                mask = masks[k][i]  # (m, H_k): 1 keeps a unit, 0 drops it
                D[k] = mask.astype(dt) * keep_scale[k]  # (m, H_k): 0, or 1 / (1 - p)
                out = A[k] * D[k]
                record(step, f"{name}/dropout_mask", mask)
                record(step, f"{name}/dropout", out)
            inputs.append(out)
        W_out, b_out = params["output/weight"], params["output/bias"]
        M_out = inputs[-1] @ W_out.T  # (m, 10)
        Z_out = M_out + b_out  # (m, 10)
        record(step, "output/matmul", M_out)
        record(step, "output/bias_add", Z_out)

        if cfg["loss"] == "cross_entropy":
            E = np.exp(Z_out - Z_out.max(axis=1, keepdims=True))  # (m, 10)
            P = E / E.sum(axis=1, keepdims=True)  # (m, 10)
            loss = -np.sum(np.log(P[np.arange(m), y] + cfg["log_eps"])) / divisor
            dZ = (P - Y) / divisor  # (m, 10)
            record(step, "output/softmax", P)
        else:
            P = 1 / (1 + np.exp(-Z_out))  # (m, 10)
            loss = per_output * np.sum((P - Y) ** 2) / divisor
            dZ = 2 * per_output * (P - Y) * P * (1 - P) / divisor  # (m, 10)
            record(step, "output/sigmoid", P)
        record(step, "loss/value", loss)

        grads = {}
        dOut = None  # the gradient at the output of the layer below the one in hand, (m, H_{k-1})
        record(step, "output/grad_logits", dZ)
        for k in range(L + 1, 0, -1):  # from the output layer down
            name = names[k - 1]
            if k <= L:  # a hidden layer: dZ from the gradient at its output
                dA = dOut * D[k] if k in D else dOut  # (m, H_k)
                if k in D:
                    record(step, f"{name}/grad_dropout", dOut)
                record(step, f"{name}/grad_activation", dA)
                dZ = dA * activation_slope(cfg["activation"], Z[k], A[k])  # (m, H_k)
                record(step, f"{name}/grad_preactivation", dZ)
            grads[f"{name}/weight"] = dZ.T @ inputs[k - 1]  # (H_k, fan_in)
            grads[f"{name}/bias"] = dZ.sum(axis=0)  # (H_k,)
            record(step, f"{name}/grad_weight", grads[f"{name}/weight"])
            record(step, f"{name}/grad_bias", grads[f"{name}/bias"])
            if k > 1:
                dOut = dZ @ params[f"{name}/weight"]  # (m, H_{k-1}): the gradient at the layer below's output

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

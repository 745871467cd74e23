"""The 784-H-10 MLP in plain Python: lists of rows and loops, standard library only.

Python floats are doubles. In float32 mode every op's result is rounded to float32 through
array('f'), so each recorded tensor holds float32 values (sums accumulate in double first,
which is more accurate than float32 accumulation, never less).

Also a standalone program: `python mlp.py JOB_DIR OUT.jsonl` writes a JSON-lines memstate,
which is how an implementation in any other language talks to the harness.
"""

import json
import math
import os
import platform
import sys
from array import array
from operator import mul


def make_round(dtype):
    if dtype == "float32":
        return lambda values: array("f", values).tolist()
    return list


def transpose(rows):
    return [list(col) for col in zip(*rows)]


def matmul_t(a_rows, b_rows, rnd):
    """a @ b.T: a (n, k) and b (p, k) as lists of rows -> (n, p)."""
    return [rnd([sum(map(mul, a, b)) for b in b_rows]) for a in a_rows]


def add_row(rows, bias, rnd):
    return [rnd([v + c for v, c in zip(row, bias)]) for row in rows]


def sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def activate(kind, v):
    if kind == "relu":
        return v if v > 0 else 0.0
    if kind == "sigmoid":
        return sigmoid(v)
    return math.tanh(v)


def slope(kind, z, a):
    if kind == "relu":
        return 1.0 if z > 0 else 0.0
    if kind == "sigmoid":
        return a * (1.0 - a)
    return 1.0 - a * a


def run(job_dir, record):
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    cfg = job["config"]
    dtype = cfg["dtype"]
    rnd = make_round(dtype)
    m, steps = job["batch_size"], job["steps"]
    record.describe(device="cpu", python=platform.python_version())

    def rec(step, name, value):
        record(step, name, value, dtype=dtype)

    with open(os.path.join(job_dir, job["params"])) as f:
        tensors = json.load(f)["tensors"]

    def rows(key):
        t = tensors[key]
        width = t["shape"][1]
        flat = rnd(t["data"])
        return [flat[i:i + width] for i in range(0, len(flat), width)]

    params = {"hidden/weight": rows("W1"), "hidden/bias": rnd(tensors["b1"]["data"]),
              "output/weight": rows("W2"), "output/bias": rnd(tensors["b2"]["data"])}
    for name, value in params.items():
        rec("load", name, value)
    # optimizer buffers per parameter (None: zeros), or for a replay those of its checkpoint
    state = {name: {"velocity": None, "adam_m": None, "adam_v": None} for name in params}
    for kind in ("velocity", "adam_m", "adam_v"):
        if job.get(kind):
            with open(os.path.join(job_dir, job[kind])) as f:
                tensors = json.load(f)["tensors"]
            for name, value in (("hidden/weight", rows("W1")), ("hidden/bias", rnd(tensors["b1"]["data"])),
                                ("output/weight", rows("W2")), ("output/bias", rnd(tensors["b2"]["data"]))):
                state[name][kind] = value

    def read(key):
        with open(os.path.join(job_dir, job[key]), "rb") as f:
            return f.read()

    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        pool, pool_labels = read("pool_images"), read("pool_labels")
        order = array("I")
        order.frombytes(read("batches"))
        if sys.byteorder == "big":
            order.byteswap()  # the file is little-endian
    else:
        pixels, label_bytes = read("images"), read("labels")
    lo, scale = cfg["input_min"], cfg["input_max"] - cfg["input_min"]

    act = cfg["activation"]
    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        W1, b1, W2, b2 = params.values()
        if job.get("batches"):
            samples = order[i * m:(i + 1) * m]
            images = [pool[s * 784:(s + 1) * 784] for s in samples]
            y = [pool_labels[s] for s in samples]
        else:
            images = [pixels[(i * m + r) * 784:(i * m + r + 1) * 784] for r in range(m)]
            y = list(label_bytes[i * m:(i + 1) * m])
        if (lo, scale) == (0.0, 1.0):
            X = [rnd([byte / 255 for byte in image]) for image in images]
        else:
            X = [rnd([byte / 255 * scale + lo for byte in image]) for image in images]
        rec(step, "input/x", X)
        record(step, "input/y", y, dtype="int64")

        M1 = matmul_t(X, W1, rnd)
        Z1 = add_row(M1, b1, rnd)
        A1 = [rnd([activate(act, v) for v in row]) for row in Z1]
        M2 = matmul_t(A1, W2, rnd)
        Z2 = add_row(M2, b2, rnd)
        for name, value in (("hidden/matmul", M1), ("hidden/bias_add", Z1), ("hidden/activation", A1),
                            ("output/matmul", M2), ("output/bias_add", Z2)):
            rec(step, name, value)

        dZ2 = []
        if cfg["loss"] == "cross_entropy":
            P, total = [], 0.0
            for row, label in zip(Z2, y):
                top = max(row)
                e = [math.exp(v - top) for v in row]
                s = sum(e)
                p = rnd([v / s for v in e])
                P.append(p)
                picked = p[label] + cfg["log_eps"]
                total -= math.log(picked) if picked > 0 else -math.inf  # P rounded to 0: -log is inf, as in numpy
                dZ2.append(rnd([(pk - (1.0 if k == label else 0.0)) / m for k, pk in enumerate(p)]))
            rec(step, "output/softmax", P)
        else:
            P, total = [], 0.0
            for row, label in zip(Z2, y):
                p = rnd([sigmoid(v) for v in row])
                P.append(p)
                target = [cfg["target_max"] if k == label else cfg["target_min"] for k in range(10)]
                total += sum((pk - t) ** 2 for pk, t in zip(p, target))
                dZ2.append(rnd([2 * (pk - t) * pk * (1 - pk) / (m * 10) for pk, t in zip(p, target)]))
            total /= 10
            rec(step, "output/sigmoid", P)
        rec(step, "loss/value", rnd([total / m])[0])

        dZ2_t = transpose(dZ2)  # (10, m)
        A1_t = transpose(A1)  # (H, m)
        grads = {"output/weight": matmul_t(dZ2_t, A1_t, rnd),
                 "output/bias": rnd([sum(col) for col in dZ2_t])}
        W2_t = transpose(W2)  # (H, 10)
        dA1 = matmul_t(dZ2, W2_t, rnd)
        dZ1 = [rnd([g * slope(act, z, a) for g, z, a in zip(gr, zr, ar)]) for gr, zr, ar in zip(dA1, Z1, A1)]
        dZ1_t = transpose(dZ1)  # (H, m)
        grads["hidden/weight"] = matmul_t(dZ1_t, transpose(X), rnd)
        grads["hidden/bias"] = rnd([sum(col) for col in dZ1_t])
        for name, value in (("output/grad_logits", dZ2), ("output/grad_weight", grads["output/weight"]),
                            ("output/grad_bias", grads["output/bias"]), ("hidden/grad_activation", dA1),
                            ("hidden/grad_preactivation", dZ1), ("hidden/grad_weight", grads["hidden/weight"]),
                            ("hidden/grad_bias", grads["hidden/bias"])):
            rec(step, name, value)

        lr = cfg["lr"]
        if cfg["lr_decay"] != 1 and cfg["epoch_steps"]:  # decayed once per epoch
            lr = cfg["lr"] * cfg["lr_decay"] ** (step // cfg["epoch_steps"])
        kinds = {"momentum": ("velocity",), "adam": ("adam_m", "adam_v")}.get(cfg["optimizer"], ())
        for name, value in params.items():
            params[name] = update(value, grads[name], state[name], lr, cfg, step + 1, rnd)
        for kind in kinds:
            for name in params:
                rec(step, f"{name}_{kind}", state[name][kind])
        for name, value in params.items():
            rec(step, name, value)


def update(value, grad, buffers, lr, cfg, t, rnd):
    """One optimizer step for a vector or a list of rows; buffers (kind -> the same shape, or None
    for zeros) are updated in place. t counts steps from 1, for Adam's bias corrections."""
    if value and isinstance(value[0], list):
        new_rows, per_row = [], []
        for r, (w_row, g_row) in enumerate(zip(value, grad)):
            row_buffers = {kind: None if rows is None else rows[r] for kind, rows in buffers.items()}
            new_rows.append(update(w_row, g_row, row_buffers, lr, cfg, t, rnd))
            per_row.append(row_buffers)
        for kind in buffers:
            buffers[kind] = [b[kind] for b in per_row]
        return new_rows
    g = rnd([gi + cfg["weight_decay"] * wi for gi, wi in zip(grad, value)])
    if cfg["optimizer"] == "momentum":
        v = buffers["velocity"]
        g = buffers["velocity"] = g if v is None else rnd([cfg["momentum"] * vi + gi for vi, gi in zip(v, g)])
    elif cfg["optimizer"] == "adam":
        b1, b2, zeros = cfg["adam_beta1"], cfg["adam_beta2"], [0.0] * len(g)
        m = buffers["adam_m"] = rnd([b1 * mi + (1 - b1) * gi for mi, gi in zip(buffers["adam_m"] or zeros, g)])
        v = buffers["adam_v"] = rnd([b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(buffers["adam_v"] or zeros, g)])
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        g = [(mi / c1) / (math.sqrt(vi / c2) + cfg["adam_eps"]) for mi, vi in zip(m, v)]
    return rnd([wi - lr * gi for wi, gi in zip(value, g)])


class JsonLinesRecorder:
    """What the harness passes to run(), re-done with the standard library for standalone use."""

    def __init__(self, out):
        self.out = out
        self.out.write(json.dumps({"memstate": "jsonl/1", "implementation": "pure_python"}) + "\n")

    def describe(self, device=None, **versions):
        self.out.write(json.dumps({"memstate": "jsonl/1", "device": device, "versions": versions}) + "\n")

    def __call__(self, step, name, value, dtype="float64"):
        if isinstance(value, list) and value and isinstance(value[0], list):
            shape, flat = [len(value), len(value[0])], [v for row in value for v in row]
        elif isinstance(value, list):
            shape, flat = [len(value)], value
        else:
            shape, flat = [], [value]
        self.out.write(json.dumps({"step": step, "name": name, "dtype": dtype, "shape": shape,
                                   "data": flat}) + "\n")


if __name__ == "__main__":
    job_path, out_path = sys.argv[1], sys.argv[2]
    with open(out_path, "w") as out:
        try:
            run(job_path, JsonLinesRecorder(out))
        except Exception as e:
            out.write(json.dumps({"end": "error", "error": f"{type(e).__name__}: {e}"}) + "\n")
            raise
        out.write(json.dumps({"end": "complete"}) + "\n")

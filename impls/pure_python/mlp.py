"""The MLP (784 -> hidden layers -> 10, dropout optional) in plain Python: lists of rows and loops,
standard library only.

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


def layer_names(depth):
    """hidden, output for one hidden layer; hidden1, hidden2, ..., output for more."""
    return (["hidden"] if depth == 1 else ["hidden%d" % k for k in range(1, depth + 1)]) + ["output"]


def run(job_dir, record):
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    cfg = job["config"]
    dtype = cfg["dtype"]
    rnd = make_round(dtype)
    m, steps = job["batch_size"], job["steps"]
    D = job.get("pixels", 784)  # pixels per image: 784 for MNIST
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

    widths = cfg.get("layers") or [cfg["hidden"]]
    names = layer_names(len(widths))
    L = len(widths)
    params = {}  # per layer: its weight as rows (H_k, fan_in) and its bias (H_k,)
    for k, name in enumerate(names, start=1):
        params[name + "/weight"], params[name + "/bias"] = rows("W%d" % k), rnd(tensors["b%d" % k]["data"])
    for name, value in params.items():
        rec("load", name, value)
    # optimizer buffers per parameter (None: zeros), or for a replay those of its checkpoint
    state = {name: {"velocity": None, "adam_m": None, "adam_v": None} for name in params}
    for kind in ("velocity", "adam_m", "adam_v"):
        if job.get(kind):
            with open(os.path.join(job_dir, job[kind])) as f:
                tensors = json.load(f)["tensors"]
            for k, name in enumerate(names, start=1):
                state[name + "/weight"][kind] = rows("W%d" % k)
                state[name + "/bias"][kind] = rnd(tensors["b%d" % k]["data"])

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
    masks = {}  # dropout: hidden layer (1-based) -> (the mask file's bytes, width, 1 / (1 - p) in the dtype)
    for entry in job.get("dropout", []):
        with open(os.path.join(job_dir, entry["file"]), "rb") as f:
            masks[entry["layer"]] = (f.read(), entry["shape"][2], rnd([1 / (1 - entry["p"])])[0])
    divisor = m if cfg.get("batch_reduction", "mean") == "mean" else 1
    per_output = {"mean": 0.1, "sum": 1.0, "half_sum": 0.5}[cfg.get("squared_error", "mean")]  # mse

    act = cfg["activation"]
    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    for i in range(steps):
        step = first + i
        if job.get("batches"):
            samples = order[i * m:(i + 1) * m]
            images = [pool[s * D:(s + 1) * D] for s in samples]
            y = [pool_labels[s] for s in samples]
        else:
            images = [pixels[(i * m + r) * D:(i * m + r + 1) * D] for r in range(m)]
            y = list(label_bytes[i * m:(i + 1) * m])
        if (lo, scale) == (0.0, 1.0):
            X = [rnd([byte / 255 for byte in image]) for image in images]
        else:
            X = [rnd([byte / 255 * scale + lo for byte in image]) for image in images]
        rec(step, "input/x", X)
        record(step, "input/y", y, dtype="int64")

        inputs, Z, A, keep = [X], {}, {}, {}  # inputs[k]: what layer k + 1 reads, rows of (m, fan_in)
        for k in range(1, L + 1):
            name = names[k - 1]
            M = matmul_t(inputs[-1], params[name + "/weight"], rnd)
            Z[k] = add_row(M, params[name + "/bias"], rnd)
            A[k] = [rnd([activate(act, v) for v in row]) for row in Z[k]]
            for op, value in (("matmul", M), ("bias_add", Z[k]), ("activation", A[k])):
                rec(step, name + "/" + op, value)
            out = A[k]
            if k in masks:  # inverted dropout: kept units times 1 / (1 - p), dropped ones 0
                raw, width, factor = masks[k]
                bits = [list(raw[(i * m + r) * width:(i * m + r + 1) * width]) for r in range(m)]
                keep[k] = [[factor if b else 0.0 for b in row] for row in bits]
                out = [rnd([a * c for a, c in zip(ar, cr)]) for ar, cr in zip(A[k], keep[k])]
                record(step, name + "/dropout_mask", bits, dtype="uint8")
                rec(step, name + "/dropout", out)
            inputs.append(out)
        M_out = matmul_t(inputs[-1], params["output/weight"], rnd)
        Z_out = add_row(M_out, params["output/bias"], rnd)
        rec(step, "output/matmul", M_out)
        rec(step, "output/bias_add", Z_out)

        dZ = []
        if cfg["loss"] == "cross_entropy":
            P, total = [], 0.0
            for row, label in zip(Z_out, y):
                top = max(row)
                e = [math.exp(v - top) for v in row]
                s = sum(e)
                p = rnd([v / s for v in e])
                P.append(p)
                picked = p[label] + cfg["log_eps"]
                total -= math.log(picked) if picked > 0 else -math.inf  # P rounded to 0: -log is inf, as in numpy
                dZ.append(rnd([(pk - (1.0 if k == label else 0.0)) / divisor for k, pk in enumerate(p)]))
            rec(step, "output/softmax", P)
        else:
            P, total = [], 0.0
            for row, label in zip(Z_out, y):
                p = rnd([sigmoid(v) for v in row])
                P.append(p)
                target = [cfg["target_max"] if k == label else cfg["target_min"] for k in range(10)]
                total += sum((pk - t) ** 2 for pk, t in zip(p, target))
                dZ.append(rnd([2 * per_output * (pk - t) * pk * (1 - pk) / divisor for pk, t in zip(p, target)]))
            total *= per_output
            rec(step, "output/sigmoid", P)
        rec(step, "loss/value", rnd([total / divisor])[0])

        grads = {}
        dOut = None  # the gradient at the output of the layer below the one in hand, rows of (m, H_{k-1})
        rec(step, "output/grad_logits", dZ)
        for k in range(L + 1, 0, -1):  # from the output layer down
            name = names[k - 1]
            if k <= L:  # a hidden layer: its dZ from the gradient at its output, dOut
                dA = dOut
                if k in keep:
                    rec(step, name + "/grad_dropout", dOut)
                    dA = [rnd([g * c for g, c in zip(gr, cr)]) for gr, cr in zip(dOut, keep[k])]
                rec(step, name + "/grad_activation", dA)
                dZ = [rnd([g * slope(act, z, a) for g, z, a in zip(gr, zr, ar)])
                      for gr, zr, ar in zip(dA, Z[k], A[k])]
                rec(step, name + "/grad_preactivation", dZ)
            dZ_t = transpose(dZ)  # (H_k, m)
            grads[name + "/weight"] = matmul_t(dZ_t, transpose(inputs[k - 1]), rnd)
            grads[name + "/bias"] = rnd([sum(col) for col in dZ_t])
            rec(step, name + "/grad_weight", grads[name + "/weight"])
            rec(step, name + "/grad_bias", grads[name + "/bias"])
            if k > 1:
                dOut = matmul_t(dZ, transpose(params[name + "/weight"]), rnd)  # (m, H_{k-1})

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

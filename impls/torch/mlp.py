"""The MLP (784 -> hidden layers -> 10, dropout optional) in PyTorch: nn.Linear layers, autograd for every
gradient, torch.optim.SGD or torch.optim.Adam, a per-epoch ExponentialLR schedule.

Runs on CUDA when there is a GPU (TF32 off, so float32 matmuls are full float32), else the
CPU. A run is a deterministic function of its job: one intra-op thread on the CPU
(MEMSTATE_TORCH_THREADS sets another count), MKL's reproducible mode, deterministic algorithms;
the manifest records them. Intermediate gradients come from retain_grad(), parameter gradients from .grad, the
momentum buffers and Adam's moments from the optimizer's state.
"""

import json
import os
from pathlib import Path

# Before torch loads MKL: results that do not depend on memory alignment or on how busy the machine is.
os.environ.setdefault("MKL_CBWR", "AUTO")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for deterministic matmuls

import numpy as np
import torch
import torch.nn.functional as F

ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def as_numpy(t):
    """A tensor as numpy; bfloat16 or float16 (autocast's matmul results) as the float32 it holds exactly."""
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


def layer_names(depth):
    """hidden, output for one hidden layer; hidden1, hidden2, ..., output for more."""
    return (["hidden"] if depth == 1 else [f"hidden{k}" for k in range(1, depth + 1)]) + ["output"]


def run(job_dir, record):
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    cfg = job["config"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mode = (job.get("precision") or {}).get("matmul", "float32")  # asked for by the harness: --precision-b tf32
    # --precision-b bfloat16-autocast or float16-autocast: matmuls in that dtype, float32 weights and optimizer
    autocast = next((dt for dt in ("bfloat16", "float16") if job.get("precision") == {"matmul": dt, "storage": dt}),
                    None)
    if autocast and cfg["dtype"] != "float32":
        return record.unsupported(f"{autocast} autocast runs a float32 model; this one is {cfg['dtype']}")
    if autocast:
        record.precision(matmul=autocast, storage=autocast)
        mode = "float32"  # autocast, not TF32, rounds the matmuls
    elif (job.get("precision") or {}).get("storage", "float32") != "float32":
        return record.unsupported(f"tensors kept in {job['precision']['storage']}: this implementation keeps float32 "
                                  f"(or runs autocast: --precision-b bfloat16-autocast, float16-autocast)")
    if mode not in ("float32", "tf32") or (mode == "tf32" and (device.type != "cuda" or cfg["dtype"] != "float32")):
        return record.unsupported(f"matmul precision {mode} needs float32 on a CUDA GPU with TF32 (this run: "
                                  f"{cfg['dtype']} on {device.type})" if mode == "tf32" else
                                  f"matmul precision {mode}: this implementation runs float32 or TF32 matmuls only")
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"  # TF32 tensor cores for every matmul
    torch.backends.cudnn.allow_tf32 = False
    if mode == "tf32":
        record.precision(matmul="tf32")
    # The same sums in the same order on every run: a fixed thread count (a split of a matmul over another
    # number of threads rounds differently) and deterministic kernels.
    threads = int(os.environ.get("MEMSTATE_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # an op with no such kernel warns, never stops the run
    dtype = getattr(torch, cfg["dtype"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    record.describe(device=device.type if device.type == "cpu" else f"{device.type}:{name}", torch=torch.__version__,
                    cuda=str(torch.version.cuda), threads=str(threads), deterministic="true",
                    mkl_cbwr=os.environ["MKL_CBWR"])

    tensors = json.loads((job_dir / job["params"]).read_text())["tensors"]
    widths = cfg.get("layers") or [cfg["hidden"]]
    names = layer_names(len(widths))
    D = job.get("pixels", 784)  # pixels per image: 784 for MNIST
    sizes = [D, *widths, 10]
    linears = [torch.nn.Linear(sizes[k], sizes[k + 1], dtype=dtype, device=device) for k in range(len(names))]
    named = {}
    for name, linear in zip(names, linears):
        named[f"{name}/weight"], named[f"{name}/bias"] = linear.weight, linear.bias
    keys = [f"{kind}{k}" for k in range(1, len(names) + 1) for kind in ("W", "b")]  # W1, b1, W2, b2, ...
    with torch.no_grad():
        for key, p in zip(keys, named.values()):
            values = torch.tensor(tensors[key]["data"], dtype=torch.float64).reshape(tensors[key]["shape"])
            p.copy_(values.to(dtype))
    for key, p in named.items():
        record("load", key, as_numpy(p))

    first = job.get("first_step", 0)  # a replay starts later, from a checkpoint
    if cfg["optimizer"] == "adam":
        opt = torch.optim.Adam(named.values(), lr=cfg["lr"], betas=(cfg["adam_beta1"], cfg["adam_beta2"]),
                               eps=cfg["adam_eps"], weight_decay=cfg["weight_decay"])
        buffers = {"adam_m": "exp_avg", "adam_v": "exp_avg_sq"}
    else:
        momentum = cfg["momentum"] if cfg["optimizer"] == "momentum" else 0.0
        opt = torch.optim.SGD(named.values(), lr=cfg["lr"], momentum=momentum, weight_decay=cfg["weight_decay"])
        buffers = {"velocity": "momentum_buffer"} if momentum else {}
    for kind, slot in buffers.items():  # a replay starts from its checkpoint's optimizer state
        if job.get(kind):
            saved = json.loads((job_dir / job[kind]).read_text())["tensors"]
            for key, p in zip(keys, named.values()):
                v = torch.tensor(saved[key]["data"], dtype=torch.float64).reshape(saved[key]["shape"])
                opt.state[p][slot] = v.to(device=device, dtype=dtype)
                if cfg["optimizer"] == "adam":
                    opt.state[p]["step"] = torch.tensor(float(first))  # Adam's bias corrections count steps
    schedule = None
    if cfg["lr_decay"] != 1 and cfg["epoch_steps"]:
        schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg["lr_decay"])
        for _ in range(first // cfg["epoch_steps"]):  # a replay starts in a later epoch
            schedule.step()
    # float16 autocast trains with a dynamic loss scale, as PyTorch's AMP recipe does (2^16 to start)
    scaler = torch.amp.GradScaler(device.type) if autocast == "float16" else None
    activation = ACTIVATIONS[cfg["activation"]]

    m, steps = job["batch_size"], job["steps"]
    if job.get("batches"):  # an indexed job: the training images once, each step's samples as indices
        order = torch.from_numpy(np.fromfile(job_dir / job["batches"], dtype="<u4").astype(np.int64)).reshape(steps, m)
        pool_x = torch.from_numpy(np.fromfile(job_dir / job["pool_images"], dtype=np.uint8).reshape(-1, D))
        pool_y = torch.from_numpy(np.fromfile(job_dir / job["pool_labels"], dtype=np.uint8))

        def batch(i):
            return pool_x[order[i]], pool_y[order[i]]
    else:
        images = torch.from_numpy(np.fromfile(job_dir / job["images"], dtype=np.uint8).reshape(steps, m, D))
        labels = torch.from_numpy(np.fromfile(job_dir / job["labels"], dtype=np.uint8).reshape(steps, m))

        def batch(i):
            return images[i], labels[i]
    scale = cfg["input_max"] - cfg["input_min"]
    masks = {}  # dropout: hidden layer (1-based) -> (steps, m, width) uint8 keep masks, and its p
    for entry in job.get("dropout", []):
        raw = np.fromfile(job_dir / entry["file"], dtype=np.uint8).reshape(entry["shape"])
        masks[entry["layer"]] = (torch.from_numpy(raw), entry["p"])
    reduction = cfg.get("batch_reduction", "mean")
    per_output = {"mean": 0.1, "sum": 1.0, "half_sum": 0.5}[cfg.get("squared_error", "mean")]

    for i in range(steps):
        step = first + i
        pixels, classes = batch(i)  # (m, D), (m,) uint8
        x = pixels.to(device=device, dtype=dtype) / 255  # (m, D)
        if (cfg["input_min"], scale) != (0.0, 1.0):
            x = x * scale + cfg["input_min"]
        y = classes.to(device=device, dtype=torch.long)  # (m,)
        record(step, "input/x", as_numpy(x))
        record(step, "input/y", as_numpy(y))

        opt.zero_grad()
        cast = torch.autocast(device.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast))
        cast.__enter__()
        h, kept = x, {}  # kept: per hidden layer, what it hands the next (its dropout, else its activation)
        recorded = []  # (name, tensor) in the order the spec writes them; gradients read after backward
        for k, (name, linear) in enumerate(zip(names[:-1], linears), start=1):
            mk = h @ linear.weight.T  # (m, H_k)
            zk = mk + linear.bias  # (m, H_k)
            ak = activation(zk)  # (m, H_k)
            zk.retain_grad()
            ak.retain_grad()
            recorded += [(f"{name}/matmul", mk), (f"{name}/bias_add", zk), (f"{name}/activation", ak)]
            h = ak
            if k in masks:
                mask, p_drop = masks[k]
                keep = mask[i].to(device=device, dtype=dtype) / (1 - p_drop)  # (m, H_k): 0 or 1 / (1 - p)
                h = ak * keep
                h.retain_grad()
                recorded += [(f"{name}/dropout_mask", mask[i]), (f"{name}/dropout", h)]
            kept[k] = (zk, ak, h)
        output = linears[-1]
        m2 = h @ output.weight.T  # (m, 10)
        z2 = m2 + output.bias  # (m, 10)
        z2.retain_grad()
        if cfg["loss"] == "cross_entropy":
            p = torch.softmax(z2, dim=1)  # (m, 10)
            loss = F.cross_entropy(z2, y, reduction=reduction)
            out_name = "output/softmax"
        else:
            p = torch.sigmoid(z2)  # (m, 10)
            hot = F.one_hot(y, 10).bool()  # (m, 10)
            targets = torch.where(hot, cfg["target_max"], cfg["target_min"]).to(dtype)
            loss = F.mse_loss(p, targets, reduction="sum") * per_output
            if reduction == "mean":
                loss = loss / m
            out_name = "output/sigmoid"
        cast.__exit__(None, None, None)
        if scaler is not None:  # float16: the loss scaled up before backward, so small gradients keep their bits
            record(step, "loss/scale", np.float32(scaler.get_scale()))  # the gradients below are of loss * it
        (loss if scaler is None else scaler.scale(loss)).backward()
        if cfg["log_eps"]:  # the printed loss takes log(P + eps); its gradient stays that of plain cross-entropy
            with torch.no_grad():
                loss = -torch.log(p[torch.arange(m, device=device), y] + cfg["log_eps"]).sum()
                loss = loss / m if reduction == "mean" else loss

        for key, t in recorded:
            record(step, key, as_numpy(t))
        record(step, "output/matmul", as_numpy(m2))
        record(step, "output/bias_add", as_numpy(z2))
        record(step, out_name, as_numpy(p))
        record(step, "loss/value", as_numpy(loss))
        record(step, "output/grad_logits", as_numpy(z2.grad))
        for k in range(len(names), 0, -1):  # from the output layer down
            name, linear = names[k - 1], linears[k - 1]
            if k < len(names):
                zk, ak, hk = kept[k]
                if k in masks:
                    record(step, f"{name}/grad_dropout", as_numpy(hk.grad))
                record(step, f"{name}/grad_activation", as_numpy(ak.grad))
                record(step, f"{name}/grad_preactivation", as_numpy(zk.grad))
            record(step, f"{name}/grad_weight", as_numpy(linear.weight.grad))
            record(step, f"{name}/grad_bias", as_numpy(linear.bias.grad))

        if scaler is None:
            opt.step()
        else:  # unscales the gradients, and skips the step (halving the scale) if any is inf or NaN
            scaler.step(opt)
            scaler.update()
        for kind, slot in buffers.items():
            for key, p in named.items():
                record(step, f"{key}_{kind}", as_numpy(opt.state[p][slot]))
        for key, p in named.items():
            record(step, key, as_numpy(p))
        if schedule is not None and (step + 1) % cfg["epoch_steps"] == 0:
            schedule.step()

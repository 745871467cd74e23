"""Legacy memstate dumps: one JSON object per step, samples as columns, as in the spec's story.

Keys: X Y Z1 A1 Z2 A2 ohY dZ2 dW2 db2 dZ1 dW1 db1 W1 b1 W2 b2. Matrices are (features,
samples); W1 b1 W2 b2 are the parameters after the update; biases are (n, 1) columns, and a
bias gradient may be a single scalar (np.sum over everything). Each key is mapped onto the
spec's record, transposed where needed; what cannot be mapped is listed in the manifest and
skipped by the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import InputError, read_json
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.records import LOAD, PARAMETERS

KEYS = ("X", "Y", "Z1", "A1", "Z2", "A2", "ohY", "dZ2", "dW2", "db2", "dZ1", "dW1", "db1", "W1", "b1", "W2", "b2")
COLUMNS = {"X": "input/x", "Z1": "hidden/bias_add", "A1": "hidden/activation", "Z2": "output/bias_add"}
NOT_IN_DUMPS = {
    "hidden/matmul": "the dump has Z1 but not X W1^T before the bias",
    "output/matmul": "the dump has Z2 but not A1 W2^T before the bias",
    "loss/value": "the dump has no loss",
    "hidden/grad_activation": "the dump has dZ1 but not dA1 = W2^T dZ2",
}


def looks_legacy(data: Any) -> bool:
    return isinstance(data, dict) and {"X", "Z1", "W1"} <= set(data)


def _array(source: str, data: dict, key: str) -> np.ndarray:
    try:
        arr = np.array(data[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: legacy key {key!r} is not a number or a rectangular list of numbers") from None
    return arr


def _check_shapes(source: str, arrays: dict[str, np.ndarray], m: int) -> None:
    """Every matrix of the dump agrees with X's m samples and W1's H units (samples as columns), so
    nothing reaches a matmul it cannot enter."""
    h = arrays["W1"].shape[0] if arrays["W1"].ndim == 2 else -1
    if arrays["W1"].shape != (h, 784):
        raise InputError(f"{source}: legacy 'W1' has shape {arrays['W1'].shape}, expected (H, 784)")
    want = {"Z1": (h, m), "A1": (h, m), "dZ1": (h, m), "Z2": (10, m), "A2": (10, m), "dZ2": (10, m),
            "ohY": (10, m), "dW1": (h, 784), "dW2": (10, h), "W2": (10, h)}
    for key, shape in want.items():
        if key in arrays and arrays[key].shape != shape:
            raise InputError(f"{source}: legacy {key!r} has shape {arrays[key].shape}, expected {shape} "
                             f"(X has m={m} samples as columns, W1 has H={h} rows)")
    for key, n in (("b1", h), ("db1", h), ("b2", 10), ("db2", 10)):
        if key in arrays and arrays[key].size not in (n, 1):
            raise InputError(f"{source}: legacy {key!r} has {arrays[key].size} values, expected {n} (one per unit)")
    if "Y" in arrays and arrays["Y"].size not in (m, 10 * m):
        raise InputError(f"{source}: legacy 'Y' has {arrays['Y'].size} values, expected {m} labels "
                         f"(or {10 * m} one-hot)")


def _scale(dW: np.ndarray | None, dZ: np.ndarray, inputs: np.ndarray, m: int) -> tuple[float, str]:
    """1/m if the dump's dW = dZ . inputs^T / m (dZ without the mean's 1/m), else 1."""
    if dW is None:
        return 1.0, "no dW to tell whether the 1/m of the mean is in dZ; taken as it is"
    full = dZ @ inputs.T  # (out, in)
    size = max(float(np.linalg.norm(dW)), np.finfo(np.float64).tiny)
    err_mean = float(np.linalg.norm(dW - full / m)) / size
    err_full = float(np.linalg.norm(dW - full)) / size
    if err_mean < err_full:
        return 1.0 / m, f"divided by m = {m}: the dump's dW = dZ . input^T / m"
    return 1.0, "taken as it is: the dump's dW = dZ . input^T"


def convert_legacy(source: str | Path, target: str | Path, loss: str = "cross_entropy", step: int = 0) -> Memstate:
    """Map one legacy dump onto the spec's records of `step`, as a memstate in `target`."""
    source = Path(source)
    data = read_json(source, "legacy dump")
    if not looks_legacy(data):
        raise InputError(f"{source}: not a legacy dump (expected keys such as X Z1 W1)")
    unknown = sorted(set(data) - set(KEYS))
    arrays = {k: _array(str(source), data, k) for k in KEYS if k in data}
    X = arrays["X"]
    if X.ndim != 2 or X.shape[0] != 784:
        raise InputError(f"{source}: legacy 'X' has shape {X.shape}, expected (784, m): samples as columns")
    m = X.shape[1]
    _check_shapes(str(source), arrays, m)
    records: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    unmapped: list[list[Any]] = [[LOAD, p, "a dump holds one step; the parameters before it are not in it"]
                                 for p in PARAMETERS]
    for key, name in COLUMNS.items():
        if key in arrays:
            records[name] = arrays[key].T  # (m, features)
    probs = "output/softmax" if loss == "cross_entropy" else "output/sigmoid"
    if "A2" in arrays:
        records[probs] = arrays["A2"].T
    labels = arrays.get("Y")
    if labels is not None and labels.ndim == 2 and labels.shape[0] == 10 and labels.shape[1] == m:
        labels = labels.argmax(axis=0)  # Y held one-hot columns
    elif labels is None and "ohY" in arrays:
        labels = arrays["ohY"].argmax(axis=0)
        notes["input/y"] = "from the argmax of ohY"
    if labels is not None:
        flat = labels.reshape(-1)
        bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)) | (flat < 0) | (flat > 9))
        if bad.size:
            raise InputError(f"{source}: legacy 'Y' holds {flat[bad[0]]!r} at element {int(bad[0])}; expected class "
                             f"indices 0..9 (or one-hot columns)")
        records["input/y"] = flat.astype(np.int64)
    if "dZ2" in arrays and "A1" in arrays:
        factor, how = _scale(arrays.get("dW2"), arrays["dZ2"], arrays["A1"], m)
        records["output/grad_logits"] = arrays["dZ2"].T * factor
        notes["output/grad_logits"] = "dZ2 " + how
    if "dZ1" in arrays:
        factor, how = _scale(arrays.get("dW1"), arrays["dZ1"], X, m)
        records["hidden/grad_preactivation"] = arrays["dZ1"].T * factor
        notes["hidden/grad_preactivation"] = "dZ1 " + how
    for key, name in (("dW2", "output/grad_weight"), ("dW1", "hidden/grad_weight")):
        if key in arrays:
            records[name] = arrays[key]
    for key, name in (("db2", "output/grad_bias"), ("db1", "hidden/grad_bias")):
        if key not in arrays:
            continue
        b = arrays[key]
        if b.size == 1:
            unmapped.append([step, name, f"{key} is a single number (a sum over every element, not per unit); "
                             f"the spec's {name} has one value per unit"])
        else:
            records[name] = b.reshape(-1)
    for key, name in zip(("W1", "b1", "W2", "b2"), PARAMETERS):
        if key in arrays:
            records[name] = arrays[key].reshape(-1) if key.startswith("b") else arrays[key]
    for name, why in NOT_IN_DUMPS.items():
        unmapped.append([step, name, why])
    for key, name in list(COLUMNS.items()) + [("A2", probs), ("dZ2", "output/grad_logits"),
                                                  ("dZ1", "hidden/grad_preactivation"), ("dW2", "output/grad_weight"),
                                                  ("dW1", "hidden/grad_weight"), ("W1", "hidden/weight"),
                                                  ("b1", "hidden/bias"), ("W2", "output/weight"),
                                                  ("b2", "output/bias")]:
        if key not in arrays:
            unmapped.append([step, name, f"the dump has no {key}"])
    manifest = {"implementation": {"name": f"{source.stem} (legacy dump)", "path": str(source), "kind": "legacy"},
                "dtype": "float64", "unmapped": unmapped, "legacy_notes": notes,
                "legacy_unknown_keys": unknown}
    writer = MemstateWriter(target, manifest)
    for name, arr in records.items():
        writer(step, name, arr)
    writer.close("complete")
    return Memstate(target)

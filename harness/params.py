"""Initial parameters: generated from the seed, written as JSON that round-trips float32
exactly, read back from that layout or from the legacy one (lowercase w1 b1 w2 b2)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import InputError

FORMAT = "memstate-params/1"
NAMES = ("W1", "b1", "W2", "b2")
RECORD_OF = {"W1": "hidden/weight", "b1": "hidden/bias", "W2": "output/weight", "b2": "output/bias"}
N_IN, N_OUT = 784, 10


@dataclass(frozen=True)
class Params:
    """W1 (H, 784), b1 (H,), W2 (10, H), b2 (10,) as float64 arrays holding the file's exact values."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray

    @property
    def hidden(self) -> int:
        return int(self.W1.shape[0])

    def items(self) -> list[tuple[str, np.ndarray]]:
        return [(n, getattr(self, n)) for n in NAMES]

    def to_json(self) -> str:
        """The memstate-params/1 text. json writes each float with the shortest repr that
        round-trips float64, so a float32 value comes back bit-exact in float32 and float64."""
        tensors = {n: {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]} for n, a in self.items()}
        return json.dumps({"format": FORMAT, "tensors": tensors}, separators=(",", ":"), allow_nan=False)

    def write(self, path: str | Path) -> str:
        """Write the JSON file; return its sha256."""
        text = self.to_json().encode()
        Path(path).write_bytes(text)
        return hashlib.sha256(text).hexdigest()


def initial_params(config: Config) -> Params:
    """Seeded initial parameters, rounded to float32 so every dtype starts from the same numbers.

    Hidden layer: He-normal for relu, Xavier-uniform for sigmoid and tanh; output layer
    Xavier-uniform; biases zero.
    """
    rng = np.random.default_rng([config.seed, 0])  # stream 0: parameters
    H = config.hidden
    if config.activation == "relu":
        W1 = rng.normal(0.0, math.sqrt(2.0 / N_IN), size=(H, N_IN))
    else:
        a = math.sqrt(6.0 / (N_IN + H))
        W1 = rng.uniform(-a, a, size=(H, N_IN))
    a = math.sqrt(6.0 / (H + N_OUT))
    W2 = rng.uniform(-a, a, size=(N_OUT, H))
    f32 = lambda x: x.astype(np.float32).astype(np.float64)
    return Params(W1=f32(W1), b1=np.zeros(H), W2=f32(W2), b2=np.zeros(N_OUT))


def _fits_float(v: int) -> bool:
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _numbers(source: str, key: str, values: Any) -> np.ndarray:
    """A flat list of finite JSON numbers as float64, or an error naming the key and index."""
    if not isinstance(values, list):
        raise InputError(f"{source}: tensor {key!r}: 'data' must be a list of numbers, got {type(values).__name__}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{source}: tensor {key!r}: element {i} is {v!r}, expected a number")
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64's range
        i = next(i for i, v in enumerate(values) if isinstance(v, int) and not _fits_float(v))
        raise InputError(f"{source}: tensor {key!r}: element {i} is an integer too large for a float "
                         f"({len(str(values[i]))} digits); parameters must be finite") from None
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{source}: tensor {key!r}: element {int(bad[0])} is {arr[bad[0]]}; "
                         f"parameters must be finite ({bad.size} non-finite in all)")
    return arr


def _check_shapes(source: str, arrays: dict[str, np.ndarray], names: dict[str, str]) -> None:
    H = arrays["W1"].shape[0] if arrays["W1"].ndim == 2 and arrays["W1"].shape[0] > 0 else None
    expected = {"W1": (H, N_IN), "b1": (H,), "W2": (N_OUT, H), "b2": (N_OUT,)}
    for n in NAMES:
        if H is None or arrays[n].shape != expected[n]:
            want = "(H, 784) with H >= 1" if H is None else str(expected[n])
            raise InputError(f"{source}: tensor {names[n]!r} has shape {arrays[n].shape}, expected {want}")


def _parse_layout(source: str, data: dict) -> dict[str, np.ndarray]:
    tensors = data.get("tensors")
    if not isinstance(tensors, dict):
        raise InputError(f"{source}: field 'tensors' must be an object holding {', '.join(NAMES)}")
    missing = [n for n in NAMES if n not in tensors]
    extra = sorted(set(tensors) - set(NAMES))
    if missing or extra:
        parts = ([f"missing tensor(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected tensor(s) {', '.join(extra)}"] if extra else [])
        raise InputError(f"{source}: {'; '.join(parts)}; expected exactly {', '.join(NAMES)}")
    arrays = {}
    for n in NAMES:
        t = tensors[n]
        if not isinstance(t, dict) or "shape" not in t or "data" not in t:
            raise InputError(f"{source}: tensor {n!r} must be an object with 'shape' and 'data'")
        shape = t["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise InputError(f"{source}: tensor {n!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
        flat = _numbers(source, n, t["data"])
        if flat.size != math.prod(shape):
            raise InputError(f"{source}: tensor {n!r}: shape {shape} needs {math.prod(shape)} values, "
                             f"'data' has {flat.size}")
        arrays[n] = flat.reshape(shape)
    _check_shapes(source, arrays, {n: n for n in NAMES})
    return arrays


def _parse_legacy(source: str, data: dict) -> dict[str, np.ndarray]:
    """Lowercase w1 b1 w2 b2, lists of rows; biases are (n, 1) columns. w1 is (H, 784) because
    that layout kept samples as columns (Z1 = w1 . X + b1), which is the same matrix as W1."""
    legacy = {"W1": "w1", "b1": "b1", "W2": "w2", "b2": "b2"}
    missing = [k for k in legacy.values() if k not in data]
    if missing:
        raise InputError(f"{source}: legacy layout is missing key(s) {', '.join(missing)}")
    extra = sorted(set(data) - set(legacy.values()))
    if extra:
        raise InputError(f"{source}: legacy layout has unexpected key(s) {', '.join(extra)}; expected w1 b1 w2 b2")
    arrays = {}
    for n, key in legacy.items():
        rows = data[key]
        if not isinstance(rows, list) or not rows:
            raise InputError(f"{source}: legacy {key!r} must be a non-empty list of rows")
        if all(isinstance(r, list) for r in rows):
            widths = {len(r) for r in rows}
            if len(widths) != 1:
                raise InputError(f"{source}: legacy {key!r} has rows of different lengths {sorted(widths)}")
            flat = _numbers(source, key, [v for r in rows for v in r])
            arr = flat.reshape(len(rows), widths.pop())
        else:
            arr = _numbers(source, key, rows)
        if n.startswith("b") and arr.ndim == 2:
            if arr.shape[1] != 1:
                raise InputError(f"{source}: legacy bias {key!r} has shape {arr.shape}, expected ({arr.shape[0]}, 1)")
            arr = arr[:, 0]
        arrays[n] = arr
    _check_shapes(source, arrays, legacy)
    return arrays


def parse_params(text: str | bytes, source: str = "parameters") -> Params:
    """Parse either layout, validating keys, shapes and values."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{source}: nests arrays or objects too deeply to be a parameter file") from None
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if "w1" in data:
        arrays = _parse_legacy(source, data)
    elif data.get("format") == FORMAT:
        arrays = _parse_layout(source, data)
    else:
        raise InputError(f"{source}: neither the memstate layout (\"format\": \"{FORMAT}\") "
                         f"nor the legacy layout (keys w1 b1 w2 b2)")
    return Params(**arrays)


def load_params(path: str | Path) -> Params:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read parameter file: {e.strerror}") from None
    return parse_params(text, source=str(path))

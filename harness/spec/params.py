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

from harness.spec.budget import check_parameters_fit
from harness.spec.config import Config
from harness.errors import InputError

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
    """Seeded initial parameters by `config.init`, rounded to float32 so every dtype starts from the
    same numbers (fan_in = 784 for W1, H for W2):

    - default: He-normal W1 for relu, Xavier-uniform W1 for sigmoid and tanh; Xavier-uniform W2; zero biases
    - uniform: every weight and bias U[-0.5, 0.5] (mnist-from-scratch)
    - fan_in: weights N(0, 1) / sqrt(fan_in), biases U[0, 1) (goml)
    - small: weights N(0, 1) * 0.01, zero biases (than-dev)
    - he: weights N(0, 2 / fan_in), zero biases (born)
    - xavier: weights U[-a, a], a = sqrt(6 / (fan_in + fan_out)), zero biases (gon)
    """
    check_parameters_fit(config)
    rng = np.random.default_rng([config.seed, 0])  # stream 0: parameters
    H = config.hidden
    shapes = ((H, N_IN), (N_OUT, H))
    zeros = [np.zeros(H), np.zeros(N_OUT)]

    def xavier(shape: tuple[int, int]) -> np.ndarray:
        a = math.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-a, a, size=shape)

    def he(shape: tuple[int, int]) -> np.ndarray:
        return rng.normal(0.0, math.sqrt(2.0 / shape[1]), size=shape)

    if config.init == "default":
        W1 = he(shapes[0]) if config.activation == "relu" else xavier(shapes[0])
        weights, biases = [W1, xavier(shapes[1])], zeros
    elif config.init == "uniform":
        weights = [rng.uniform(-0.5, 0.5, size=s) for s in shapes]
        biases = [rng.uniform(-0.5, 0.5, size=n) for n in (H, N_OUT)]
    elif config.init == "fan_in":
        weights = [rng.normal(0.0, 1.0, size=s) / math.sqrt(s[1]) for s in shapes]
        biases = [rng.uniform(0.0, 1.0, size=n) for n in (H, N_OUT)]
    elif config.init == "small":
        weights, biases = [rng.normal(0.0, 1.0, size=s) * 0.01 for s in shapes], zeros
    elif config.init == "he":
        weights, biases = [he(s) for s in shapes], zeros
    else:  # xavier
        weights, biases = [xavier(s) for s in shapes], zeros
    f32 = lambda x: x.astype(np.float32).astype(np.float64)
    return Params(W1=f32(weights[0]), b1=f32(biases[0]), W2=f32(weights[1]), b2=f32(biases[1]))


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

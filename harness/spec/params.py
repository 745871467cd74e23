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
N_IN, N_OUT = 784, 10


def tensor_names(depth: int) -> tuple[str, ...]:
    """The parameter file's tensors for `depth` hidden layers: W1, b1, W2, b2, ..."""
    return tuple(f"{kind}{k}" for k in range(1, depth + 2) for kind in ("W", "b"))


@dataclass(frozen=True)
class Params:
    """The weights W1 (H1, 784), W2 (H2, H1), ..., the output's (10, H_L), and the biases b1 (H1,), ...,
    (10,), as float64 arrays holding the file's exact values; `params.W2` reads a tensor by its file name."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> Params:
        """From the tensors in file order: W1, b1, W2, b2, ..."""
        arrays = list(arrays)
        return cls(tuple(arrays[0::2]), tuple(arrays[1::2]))

    def __getattr__(self, name: str) -> np.ndarray:
        if len(name) > 1 and name[0] in "Wb" and name[1:].isdigit():
            k = int(name[1:]) - 1
            group = self.weights if name[0] == "W" else self.biases
            if 0 <= k < len(group):
                return group[k]
        raise AttributeError(name)

    @property
    def hidden(self) -> int:
        """The first hidden layer's width."""
        return int(self.weights[0].shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths, input side first."""
        return tuple(int(w.shape[0]) for w in self.weights[:-1])

    def arrays(self) -> list[np.ndarray]:
        """The tensors in file order: W1, b1, W2, b2, ..."""
        return [a for pair in zip(self.weights, self.biases) for a in pair]

    def items(self) -> list[tuple[str, np.ndarray]]:
        return list(zip(tensor_names(len(self.weights) - 1), self.arrays()))

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
    same numbers (fan_in: 784 for W1, the width of the layer below for the others); the weights are
    drawn layer by layer from the input, then the biases:

    - default: He-normal hidden weights for relu, Xavier-uniform for sigmoid and tanh; Xavier-uniform
      output weights; zero biases
    - uniform: every weight and bias U[-0.5, 0.5] (mnist-from-scratch)
    - fan_in: weights N(0, 1) / sqrt(fan_in), biases U[0, 1) (goml)
    - small: weights N(0, 1) * 0.01, zero biases (than-dev)
    - he: weights N(0, 2 / fan_in), zero biases (born)
    - xavier: weights U[-a, a], a = sqrt(6 / (fan_in + fan_out)), zero biases (gon)

    For 784-H-10 the draws are the ones every earlier version made: W1 then W2, then b1 and b2 where
    biases are random."""
    check_parameters_fit(config)
    rng = np.random.default_rng([config.seed, 0])  # stream 0: parameters
    sizes = (config.input_width, *config.widths, N_OUT)
    shapes = [(sizes[k + 1], sizes[k]) for k in range(len(sizes) - 1)]  # (fan_out, fan_in) per layer

    def xavier(shape: tuple[int, int]) -> np.ndarray:
        a = math.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-a, a, size=shape)

    def he(shape: tuple[int, int]) -> np.ndarray:
        return rng.normal(0.0, math.sqrt(2.0 / shape[1]), size=shape)

    def weight(k: int, shape: tuple[int, int]) -> np.ndarray:
        hidden = k < len(shapes) - 1
        if config.init == "default":
            return he(shape) if hidden and config.activation == "relu" else xavier(shape)
        if config.init == "uniform":
            return rng.uniform(-0.5, 0.5, size=shape)
        if config.init == "fan_in":
            return rng.normal(0.0, 1.0, size=shape) / math.sqrt(shape[1])
        if config.init == "small":
            return rng.normal(0.0, 1.0, size=shape) * 0.01
        return he(shape) if config.init == "he" else xavier(shape)

    weights = [weight(k, shape) for k, shape in enumerate(shapes)]
    if config.init == "uniform":
        biases = [rng.uniform(-0.5, 0.5, size=s[0]) for s in shapes]
    elif config.init == "fan_in":
        biases = [rng.uniform(0.0, 1.0, size=s[0]) for s in shapes]
    else:
        biases = [np.zeros(s[0]) for s in shapes]
    f32 = lambda x: x.astype(np.float32).astype(np.float64)
    return Params(tuple(f32(w) for w in weights), tuple(f32(b) for b in biases))


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
    """W1 is (H1, P) (P = 784 for MNIST: any width, checked against the data when a job is made); each W(k+1)
    is (H(k+1), Hk), the output's (10, HL); each bias is its weight's rows."""
    order = list(names)
    first = arrays[order[0]]
    fan_in = first.shape[1] if first.ndim == 2 and first.shape[1] > 0 else N_IN
    for k in range(len(order) // 2):
        w, b = order[2 * k], order[2 * k + 1]
        last = k == len(order) // 2 - 1
        W = arrays[w]
        rows = N_OUT if last else (W.shape[0] if W.ndim == 2 and W.shape[0] > 0 else None)
        if rows is None or W.shape != (rows, fan_in):
            want = f"(H, {fan_in}) with H >= 1" if rows is None else str((rows, fan_in))
            raise InputError(f"{source}: tensor {names[w]!r} has shape {W.shape}, expected {want}")
        if arrays[b].shape != (rows,):
            raise InputError(f"{source}: tensor {names[b]!r} has shape {arrays[b].shape}, expected {(rows,)}")
        fan_in = rows


def _parse_layout(source: str, data: dict) -> dict[str, np.ndarray]:
    tensors = data.get("tensors")
    if not isinstance(tensors, dict):
        raise InputError(f"{source}: field 'tensors' must be an object holding W1, b1, W2, b2 (and W3, b3, ... "
                         "for more hidden layers)")
    depth = max(1, sum(1 for n in tensors if isinstance(n, str) and n[:1] == "W" and n[1:].isdigit()) - 1)
    names = tensor_names(depth)
    missing = [n for n in names if n not in tensors]
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        parts = ([f"missing tensor(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected tensor(s) {', '.join(extra)}"] if extra else [])
        raise InputError(f"{source}: {'; '.join(parts)}; expected exactly {', '.join(names)}")
    arrays = {}
    for n in names:
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
    _check_shapes(source, arrays, {n: n for n in names})
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
    return Params.of([arrays[n] for n in tensor_names(len(arrays) // 2 - 1)])


def load_params(path: str | Path) -> Params:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read parameter file: {e.strerror}") from None
    return parse_params(text, source=str(path))

import json
import math

import numpy as np
import pytest

from harness.spec.config import Config
from harness.errors import InputError
from harness.spec.params import initial_params, load_params, parse_params

LEGACY = __import__("conftest").SHARED / "legacy" / "params.json"


def test_float32_values_survive_the_json_round_trip(tmp_path):
    p = initial_params(Config(hidden=16))
    p.write(tmp_path / "p.json")
    q = load_params(tmp_path / "p.json")
    for (name, a), (_, b) in zip(p.items(), q.items()):
        assert a.dtype == b.dtype == np.float64
        assert np.array_equal(a, b), name
        assert np.array_equal(b.astype(np.float32).astype(np.float64), b), f"{name} not float32-exact"


def test_init_scales_follow_the_activation():
    relu = initial_params(Config(hidden=256, seed=1))
    tanh = initial_params(Config(hidden=256, seed=1, activation="tanh"))
    assert relu.W1.std() == pytest.approx(math.sqrt(2 / 784), rel=0.02)  # He normal
    bound = math.sqrt(6 / (784 + 256))
    assert np.abs(tanh.W1).max() <= bound and tanh.W1.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not relu.b1.any() and not relu.b2.any()
    assert not np.array_equal(relu.W1, initial_params(Config(hidden=256, seed=2)).W1)


def test_real_legacy_dump_is_converted():
    if not LEGACY.is_file():
        pytest.skip("no legacy dump in ../shared")
    p = load_params(LEGACY)
    raw = json.loads(LEGACY.read_text())
    assert p.hidden == 10
    assert p.W1.shape == (10, 784) and p.b1.shape == (10,) and p.W2.shape == (10, 10) and p.b2.shape == (10,)
    assert p.W1[3, 500] == raw["w1"][3][500]
    assert p.b1[7] == raw["b1"][7][0] and p.b2[2] == raw["b2"][2][0]


def legacy(h=3):
    return {"w1": [[0.5] * 784 for _ in range(h)], "b1": [[0.1]] * h,
            "w2": [[0.25] * h for _ in range(10)], "b2": [[0.0]] * 10}


def layout(h=3):
    return {"format": "memstate-params/1", "tensors": {
        "W1": {"shape": [h, 784], "data": [0.5] * (h * 784)}, "b1": {"shape": [h], "data": [0.1] * h},
        "W2": {"shape": [10, h], "data": [0.25] * (10 * h)}, "b2": {"shape": [10], "data": [0.0] * 10}}}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["tensors"].pop("b2"), "missing tensor(s) b2"),
    (lambda d: d["tensors"].update(W3={"shape": [1], "data": [1.0]}), "missing tensor(s) b3"),  # a third layer half given
    (lambda d: d["tensors"].update(gamma={"shape": [1], "data": [1.0]}), "unexpected tensor(s) gamma"),
    (lambda d: d["tensors"]["W2"].update(shape=[3, 10], data=[0.0] * 30), "tensor 'W2' has shape (3, 10), expected (10, 3)"),
    (lambda d: d["tensors"]["b1"].update(data=[0.1, 0.1]), "tensor 'b1': shape [3] needs 3 values, 'data' has 2"),
    (lambda d: d["tensors"]["b1"]["data"].__setitem__(1, "x"), "tensor 'b1': element 1 is 'x', expected a number"),
    (lambda d: d["tensors"]["W1"]["data"].__setitem__(5, float("nan")), "tensor 'W1': element 5 is nan"),
    (lambda d: d["tensors"]["b2"]["data"].__setitem__(0, float("inf")), "tensor 'b2': element 0 is inf"),
    (lambda d: d.pop("format"), "neither the memstate layout"),
])
def test_bad_parameters_name_the_tensor(edit, message):
    d = layout()
    edit(d)
    with pytest.raises(InputError) as e:
        parse_params(json.dumps(d), source="p.json")
    assert str(e.value).startswith("p.json: ") and message in str(e.value)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("w2"), "legacy layout is missing key(s) w2"),
    (lambda d: d["b1"].append([0.1]), "tensor 'b1' has shape (4,), expected (3,)"),
    (lambda d: d["w1"][1].pop(), "legacy 'w1' has rows of different lengths"),
    (lambda d: d.__setitem__("b2", [[0.0, 1.0]] * 10), "legacy bias 'b2' has shape (10, 2)"),
])
def test_bad_legacy_layout(edit, message):
    d = legacy()
    edit(d)
    with pytest.raises(InputError, match=None) as e:
        parse_params(json.dumps(d), source="old.json")
    assert message in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        parse_params("{", source="x")
    with pytest.raises(InputError, match="cannot read parameter file"):
        load_params(tmp_path / "nope.json")

"""Every pair of the four implementations agrees, on the default config and every variant."""

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS

from harness.compare.stream import choose_tolerance, compare_memstates
from harness.spec.config import Config
from harness.spec.records import expected_order

FOUR = ("pure_python", "numpy", "jax", "torch")
DEFAULT_20 = Config(steps=20)
SMALL = dict(hidden=32, batch_size=16, steps=20)
VARIANTS = [
    Config(**SMALL, activation=act, loss=loss, dtype=dtype, **opt)
    for act in ("relu", "sigmoid", "tanh")
    for loss in ("cross_entropy", "mse")
    for opt in ({"optimizer": "sgd"}, {"optimizer": "momentum", "weight_decay": 1e-3})
    for dtype in ("float32", "float64")
]


def label(c: Config) -> str:
    return f"{c.activation}-{c.loss}-{c.optimizer}-{c.dtype}"


def assert_all_pairs_agree(runs, config):
    states = {impl: runs.run(impl, config) for impl in FOUR}
    for x, y in itertools.combinations(FOUR, 2):
        c = compare_memstates(states[x], states[y])
        assert c and not c.origins, f"{x} vs {y} on {label(config)}: {c.first.where} {c.first.kind} " \
                                    f"worst {c.first.worst_ratio:.3g}x at {c.first.worst_index}"
        assert len(c.records) == len(expected_order(config))
        # from the same parameters, step 0 is within one step's rounding everywhere
        assert all(r for r in c.records if r.step in ("load", 0)), [r.where for r in c.divergences[:3]]
        fixed = compare_memstates(states[x], states[y], choose_tolerance(states[x], states[y], mode="fixed"))
        assert fixed.verdict == "agree"  # and the fixed tolerances still hold over all 20 steps


def test_default_config_all_pairs_agree_for_20_steps(runs):
    assert_all_pairs_agree(runs, DEFAULT_20)


@pytest.mark.parametrize("config", VARIANTS, ids=label)
def test_variant_all_pairs_agree_for_20_steps(runs, config):
    assert_all_pairs_agree(runs, config)


@pytest.mark.parametrize("impl", FOUR)
def test_records_are_exactly_the_specs(runs, impl):
    for config in (DEFAULT_20, Config(**SMALL, loss="mse", optimizer="momentum", weight_decay=1e-3, dtype="float64")):
        m = runs.run(impl, config)
        got = [(s, n) for s in m.units for n in m.unit(s)]
        assert sorted(got, key=str) == sorted(expected_order(config), key=str)
        floats = {m.get(s, n).dtype.name for s, n in got if n != "input/y"}
        assert floats == {config.dtype}
        assert m.get(0, "loss/value").shape == ()
        assert m.manifest["runtime"]["device"]  # where it ran


@pytest.mark.parametrize("impl", FOUR)
def test_inputs_are_the_jobs_bytes(runs, impl):
    m = runs.run(impl, DEFAULT_20)
    job = runs.job(DEFAULT_20).dir
    images = np.fromfile(job / "images.u8", np.uint8).reshape(20, 64, 784)
    labels = np.fromfile(job / "labels.u8", np.uint8).reshape(20, 64)
    x = m.get(7, "input/x")
    if impl == "jax":
        # XLA turns p / 255 into p * (1/255): 126 of the 256 byte values land 1 ulp away.
        assert np.array_equal(x, images[7].astype(np.float32) * np.float32(1 / 255))
    else:
        assert np.array_equal(x, images[7].astype(np.float32) / np.float32(255))
    assert np.array_equal(m.get(7, "input/y"), labels[7])


def test_training_lowers_the_loss(runs):
    m = runs.run("numpy", DEFAULT_20)
    losses = [float(m.get(s, "loss/value")) for s in range(20)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # measured 0.61; no training gives ~1


@pytest.mark.parametrize("impl", ("numpy", "jax", "torch"))
def test_float64_against_float32_is_judged_at_float32(runs, impl):
    c = compare_memstates(runs.run("numpy", DEFAULT_20.replace(dtype="float64")), runs.run(impl, DEFAULT_20))
    assert c and c.tolerance.dtype == "float32"
    assert any("dtype" in p for p, _, _ in c.manifest_diff)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("impl, allowed", [
    ("pure_python", {"json", "math", "os", "platform", "sys", "array", "operator"}),
    ("numpy", {"json", "pathlib", "numpy"}),
    ("jax", {"json", "functools", "pathlib", "numpy", "jax"}),
    ("torch", {"json", "os", "pathlib", "numpy", "torch"}),  # os: its thread count and MKL mode from the environment
])
def test_implementations_share_no_code(impl, allowed):
    files = list((IMPLS / impl).glob("*.py"))
    assert files
    for f in files:
        assert imports_of(f) <= allowed, f"{f} imports {imports_of(f) - allowed}"


def test_the_example_differs_from_numpy_in_one_line_of_code():
    ours = (IMPLS / "numpy" / "mlp.py").read_text().split('"""', 2)[2].splitlines()
    theirs = (IMPLS / "examples" / "softmax_global_sum" / "mlp.py").read_text().split('"""', 2)[2].splitlines()
    changed = [(a, b) for a, b in zip(ours, theirs) if a != b]
    assert len(ours) == len(theirs) and len(changed) == 1
    assert "E.sum(axis=1, keepdims=True)" in changed[0][0] and "E.sum()" in changed[0][1]

"""Any MLP: every built-in implementation runs every depth, dropout and optimizer, and every pair agrees
(or drifts, with no origin) over 20 steps; the records, masks and loss conventions are the spec's."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

from harness.compare.stream import compare_memstates
from harness.spec.config import Config
from harness.spec.data import dropout_masks
from harness.spec.network import network
from harness.spec.records import expected_order, step_records

FIVE = ("pure_python", "numpy", "jax", "torch", "cpp")
WIDTHS = {1: (12,), 2: (12, 10), 3: (12, 10, 8)}
OPTIMIZERS = {"sgd": {}, "momentum": {"weight_decay": 1e-3}, "adam": {"lr": 0.001}}
CONFIGS = [Config(layers=WIDTHS[depth], dropout=(drop,), optimizer=opt, batch_size=8, steps=20, **extra)
           for depth in WIDTHS for drop in (0.0, 0.2) for opt, extra in OPTIMIZERS.items()]
CONFIGS += [Config(layers=WIDTHS[3], dropout=(0.2,), optimizer=opt, batch_size=8, steps=20, dtype="float64",
                   activation="tanh", **extra) for opt, extra in OPTIMIZERS.items()]  # and in float64


def label(c: Config) -> str:
    return f"depth{len(c.widths)}-dropout{c.drop(0)}-{c.optimizer}" + ("-float64" if c.dtype == "float64" else "")


def impls() -> tuple[str, ...]:
    return FIVE if shutil.which("g++") else FIVE[:-1]


@pytest.mark.parametrize("config", CONFIGS, ids=label)
def test_every_pair_agrees_or_drifts_over_20_steps(runs, config):
    states = {impl: runs.run(impl, config) for impl in impls()}
    for impl, ms in states.items():  # each writes exactly the spec's records
        got = sorted(((s, n) for s in ms.units for n in ms.unit(s)), key=str)
        assert got == sorted(expected_order(config), key=str), impl
    for x, y in itertools.combinations(states, 2):
        c = compare_memstates(states[x], states[y])
        assert c.verdict in ("agree", "drift") and not c.origins, \
            f"{x} vs {y} on {label(config)}: {c.first.where} {c.first.kind} worst {c.first.worst_ratio:.3g}x"
        assert len(c.records) == len(expected_order(config))


@pytest.mark.parametrize("loss, squared_error, batch_reduction", [
    ("mse", "sum", "sum"), ("mse", "half_sum", "mean"), ("cross_entropy", "mean", "sum")])
def test_loss_conventions_agree_in_every_implementation(runs, loss, squared_error, batch_reduction):
    config = Config(layers=(12, 10), activation="sigmoid", loss=loss, squared_error=squared_error,
                    batch_reduction=batch_reduction, lr=0.01, batch_size=8, steps=5)
    states = {impl: runs.run(impl, config) for impl in impls()}
    for impl in states:
        c = compare_memstates(states["numpy"], states[impl])
        assert c.verdict in ("agree", "drift") and not c.origins, impl
    # the conventions are what they say: against the mean over outputs and batch, a known factor
    base = runs.run("numpy", config.replace(squared_error="mean", batch_reduction="mean"))
    per_output = {"mean": 0.1, "sum": 1.0, "half_sum": 0.5}[squared_error] if loss == "mse" else 0.1
    factor = per_output / 0.1 * (8 if batch_reduction == "sum" else 1)  # batch of 8
    ref, got = base.get(0, "output/grad_logits"), states["numpy"].get(0, "output/grad_logits")
    assert np.allclose(got[ref != 0] / ref[ref != 0], factor, rtol=1e-5)


def test_one_hidden_layer_keeps_its_names_and_deeper_ones_are_numbered():
    one = [s.name for s in step_records(Config(hidden=8))]
    assert "hidden/matmul" in one and not any(n.startswith("hidden1/") for n in one)
    assert Config(layers=(8,)) == Config(hidden=8)  # one layer is one layer, however it is written
    two = Config(layers=(8, 6), dropout=(0.5,))
    names = [s.name for s in step_records(two)]
    assert names.index("hidden1/dropout_mask") < names.index("hidden1/dropout") < names.index("hidden2/matmul")
    assert names.index("hidden2/grad_dropout") < names.index("hidden2/grad_activation")
    assert network(two).layer("hidden2").source == "hidden1/dropout"
    assert network(two).output.source == "hidden2/dropout"
    assert two.dropout == (0.5, 0.5) == Config(layers=[8, 6], dropout=0.5).dropout  # a JSON list, one number
    assert not any("dropout" in n for n in (s.name for s in step_records(two.replace(dropout=(0.0, 0.0)))))


def test_masks_are_seeded_data_a_replay_sees_unchanged(runs):
    full = dropout_masks(seed=3, layer=2, width=50, batch_size=40, p=0.3, first=0, last=9)  # (10, 40, 50)
    window = dropout_masks(seed=3, layer=2, width=50, batch_size=40, p=0.3, first=6, last=9)
    assert full.shape == (10, 40, 50) and np.array_equal(full[6:], window)
    assert abs(full.mean() - 0.7) < 0.02 and set(np.unique(full)) == {0, 1}
    assert not np.array_equal(full[0], full[1])  # a fresh mask every step
    other = dropout_masks(seed=3, layer=1, width=50, batch_size=40, p=0.3, first=0, last=9)
    assert not np.array_equal(full, other)  # and every layer
    config = Config(layers=(12, 10), dropout=(0.2,), batch_size=8, steps=3)
    job = runs.job(config).dir
    mask = np.fromfile(job / "mask1.u8", np.uint8).reshape(3, 8, 12)
    assert np.array_equal(mask, dropout_masks(0, 1, 12, 8, 0.2, 0, 2))
    for impl in ("numpy", "pure_python"):  # the mask each records is the one it was handed
        assert np.array_equal(runs.run(impl, config).get(2, "hidden1/dropout_mask"), mask[2])


def test_the_harness_evaluates_without_dropout(mnist):
    from harness.spec.params import initial_params
    from harness.train import predict
    config = Config(layers=(16, 12), dropout=(0.5,))
    params = initial_params(config)
    assert [w.shape for w in params.weights] == [(16, 784), (12, 16), (10, 12)]
    first = predict(params, config, mnist.test_images[:50])
    assert np.array_equal(first, predict(params, config.replace(dropout=()), mnist.test_images[:50]))


def test_report_of_a_deep_dropout_bug_names_it_and_tiles_the_first_layer(mnist, tmp_path):
    """A mask not scaled: the report's verdict, focus and chain name hidden1/dropout and what it feeds; the
    first layer's weight gradient (784 inputs) is tiled 28x28, the second's (16 inputs) is not."""
    from harness.catalogue import BUGS
    from harness.evaluate import Evaluator
    from harness.report.grid import causal_chain
    from harness.report.html import render_report
    from harness.spec.records import expected_order
    from harness.store.memstate import Memstate
    from test_report import Page

    case = next(c for c in BUGS if c.name == "dropout-not-scaled")
    c = Evaluator(tmp_path, mnist, keep=True).compare(case, steps=1)
    assert (c.first.step, c.first.name) == (0, "hidden1/dropout") and c.first.role == "origin"
    page = Page(render_report(c, Memstate(c.a.path), Memstate(c.b.path)))
    assert page.of("verdict").startswith("DIVERGED at step 0, layer hidden1, op dropout")
    assert page.find("tr", id="r-0-hidden1-dropout", **{"class": "origin"})
    assert page.find("tr", id="r-0-hidden1-activation", **{"class": "exact"})
    assert "1 - 0.2: the dropout keep rate" in page.of("diagnosis")  # the factor is named for what it is
    chain = page.of("chain")
    assert "hidden2/matmul" in chain and "hidden1/activation" not in chain
    cfg = Memstate(c.a.path).cfg
    reached = {k for lv in causal_chain(cfg, (0, "hidden1/dropout"), set(expected_order(cfg))) for k in lv}
    assert {(0, "hidden2/matmul"), (0, "hidden2/grad_weight"), (0, "loss/value")} <= reached
    assert (0, "hidden1/activation") not in reached  # upstream of the origin


@pytest.mark.parametrize("impl", ["numpy", "cpp"])
def test_a_replay_with_dropout_equals_the_uninterrupted_run_bit_for_bit(tmp_path, mnist, impl):
    """A replay from step 4 is handed steps 4.. of the same masks, so it recomputes those steps exactly."""
    from conftest import IMPLS

    from harness.compare.bisect import state_before
    from harness.run.job import prepare_job
    from harness.run.runner import load_implementation, run_implementation
    from harness.spec.params import initial_params
    from harness.store.memstate import Memstate

    if impl == "cpp" and shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the C++ port cannot be built")
    cfg = Config(layers=(12, 10), dropout=(0.3, 0.1), optimizer="momentum", batch_size=8, steps=6)
    code = load_implementation(IMPLS / impl)
    full = Memstate(run_implementation(code, prepare_job(tmp_path / "job", cfg, initial_params(cfg), mnist),
                                       tmp_path / "full").memstate)
    params, state = state_before(full, 4)
    job = prepare_job(tmp_path / "rjob", cfg, params, mnist, first_step=4, state=state)
    assert np.fromfile(job.dir / "mask2.u8", np.uint8).size == 2 * 8 * 10
    replay = Memstate(run_implementation(code, job, tmp_path / "replay").memstate)
    for step in (4, 5):
        for name in full.names(step):
            assert np.array_equal(replay.get(step, name), full.get(step, name)), (step, name)


def test_the_input_width_follows_the_data(mnist, tmp_path):
    """MNIST-format files of 14x14 images: the config takes 196 inputs from them, every implementation reads
    196 pixels a sample, and every pair agrees or drifts."""
    from harness.compare.cli import main as compare_main
    from harness.run.job import prepare_job, resolve
    from harness.spec.data import FILES, load_mnist, write_idx
    from harness.spec.params import initial_params
    from harness.errors import InputError

    small = tmp_path / "mnist14"
    small.mkdir()
    for key, stem in FILES.items():
        array = getattr(mnist, key)
        write_idx(small / stem, array[:, ::2, ::2] if key.endswith("images") else array)
    data = load_mnist(small)
    assert data.pixels == 196
    config = resolve(Config(layers=(12, 10), dropout=(0.2,), batch_size=8, steps=3), data)
    assert config.inputs == 196 and initial_params(config).W1.shape == (12, 196)
    with pytest.raises(InputError, match="'inputs': 784 pixels per image, but the images of .* have 196"):
        resolve(Config(inputs=784), data)
    with pytest.raises(InputError, match="W1 of 784 columns but the images of .* have 196 pixels"):
        prepare_job(tmp_path / "bad", Config(), initial_params(Config()), data)
    for impl in impls():
        code = compare_main(["impls/numpy", f"impls/{impl}", "--data", str(small), "--layers", "12,10",
                             "--dropout", "0.2", "--batch-size", "8", "--steps", "3", "--no-html", "--quiet",
                             "--out", str(tmp_path / impl)])
        assert code == 0, impl
    job = json.loads((tmp_path / "jax" / "job" / "job.json").read_text())
    assert job["pixels"] == 196 and job["config"]["inputs"] == 196


def test_a_deep_dropout_memstate_converts_to_json_lines_and_back_unchanged(runs, tmp_path):
    from harness.convert import main as convert_main
    from harness.store.memstate import Memstate

    config = Config(layers=(12, 10), dropout=(0.2,), optimizer="adam", lr=0.001, batch_size=8, steps=2)
    original = runs.run("numpy", config)
    assert convert_main([str(original.dir), str(tmp_path / "deep.jsonl")]) == 0
    assert convert_main([str(tmp_path / "deep.jsonl"), str(tmp_path / "back")]) == 0
    back = Memstate(tmp_path / "back")
    c = compare_memstates(original, back)
    assert c.verdict == "agree" and len(c.records) == len(expected_order(config))
    assert back.get(1, "hidden2/dropout_mask").dtype == np.uint8


@pytest.mark.parametrize("fields, message", [
    ({"layers": (8, 0)}, "'layers': expected a list of positive integers (hidden widths), got [8, 0]"),
    ({"layers": "8"}, "'layers': expected a list of numbers, got '8'"),
    ({"layers": (1,) * 101}, "'layers': 101 hidden layers; at most 100 are supported"),
    ({"dropout": (1.0,)}, "'dropout': expected drop probabilities in [0, 1), got [1.0]"),
    ({"layers": (8, 6), "dropout": (0.1, 0.2, 0.3)}, "one probability, or one per hidden layer (2), got [0.1, 0.2, 0.3]"),
    ({"squared_error": "root"}, "'squared_error': expected one of mean, sum, half_sum, got 'root'"),
    ({"batch_reduction": "max"}, "'batch_reduction': expected one of mean, sum, got 'max'"),
    ({"inputs": -1}, "'inputs': expected a non-negative integer, got -1"),
])
def test_bad_depth_fields_are_named(fields, message):
    from harness.errors import InputError
    with pytest.raises(InputError, match=None) as e:
        Config.from_dict(fields, source="c.json")
    assert str(e.value).startswith("c.json: ") and message in str(e.value)


def test_layers_and_dropout_on_the_command_line():
    from harness.compare.cli import parser
    from harness.spec.config import config_from_arguments
    args = parser().parse_args(["a", "b", "--preset", "born-dropout", "--hidden", "64"])
    config = config_from_arguments(args)
    assert (config.widths, config.dropout) == ((64, 128), (0.2, 0.2))  # --hidden sets the first layer's width
    args = parser().parse_args(["a", "b", "--layers", "32,16,8", "--dropout", "0.1,0.2,0.3"])
    assert config_from_arguments(args).dropout == (0.1, 0.2, 0.3)
    with pytest.raises(SystemExit):
        parser().parse_args(["a", "b", "--layers", "32,x"])

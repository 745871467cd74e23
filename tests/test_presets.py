"""Presets and what they need (Adam, per-epoch decay, init schemes, input scaling, soft targets) in
every implementation; indexed jobs; the train capture mode and `python -m harness.train`."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest
from conftest import IMPLS

from harness.run.capture import TRAIN, Capture
from harness.compare.stream import compare_memstates
from harness.compare.cli import main as compare_main
from harness.spec.config import Config, config_from_arguments
from harness.errors import InputError
from harness.run.job import prepare_job
from harness.store.memstate import Memstate
from harness.spec.params import initial_params, load_params
from harness.spec.presets import PRESETS, get_preset
from harness.spec.records import LOAD, PARAMETERS, expected_order
from harness.run.runner import load_implementation, run_implementation
from harness.train import final_params, losses, train
from harness.train import main as train_main

HAVE_GXX = shutil.which("g++") is not None
PORTS = ("numpy", "jax", "torch", "cpp") if HAVE_GXX else ("numpy", "jax", "torch")
# shortened runs: gon's learning rate decays every 10 steps here instead of every epoch
SHORT = {"born": {"steps": 30}, "gon": {"steps": 30, "epoch_steps": 10}, "goml": {"steps": 40},
         "mnist-from-scratch": {"steps": 3}, "than-dev": {"steps": 3, "batch_size": 1024}}


def assert_agree_or_drift(runs, config, x, y):
    c = compare_memstates(runs.run(x, config), runs.run(y, config))
    assert c.verdict in ("agree", "drift") and not c.origins, \
        f"{x} vs {y}: {c.first.where} {c.first.kind} worst {c.first.worst_ratio:.3g}x"
    assert len(c.records) == len(expected_order(config))
    return c


@pytest.mark.parametrize("preset", ["born", "gon"])
def test_numpy_jax_torch_and_cpp_agree_or_drift_on_a_shortened_run(runs, preset):
    config = get_preset(preset).config(**SHORT[preset])
    for x, y in itertools.combinations(PORTS, 2):
        assert_agree_or_drift(runs, config, x, y)


@pytest.mark.parametrize("preset", ["goml", "mnist-from-scratch", "than-dev"])
def test_every_port_agrees_or_drifts_with_numpy_on_the_other_presets(runs, preset):
    config = get_preset(preset).config(**SHORT[preset])
    for other in PORTS[1:]:
        assert_agree_or_drift(runs, config, "numpy", other)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_pure_python_agrees_or_drifts_with_numpy_on_every_preset_made_small(runs, preset):
    config = get_preset(preset).config(hidden=16, batch_size=4, steps=3, epoch_steps=1)
    assert_agree_or_drift(runs, config, "numpy", "pure_python")


def test_the_new_records_are_in_the_memstates(runs):
    adam = runs.run("torch", get_preset("born").config(**SHORT["born"]))
    assert {f"{p}_{k}" for p in PARAMETERS for k in ("adam_m", "adam_v")} <= set(adam.names(0))
    x = adam.get(0, "input/x")
    goml = runs.run("jax", get_preset("goml").config(**SHORT["goml"]))
    gx = goml.get(0, "input/x")
    assert x.min() == 0 and math.isclose(float(gx.min()), 0.01, rel_tol=1e-6)  # goml's inputs start at 0.01
    assert math.isclose(float(gx.max()), 1.0, rel_tol=1e-6) or gx.max() < 1.0


@pytest.mark.parametrize("impl", ["numpy", "jax", "torch", "pure_python", "cpp"])
def test_an_indexed_job_gives_the_same_memstate_bit_for_bit(tmp_path, mnist, impl):
    if impl == "cpp" and not HAVE_GXX:
        pytest.skip("g++ is not installed")
    config = get_preset("gon").config(hidden=16, batch_size=8, steps=4, epoch_steps=2)
    code = load_implementation(IMPLS / impl)
    params = initial_params(config)
    a = run_implementation(code, prepare_job(tmp_path / "j1", config, params, mnist), tmp_path / "steps")
    b = run_implementation(code, prepare_job(tmp_path / "j2", config, params, mnist, indexed=True), tmp_path / "pool")
    ma, mb = Memstate(a.memstate), Memstate(b.memstate)
    assert json.loads((tmp_path / "j2" / "job.json").read_text())["batches"] == "batches.u32"
    assert ma.units == mb.units == [LOAD, 0, 1, 2, 3]
    for unit in ma.units:
        assert ma.names(unit) == mb.names(unit)
        for name in ma.names(unit):
            assert np.array_equal(ma.get(unit, name), mb.get(unit, name)), (impl, unit, name)


@pytest.mark.parametrize("impl", ["numpy", "cpp"])
def test_train_mode_keeps_the_loss_and_the_final_state_of_the_full_run(tmp_path, mnist, impl):
    if impl == "cpp" and not HAVE_GXX:
        pytest.skip("g++ is not installed")
    config = get_preset("born").config(hidden=32, steps=12)
    code = load_implementation(IMPLS / impl)
    full = Memstate(run_implementation(code, prepare_job(tmp_path / "j1", config, initial_params(config), mnist),
                                       tmp_path / "full").memstate)
    res = train(IMPLS / impl, config, mnist, tmp_path / "train", progress=False)
    kept = Memstate(tmp_path / "train" / "run")
    assert res and kept.units == [LOAD, 11]
    assert set(kept.names(11)) == set(PARAMETERS) | {f"{p}_{k}" for p in PARAMETERS for k in ("adam_m", "adam_v")}
    for name in kept.names(11):
        assert np.array_equal(kept.get(11, name), full.get(11, name)), name
    assert np.array_equal(losses(tmp_path / "train" / "run"), [float(full.get(s, "loss/value")) for s in range(12)])
    assert np.array_equal(final_params(kept).W1, full.get(11, "hidden/weight").astype(np.float64))


def test_train_command_trains_scores_and_saves_parameters_compare_loads(tmp_path, capsys):
    saved = tmp_path / "born.json"
    code = train_main(["impls/numpy", "--preset", "born", "--epochs", "3", "--save", saved, "--json",
                       tmp_path / "r.json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["steps"] == 3 * (4096 // 64) and result["epochs"] == 3 and result["test_images"] == 1024
    assert result["test_accuracy"] > 85, result  # from about 10% at the seed's parameters
    assert result["final_loss"] < 0.5
    assert f"test accuracy {result['test_accuracy']:.2f}%" in out.out
    trained = load_params(saved)
    assert trained.hidden == 128 and not np.array_equal(trained.W1, initial_params(get_preset("born").config()).W1)
    code = compare_main([str(IMPLS / "numpy"), str(IMPLS / "jax"), "--preset", "born", "--steps", "2", "--params",
                         saved, "--out", tmp_path / "cmp", "--no-html", "--quiet"])
    assert code == 0
    loaded = Memstate(tmp_path / "cmp" / "a-numpy")
    assert np.array_equal(loaded.get(LOAD, "hidden/weight"), trained.W1.astype(np.float32))


def test_train_command_reports_a_crash_and_bad_input(tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(IMPLS / "numpy", broken)
    text = (broken / "mlp.py").read_text()
    (broken / "mlp.py").write_text(text.replace("M_out = inputs[-1] @ W_out.T", "M_out = inputs[-1] @ W_out"))  # a
    # shape error at step 0
    assert train_main([broken, "--preset", "born", "--steps", "5", "--quiet"]) == 1
    assert "stopped: ValueError" in capsys.readouterr().out
    assert train_main(["impls/numpy", "--preset", "than-dev", "--quiet"]) == 2
    assert "batch size 60000 is larger than the 4096 training images" in capsys.readouterr().err
    assert train_main(["impls/numpy", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'; presets: mnist-from-scratch, goml, than-dev, born, born-deep, born-dropout, gon" in capsys.readouterr().err


def test_preset_then_config_file_then_options(tmp_path):
    from harness.compare.cli import parser
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"lr": 0.002, "hidden": 64}))
    args = parser().parse_args(["a", "b", "--preset", "born", "--config", str(file), "--hidden", "32"])
    config = config_from_arguments(args)
    assert (config.optimizer, config.init, config.lr, config.hidden) == ("adam", "he", 0.002, 32)


@pytest.mark.parametrize("fields, message", [
    ({"target_min": 0.01}, "soft targets need loss 'mse'"),
    ({"adam_beta2": 1.0}, "'adam_beta2': expected a number in [0, 1)"),
    ({"input_min": 1.0}, "expected min < max"),
    ({"init": "glorot"}, "'init': expected one of default, uniform, fan_in, small, he, xavier"),
    ({"lr_decay": math.inf}, "'lr_decay': expected a finite non-negative number"),
    ({"epoch_steps": -1}, "'epoch_steps': expected a non-negative integer"),
])
def test_bad_new_fields_are_named(fields, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Config(**fields)


def test_init_schemes_draw_what_they_say():
    def params(init, **kw):
        return initial_params(Config(init=init, hidden=400, **kw))
    u = params("uniform")
    assert all(-0.5 <= a.min() and a.max() <= 0.5 and a.max() - a.min() > 0.9 for a in (u.W1, u.b1, u.W2))
    f = params("fan_in")
    assert 0.95 < f.W1.std() * math.sqrt(784) < 1.05 and 0.9 < f.W2.std() * math.sqrt(400) < 1.1
    assert 0 <= f.b1.min() and f.b1.max() < 1 and f.b1.std() > 0.2
    s = params("small")
    assert 0.0095 < s.W1.std() < 0.0105 and not s.b1.any() and not s.b2.any()
    h = params("he")
    assert 0.95 < h.W2.std() / math.sqrt(2 / 400) < 1.05  # He in both layers (default: Xavier for W2)
    x = params("xavier")
    assert np.abs(x.W1).max() <= math.sqrt(6 / (784 + 400)) and np.abs(x.W2).max() <= math.sqrt(6 / 410)
    default = params("default")
    assert np.array_equal(default.W1, h.W1) and not np.array_equal(default.W2, h.W2)


def test_train_mode_capture_round_trips():
    c = Capture(TRAIN, ((9, 9),))
    assert Capture.from_dict(c.to_dict()) == c
    assert c.keeps(9, "hidden/weight_adam_m") and not c.keeps(9, "hidden/matmul") and not c.keeps(8, "hidden/weight")
    assert c.summarizes(3, "loss/value") and not c.summarizes(3, "hidden/matmul")


def test_pure_python_gives_an_infinite_loss_where_p_rounds_to_zero_as_numpy_does(runs):
    # uniform init and lr 10: at step 1 a sample's softmax probability of its label rounds to 0
    config = Config(hidden=16, batch_size=4, steps=3, lr=10.0, init="uniform")
    a, b = runs.run("numpy", config), runs.run("pure_python", config)
    assert b.status == "complete", b.stop_summary()
    losses_a = [float(a.get(s, "loss/value")) for s in range(3)]
    losses_b = [float(b.get(s, "loss/value")) for s in range(3)]
    assert math.isinf(losses_a[1]) and math.isinf(losses_b[1]) and np.allclose(losses_a[::2], losses_b[::2])

"""Summary capture, exact replays from checkpoints, the bisect verb, and the chunked metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.judge import metrics
from harness.compare.bisect import bisect, screen, state_before
from harness.run.capture import GEMV_FROM, PERIOD, SUMMARY, Capture, summarize
from harness.compare.cli import main
from harness.spec.config import Config
from harness.run.job import prepare_job
from harness.store.memstate import Memstate
from harness.spec.params import initial_params
from harness.spec.records import LOAD, PARAMETERS, velocity
from harness.run.runner import load_implementation, run_implementation


def late_bug(tmp_path: Path, step: int) -> Path:
    """numpy with the softmax summed over the whole batch from `step` on (a bug that waits)."""
    impl = tmp_path / "late"
    impl.mkdir()
    shutil.copy(IMPLS / "numpy" / "memstate-impl.json", impl)
    text = (IMPLS / "numpy" / "mlp.py").read_text()
    good = "P = E / E.sum(axis=1, keepdims=True)"
    assert good in text
    (impl / "mlp.py").write_text(text.replace(good, f"P = E / (E.sum(axis=1, keepdims=True) if step < {step} "
                                                    f"else E.sum())"))
    return impl


BUFFER_NAMES = {"sgd": set(), "momentum": {velocity(p) for p in PARAMETERS},
                "adam": {f"{p}_{k}" for p in PARAMETERS for k in ("adam_m", "adam_v")}}


@pytest.mark.parametrize("impl", ["numpy", "jax", "torch", "pure_python", "cpp"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_replay_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit(tmp_path, mnist, impl, optimizer):
    if impl == "cpp" and shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the C++ port cannot be built")
    # the learning rate halves every 4 steps, so the replay from step 6 starts in the second epoch
    cfg = Config(hidden=16, batch_size=8, steps=9, optimizer=optimizer, lr_decay=0.5, epoch_steps=4,
                 lr=0.001 if optimizer == "adam" else 0.1)
    code = load_implementation(IMPLS / impl)
    params = initial_params(cfg)
    full = Memstate(run_implementation(code, prepare_job(tmp_path / "job", cfg, params, mnist), tmp_path / "full").memstate)
    if impl == "torch":  # exact under load too: one intra-op thread, deterministic kernels, said in the manifest
        versions = full.manifest["runtime"]["versions"]
        assert (versions["threads"], versions["deterministic"], versions["mkl_cbwr"]) == ("1", "true", "AUTO")
    summary = prepare_job(tmp_path / "sjob", cfg, params, mnist, Capture(SUMMARY, ((7, 7),), 3))
    part = Memstate(run_implementation(code, summary, tmp_path / "part").memstate)
    assert part.units == [LOAD, 2, 5, 7, 8]  # checkpoints after steps 2, 5, 8 and the asked-for step 7
    assert set(part.names(2)) == set(PARAMETERS) | BUFFER_NAMES[optimizer]
    assert len(part.names(7)) == len(full.names(7))
    _, rows = part.summary_table()
    assert sorted(set(rows[:, 0].astype(int))) == list(range(9)) and len(rows) == sum(len(full.names(s))
                                                                                       for s in range(9))
    p, state = state_before(part, 6)
    assert set(state) == {"sgd": set(), "momentum": {"velocity"}, "adam": {"adam_m", "adam_v"}}[optimizer]
    rjob = prepare_job(tmp_path / "rjob", cfg, p, mnist, first_step=6, last_step=7, state=state)
    replay = Memstate(run_implementation(code, rjob, tmp_path / "replay").memstate)
    assert replay.units == [LOAD, 6, 7] and replay.first_step == 6
    assert set(replay.names(LOAD)) == set(PARAMETERS) | BUFFER_NAMES[optimizer]  # the buffers it started from
    for step in (6, 7):
        for name in full.names(step):
            assert np.array_equal(replay.get(step, name), full.get(step, name)), (step, name)
    assert screen(part, part) is None


def test_bisect_finds_a_bug_that_waits_for_step_40_exactly(tmp_path, mnist):
    cfg = Config(steps=60)
    res = bisect(load_implementation(IMPLS / "numpy"), load_implementation(late_bug(tmp_path, 40)), cfg,
                 initial_params(cfg), mnist, tmp_path / "work", checkpoint_every=16)
    assert res.verdict == "diverged" and not res
    run = res.passes[0]
    assert (run.suspect.step, run.suspect.name) == (40, "output/softmax")
    assert run.window == (32, 40) and run.replay_exact
    first = res.comparison.first
    assert (first.step, first.name, first.role, first.inconsistent) == (40, "output/softmax", "origin", "B")
    assert [(r.step, r.name) for r in res.comparison.origins] == [(40, "output/softmax")]


def test_bisect_of_two_libraries_that_agree_reads_agree(tmp_path, mnist):
    cfg = Config(steps=30)
    res = bisect(load_implementation(IMPLS / "numpy"), load_implementation(IMPLS / "torch"), cfg,
                 initial_params(cfg), mnist, tmp_path / "work", checkpoint_every=10)
    assert res.verdict == "agree" and res and res.comparison is None
    assert [p.suspect for p in res.passes] == [None]


def test_bisect_command_prints_the_window_and_the_origin(tmp_path, mnist, capsys):
    code = main([str(IMPLS / "numpy"), str(late_bug(tmp_path, 12)), "--bisect", "--steps", "20",
                 "--checkpoint-every", "5", "--out", str(tmp_path / "run"), "--no-html", "--quiet",
                 "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert "bisect: summaries first part at step 12, output/softmax: norm" in out
    assert "bisect: replayed steps 10..12 in full from each side's checkpoint; the replay reproduces the summary " \
           "pass exactly: yes" in out
    assert "verdict: DIVERGED at step 12, output/softmax (values): the first origin" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["verdict"] == "diverged" and result["origins"] == [[12, "output/softmax"]]
    [one] = result["bisect"]["passes"]
    assert (one["suspect"]["step"], one["suspect"]["name"], one["window"], one["replay_exact"]) == \
        (12, "output/softmax", [10, 12], True)
    assert result["bisect"]["bytes_written"] > 0


def test_bisect_command_whose_summaries_agree_still_writes_its_json(tmp_path, capsys):
    code = main([str(IMPLS / "numpy"), str(IMPLS / "numpy"), "--bisect", "--steps", "12", "--checkpoint-every", "5",
                 "--out", str(tmp_path / "run"), "--quiet", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "bisect: summaries agree at every step to 11" in out and "verdict: AGREE" in out
    assert "report:" not in out  # nothing was compared in full, so there is nothing to draw
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["verdict"], result["passed"], result["exit_code"], result["report"]) == ("agree", True, 0, None)
    [one] = result["bisect"]["passes"]
    assert (one["first_step"], one["suspect"], one["window"]) == (0, None, None)


def test_bisect_needs_two_implementations(tmp_path, runs, capsys):
    ms = runs.run("numpy", Config(steps=2))
    assert main([str(ms.dir), str(IMPLS / "numpy"), "--bisect", "--no-html", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --bisect runs both sides: give two implementation directories"


def test_first_stops_at_the_first_origin(tmp_path, runs, capsys):
    a = runs.run("numpy", Config(steps=3))
    b = runs.run(IMPLS / "examples" / "softmax_global_sum", Config(steps=3))
    assert main([str(a.dir), str(b.dir), "--first", "--no-html", "--json", str(tmp_path / "r.json")]) == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["origins"] == [[0, "output/softmax"]]
    assert result["records"][-1]["name"] == "output/softmax" and result["records"][-1]["step"] == 0
    assert "stopped at the first origin (step 0, output/softmax): later records were not compared" in result["notes"]


floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(floats, floats, st.floats(0, 1e3, width=32)), min_size=1, max_size=600),
       st.sampled_from(["float32", "float64"]))
def test_chunked_metrics_equal_the_float64_path(values, dtype):
    a = np.array([v[0] for v in values], dtype=dtype)
    b = np.array([v[1] for v in values], dtype=dtype)
    allowed = np.array([v[2] for v in values], dtype=np.float64)
    old = metrics.CHUNK
    metrics.CHUNK = 64  # many chunks, some fast, some exact
    try:
        got = metrics.element_metrics(a, b, np.dtype(dtype), allowed)
    finally:
        metrics.CHUNK = old
    want = metrics.exact_chunk(a, b, allowed, 0.0, 0.0, False)
    assert (got.nan_a, got.nan_b, got.inf_a, got.inf_b, got.max_ulp) == \
           (want.nan_a, want.nan_b, want.inf_a, want.inf_b, want.max_ulp)
    with np.errstate(all="ignore"):  # |A-B| rounds in the comparison dtype on the fast path: ratios near 1 may tip
        exact = np.abs(a.astype(np.float64) - b.astype(np.float64)) / allowed
    assert abs(got.n_over - want.n_over) <= np.count_nonzero(np.abs(exact - 1) < 1e-6)
    for f in ("max_abs", "max_rel", "worst_ratio"):
        assert getattr(got, f) == getattr(want, f) or np.isclose(getattr(got, f), getattr(want, f), rtol=1e-6), f
    if got.worst_ratio != want.worst_ratio:
        assert np.isclose(exact[got.worst], want.worst_ratio, rtol=1e-6)
    else:
        assert got.worst == want.worst or exact[got.worst] == exact[want.worst]


@pytest.mark.parametrize("n", [1, PERIOD, PERIOD + 1, GEMV_FROM - 1, GEMV_FROM, GEMV_FROM + 777])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_weighted_sum_weighs_each_position_by_its_ramp_value(n, dtype):
    """wsum is summed as rows of PERIOD from GEMV_FROM elements on and as one dot product below: either way
    a one at position p weighs p % PERIOD + 1, and random values sum to within a float32 row's rounding."""
    for p in {0, min(n - 1, PERIOD - 1), min(n - 1, PERIOD), n // 2, n - 1}:
        x = np.zeros(n, dtype)
        x[p] = 1
        assert summarize(x)[2] == p % PERIOD + 1
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    weights = np.arange(n) % PERIOD + 1.0
    exact = float(np.dot(x.astype(np.float64), weights))
    assert abs(summarize(x)[2] - exact) <= (PERIOD + 2) * np.finfo(dtype).eps * float(np.abs(x) @ weights)

"""The noise model against real float32 rounding, and origin/propagation on real memstates."""

import importlib

import numpy as np
import pytest
from test_comparator import CFG, altered

import harness.compare.stream as stream
from harness.compare.stream import compare_memstates, step_bounds
from harness.judge.noise import (
    UNIT_ROUNDOFF,
    dot,
    ordered_partial_sums,
    proportional_rss,
    rss,
    sum_sigma,
    sum_worst,
)
from harness.judge.origin import systematic

U32 = UNIT_ROUNDOFF["float32"]


def sequential_float32_sums(terms: np.ndarray) -> np.ndarray:
    """Rows of float32 terms added one at a time in float32 (np.cumsum is sequential)."""
    return np.cumsum(terms.astype(np.float32), axis=1, dtype=np.float32)[:, -1].astype(np.float64)


@pytest.mark.parametrize("mean", [0.0, 0.3])
def test_sum_sigma_matches_measured_float32_rounding(mean):
    """2,000 sums of 784 terms in random-sign order (mean 0) and in same-sign order (mean 0.3):
    the model's sigma is an upper estimate of the measured spread, and not by more than 3x."""
    rng = np.random.default_rng(1)
    terms = (rng.normal(mean, 1.0, size=(2000, 784))).astype(np.float32).astype(np.float64)
    exact = terms.sum(axis=1)
    err = sequential_float32_sums(terms) - exact
    n = np.full(2000, 784.0)
    sigma = sum_sigma(n, exact, (terms * terms).sum(axis=1), U32)
    measured, modelled = np.sqrt(np.mean(err ** 2)), np.sqrt(np.mean(sigma ** 2))
    assert measured <= modelled <= 3 * measured, (measured, modelled)
    assert np.max(np.abs(err) / sigma) < 6  # the bound's 6 sigma is never reached


def test_ordered_estimate_covers_sums_whose_order_follows_the_signs():
    """Terms positive in the first half, negative in the second (a trained weight row over an
    image): the running total climbs then falls, which random-order sigma does not expect."""
    rng = np.random.default_rng(2)
    x = rng.random((500, 784))  # (p, n)
    w = np.concatenate([np.full(392, 0.05), np.full(392, -0.05)])[:, None]  # (n, 1)
    terms = x * w.T
    err = sequential_float32_sums(terms) - terms.sum(axis=1)
    random_only = dot(x, w, U32).sigma
    with_order = dot(x, w, U32, ordered=True).sigma
    assert np.sqrt(np.mean(err ** 2)) > np.sqrt(np.mean(random_only[:, 0] ** 2))  # the random model alone is short
    assert np.max(np.abs(err) / with_order[:, 0]) < 6


def test_ordered_partial_sums_is_at_least_the_exact_one_in_either_direction():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 100)) + 0.5, rng.random((100, 3))
    value = a @ b
    t = a[:, :, None] * b[None, :, :]  # (p, n, q)
    forwards = (np.cumsum(t, axis=1) ** 2).sum(axis=1)
    backwards = (np.cumsum(t[:, ::-1], axis=1) ** 2).sum(axis=1)
    estimate = ordered_partial_sums(a, b, value)
    assert np.all(estimate >= 0.99 * np.maximum(forwards, backwards))
    assert np.all(estimate <= 6 * np.maximum(forwards, backwards))


@pytest.fixture(scope="module")
def pair(runs):
    return runs.run("numpy", CFG), runs.run("torch", CFG)


def test_a_recorded_value_that_is_not_its_op_is_an_origin_of_that_side(pair, tmp_path):
    """B's hidden/activation rescaled after the fact: B's value is no longer relu of B's Z1."""
    a, b = pair
    def edit(step, name, x):
        return x * np.float32(1 + 1e-4) if (step, name) == (2, "hidden/activation") else x
    c = compare_memstates(a, altered(b, tmp_path / "b", edit))
    assert c.verdict == "diverged" and not c
    o = c.origins[0]
    assert (o.step, o.name, o.role, o.inconsistent, o.judged_by) == (2, "hidden/activation", "origin", "B", "noise")
    assert o.n_unexplained > 0 and o.explained_ratio > 1
    # B computed everything after it from its true activation: those records agree with A's
    assert [(r.step, r.name) for r in c.origins] == [(2, "hidden/activation")]
    # the pair drifts from step 1 (parameters), yet the answer is the origin, not the first divergence
    assert c.divergences[0].step == 1 and (c.first.step, c.first.name) == (2, "hidden/activation")


def test_propagated_divergence_is_not_an_origin(pair, tmp_path):
    """The same change made to B's Z1 and to everything computed from it in that step is one
    origin: the records after it are explained by their inputs."""
    a, b = pair
    z1 = np.array(b.get(1, "hidden/bias_add")) * np.float32(1.001)  # (m, H)
    a1 = np.maximum(z1, 0)
    m2 = (a1.astype(np.float64) @ np.array(b.get(0, "output/weight"), np.float64).T).astype(np.float32)
    def edit(step, name, x):
        if step == 1 and name == "hidden/bias_add":
            return z1
        if step == 1 and name == "hidden/activation":
            return a1
        if step == 1 and name == "output/matmul":
            return m2
        return x
    c = compare_memstates(a, altered(b, tmp_path / "b", edit))
    roles = {r.name: r.role for r in c.divergences if r.step == 1}
    assert (c.first.step, c.first.name) == (1, "hidden/bias_add")
    assert roles["hidden/activation"] == "propagated" and roles["output/matmul"] == "propagated"


def test_noise_bound_is_what_the_comparison_uses(pair):
    a, b = pair
    bounds = step_bounds(a, b, 0)
    c = compare_memstates(a, b)
    r = next(r for r in c.records if (r.step, r.name) == (0, "hidden/matmul"))
    diff = np.abs(np.array(a.get(0, "hidden/matmul"), np.float64) - np.array(b.get(0, "hidden/matmul"), np.float64))
    # float32 records are compared in float32 (metrics.py): the ratio agrees up to a few roundings there
    assert r.worst_ratio == pytest.approx(float(np.max(diff / bounds["hidden/matmul"])), rel=2.0**-21)
    assert 0 < r.worst_ratio < 1


@pytest.mark.parametrize("f", [2 * np.finfo(np.float32).tiny, 1e-3])
def test_proportional_rss_is_the_matmuls_rss_or_above_it_by_at_most_its_smaller_part(f):
    """rss(k|a| + f, b) and rss(b, k|a| + f) from a @ b's squares: never below the matmul, and above it by
    at most min(k sqrt(squares), f sqrt(other)); for a source's f (the smallest normal number) the same
    to float64's rounding. Pixels: zeros among them, and rows of nothing but zeros."""
    rng = np.random.default_rng(5)
    a = np.where(rng.random((40, 784)) < 0.8, 0.0, rng.integers(1, 256, (40, 784)) / 255)  # (m, n)
    a[:3] = 0.0
    w, g, k = rng.normal(0, 0.05, (784, 30)), rng.normal(0, 1e-3, (40, 30)), 2.4e-7  # (n, q), (m, q)
    for fast, exact, parts in (
            (proportional_rss((a * a) @ (w * w), (k, f), (w * w).sum(axis=0)), rss(k * np.abs(a) + f, w),
             (k * np.sqrt((a * a) @ (w * w)), f * np.sqrt((w * w).sum(axis=0)))),  # forward: (m, q)
            (proportional_rss((g * g).T @ (a * a), (k, f), (g * g).sum(axis=0)[:, None]), rss(g.T, k * np.abs(a) + f),
             (k * np.sqrt((g * g).T @ (a * a)), f * np.sqrt((g * g).sum(axis=0))[:, None]))):  # gradient: (q, n)
        assert np.all(fast >= exact * (1 - 1e-14))
        assert np.all(fast - exact <= np.minimum(*parts) * (1 + 1e-12) + 1e-14 * exact)
        if f < 1e-30:
            assert np.allclose(fast, exact, rtol=1e-13, atol=0)
        else:
            assert np.max((fast - exact) / exact) > 1e-6  # with a large f it is a bound, no identity (4.4e-5)


def test_the_bound_a_source_carries_is_found_without_its_matmuls_and_is_the_same(pair, monkeypatch, tmp_path):
    """The input's bound is k |x| + f on both sides: the hidden matmul and the hidden weight gradient carry
    it from their own squares (4 matmuls fewer a step: 2 a side), to float64's rounding of the matmuls'.
    Where the sides hold different inputs the bound is no multiple of either, and the matmuls run."""
    a, b = pair
    carried = importlib.import_module("harness.judge.noise.carried")
    calls = []

    def counted(*args):
        calls.append(args)
        return proportional_rss(*args)
    monkeypatch.setattr(carried, "proportional_rss", counted)
    fast = step_bounds(a, b, 1)
    assert len(calls) == 4
    with monkeypatch.context() as m:
        m.setattr(stream, "noise_bound_scale", lambda *args: None)
        exact = step_bounds(a, b, 1)
    assert len(calls) == 4 and fast.keys() == exact.keys() and len(fast) == 20
    for name in fast:
        assert np.allclose(fast[name], exact[name], rtol=1e-12, atol=0), name
    def edit(step, name, x):
        return np.nextafter(x, np.float32(1)) if (step, name) == (1, "input/x") else x
    other = altered(b, tmp_path / "b", edit)
    step_bounds(a, other, 1)
    assert len(calls) == 4  # no shortcut where the inputs differ
    step_bounds(a, other, 2)
    assert len(calls) == 8


def test_float64_bounds_are_float64_sized(runs):
    """Judged at float64, the hidden matmul's bound is 2^29 times smaller than at float32."""
    c64 = CFG.replace(dtype="float64")
    a, b = runs.run("numpy", c64), runs.run("torch", c64)
    b64 = step_bounds(a, b, 0)["hidden/matmul"]
    b32 = step_bounds(*[runs.run(i, CFG) for i in ("numpy", "torch")], 0)["hidden/matmul"]
    assert np.median(b32 / b64) > 1e7
    c = compare_memstates(a, b)
    assert c.verdict in ("agree", "drift") and not c.origins


def _orders(terms: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of terms rearranged the ways a correct implementation may add them."""
    return {"index": terms, "ascending": np.sort(terms, axis=1), "descending": np.sort(terms, axis=1)[:, ::-1],
            "by magnitude": np.take_along_axis(terms, np.argsort(np.abs(terms), axis=1), axis=1),
            "by magnitude, down": np.take_along_axis(terms, np.argsort(-np.abs(terms), axis=1), axis=1)}


@pytest.mark.parametrize("kind", ["normal", "nearly equal", "few large negatives"])
def test_no_order_of_summation_exceeds_the_worst_case_and_sorted_ones_exceed_random_rounding(kind):
    """2,000 sums of 1,000 float32 terms added one at a time in five orders: every error stays
    within sum_worst; sorted orders go beyond the random walk's 6 sigma (why the worst case is needed)."""
    rng = np.random.default_rng(3)
    terms = {"normal": rng.normal(0, 1, (2000, 1000)),
             "nearly equal": 0.1 + rng.normal(0, 1e-6, (2000, 1000)),
             "few large negatives": np.abs(rng.normal(1e-3, 5e-4, (2000, 1000)))
             * np.where(rng.random((2000, 1000)) < 0.1, -9, 1)}[kind].astype(np.float32).astype(np.float64)
    exact, n = terms.sum(axis=1), np.full(2000, 1000.0)
    random_bound = 6 * sum_sigma(n, exact, (terms * terms).sum(axis=1), U32)
    worst = sum_worst(n, exact, np.abs(terms).sum(axis=1), U32)
    beyond_random = 0.0
    for order, t in _orders(terms).items():
        err = np.abs(sequential_float32_sums(t) - exact)
        assert np.all(err <= worst), (order, float(np.max(err / worst)))
        beyond_random = max(beyond_random, float(np.max(err / random_bound)))
    assert beyond_random > 1.5  # measured 2.9 to 5.1


def test_systematic_is_small_for_rounding_and_about_sqrt_n_for_an_offset_or_a_scale():
    rng = np.random.default_rng(4)
    allowed = rng.uniform(0.5, 2.0, 10_000)
    value = rng.normal(0, 1, 10_000)
    noise = rng.normal(0, 0.3, 10_000) * allowed  # rounding: no preferred sign
    assert systematic(noise, allowed, value) < 4
    assert systematic(noise + 0.5 * allowed, allowed, value) > 60  # an offset on every element
    assert systematic(noise + 0.5 * allowed * np.sign(value), allowed, value) > 60  # a scale
    assert systematic(np.zeros(5), np.ones(5), np.ones(5)) == 0.0

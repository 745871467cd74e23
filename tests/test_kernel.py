"""The compiled passes (harness/judge/kernel.c) against numpy's: the comparator's fast path (`_fast_chunk`),
the same figures bit for bit and the same chunks sent to the exact path, on values chosen to reach every
branch; and the noise model's index-order pass (`ordered_partial_sums`), the same estimate bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import ROOT

from harness.judge import kernel
from harness.judge.metrics import Metrics, _fast_chunk, element_metrics
from harness.judge.noise.sums import _ordered_pass, ordered_partial_sums

needs_compiler = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
                                    reason="no C compiler: the comparator runs numpy's fast path instead")


def awkward(rng: np.random.Generator, n: int, dtype: type, mix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y and a bound of n elements: close values, with a sprinkling of what each branch looks for."""
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)
    y = (x * (1 + rng.standard_normal(n) * 1e-6)).astype(dtype)
    bound = np.abs(x).astype(np.float64) * 1e-6 * rng.uniform(0.2, 3, n)
    k = max(1, n // 50)
    at = rng.integers(0, n, k)
    if mix == "zeros":  # both zero, a signed zero against the other, a zero against a number
        x[at[: k // 2]], y[at[: k // 2]] = 0, -0.0
        y[at[k // 2:]] = 0
    elif mix == "specials":  # NaN, Inf, overflowing differences
        x[at[0]] = np.nan if rng.random() < 0.5 else np.inf
    elif mix == "signs":  # opposite signs
        y[at] = -y[at]
    elif mix == "bounds":  # zero, negative, NaN and infinite bounds
        bound[at] = rng.choice([0.0, -1e-3, np.nan, np.inf, 1e300, 1e-45], k)  # 1e-45: beyond float32's ratios
    elif mix == "equal":
        y = x.copy()
        bound[at] = 0.0
    elif mix == "ties":  # the largest ratio at several elements, blocks apart: the first is the worst
        x[at], y[at], bound[at] = 1.0, 1.5, 0.5e-6
    elif mix == "tiny":  # subnormals and values far below the bound
        x[at] = np.finfo(dtype).smallest_subnormal * rng.integers(1, 5, k)
        y[at] = np.finfo(dtype).smallest_subnormal * rng.integers(1, 5, k)
    return x, y, bound


@needs_compiler
def test_the_kernel_is_built_where_a_compiler_is():
    assert kernel.supports(np.float32, np.float64), kernel.build_error


@needs_compiler
@pytest.mark.parametrize("dtype,bound_dtype", [(np.float32, np.float64), (np.float32, np.float32),
                                               (np.float64, np.float64)])
@pytest.mark.parametrize("mix", ["plain", "zeros", "specials", "signs", "bounds", "equal", "ties", "tiny"])
def test_the_kernel_gives_numpys_figures_bit_for_bit(dtype, bound_dtype, mix):
    rng = np.random.default_rng(zlib.crc32(f"{mix} {np.dtype(dtype)} {np.dtype(bound_dtype)}".encode()))
    assert kernel.supports(dtype, bound_dtype), kernel.build_error  # loads it in this worker
    sent_exact = agreed = 0
    for trial in range(60):
        n = int(rng.choice([1, 2, 7, 1000, 4096, 20_000]))  # the kernel looks at blocks of 2,048
        x, y, bound = awkward(rng, n, dtype, mix)
        with np.errstate(all="ignore"):
            al = bound.astype(bound_dtype)  # 1e300 overflows float32 to infinity, as a bound may
            ours = kernel.chunk(x, y, al)
            theirs = _fast_chunk(x, y, al.astype(dtype), 0)
        if theirs is None:
            assert ours is None, (mix, trial, ours)
            sent_exact += 1
            continue
        assert ours is not None, (mix, trial, theirs)
        assert Metrics(*ours) == theirs, (mix, trial)
        agreed += 1
    if mix in ("plain", "ties", "tiny"):
        assert agreed > 0
    if mix in ("specials", "signs", "bounds"):
        assert sent_exact > 0  # the branches that send a chunk to the exact path were reached


@needs_compiler
def test_a_whole_record_compares_the_same_with_and_without_the_kernel(monkeypatch):
    rng = np.random.default_rng(7)
    x, y, bound = awkward(rng, 1_000_003, np.float32, "plain")
    x[12345], y[999_000], bound[999_000] = 0.0, x[999_000] + 1, 0.0  # a zero against a number; a zero bound
    compiled = element_metrics(x, y, np.float32, allowed=bound)
    monkeypatch.setattr(kernel, "supports", lambda *_: False)
    assert element_metrics(x, y, np.float32, allowed=bound) == compiled
    assert compiled.n_over > 0 and compiled.worst == 999_000  # a difference over a zero bound is the worst


def test_a_ratio_beyond_the_comparison_dtypes_range_is_float64s(monkeypatch):
    """|A-B| over a bound too small for float32 to hold the ratio: the exact path's float64 ratio, not infinity
    (found by Hypothesis in test_bisect's chunked metrics), with the kernel and without."""
    x, y = np.array([1.0, 2.0, 3.0], np.float32), np.array([5.0, 2.0, 3.0], np.float32)
    bound = np.array([np.finfo(np.float32).tiny, 1.0, 1.0])
    got = element_metrics(x, y, np.float32, allowed=bound)
    assert (got.worst_ratio, got.worst, got.n_over) == (2.0 ** 128, 0, 1)  # 4 / 2^-126, above float32's largest
    monkeypatch.setattr(kernel, "supports", lambda *_: False)
    assert element_metrics(x, y, np.float32, allowed=bound) == got


@needs_compiler
@pytest.mark.parametrize("mix", ["plain", "per-column", "specials", "zeros", "strided"])
def test_the_ordered_pass_gives_numpys_estimate_bit_for_bit(mix):
    rng = np.random.default_rng(zlib.crc32(mix.encode()))
    assert kernel.has_ordered(), kernel.build_error
    for trial in range(20):
        nb, p, q = (int(v) for v in rng.integers(1, [40, 60, kernel.QMAX + 1]))
        blocks = rng.standard_normal((nb, p, q)) * 10.0 ** rng.integers(-30, 30, (nb, p, q))
        counts = rng.integers(0, 50, (nb, p, q) if mix == "per-column" else (nb, p)).astype(np.float32)
        if mix == "specials":
            blocks.flat[rng.integers(0, blocks.size, 5)] = rng.choice([np.nan, np.inf, -np.inf, 1e300], 5)
        if mix == "zeros":
            blocks[rng.random(blocks.shape) < 0.5] = -0.0
        wide = rng.standard_normal((p, q + 7))  # a slice of a wider result: rows q + 7 apart
        total = wide[:, 3:3 + q] if mix == "strided" else blocks.sum(axis=0)
        ours, theirs = np.full((p, q), 7.0), np.full((p, q), 7.0)
        with np.errstate(all="ignore"):
            kernel.ordered(blocks, counts, total, ours)
            _ordered_pass(blocks, counts, total, theirs)
        assert np.array_equal(ours, theirs, equal_nan=True), (mix, trial)
        assert ours.tobytes() == theirs.tobytes() or mix == "specials", (mix, trial)  # NaNs' payloads aside


@needs_compiler
def test_ordered_partial_sums_is_the_same_with_and_without_the_kernel(monkeypatch):
    rng = np.random.default_rng(11)
    a = rng.random((1500, 200)) * (rng.random((1500, 200)) < 0.3)  # more rows and columns than one tile
    for b in (rng.standard_normal((200, 70)), rng.standard_normal((200, 70)) * (rng.random((200, 70)) < 0.5)):
        value = a @ b
        compiled = ordered_partial_sums(a, b, value)
        monkeypatch.setattr(kernel, "has_ordered", lambda: False)
        assert ordered_partial_sums(a, b, value).tobytes() == compiled.tobytes()
        monkeypatch.undo()


def test_the_ordered_pass_refuses_what_it_cannot_read():
    blocks, counts, out = np.zeros((2, 3, 4)), np.zeros((2, 3), np.float32), np.zeros((3, 4))
    with pytest.raises(ValueError, match="blocks"):
        kernel.ordered(blocks.astype(np.float32), counts, out, out)
    with pytest.raises(ValueError, match="counts"):
        kernel.ordered(blocks, counts.astype(np.float64), out, out)
    with pytest.raises(ValueError, match=r"expected \(3, 4\) float64"):
        kernel.ordered(blocks, counts, np.zeros((4, 3)), out)
    wide = np.zeros((2, 1, kernel.QMAX + 1))
    with pytest.raises(ValueError, match="blocks"):
        kernel.ordered(wide, np.zeros((2, 1), np.float32), wide[0], wide[0])


def test_without_a_working_compiler_the_comparator_says_so_and_uses_numpy(tmp_path):
    env = {**os.environ, "CC": "false", "MEMSTATE_CACHE": str(tmp_path)}
    code = ("from harness.judge import kernel; import numpy as np; from harness.judge.metrics import element_metrics;"
            "x = np.ones(300000, np.float32);"
            "m = element_metrics(x, x * np.float32(1.5), np.float32, allowed=x * 0.25);"
            "print(kernel.supports(np.float32, np.float64), kernel.has_ordered(), m.n_over, m.worst_ratio);"
            "print(kernel.build_error)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert r.returncode == 0, r.stderr
    first, why = r.stdout.splitlines()
    assert first == "False False 300000 2.0"
    assert why.startswith("the compiled kernel is not in use: false exited with code 1")


def test_memstate_kernel_0_turns_it_off(tmp_path):
    env = {**os.environ, "MEMSTATE_KERNEL": "0", "MEMSTATE_CACHE": str(tmp_path)}
    code = "from harness.judge import kernel; print(kernel.supports('float32', 'float64'), kernel.build_error)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert r.stdout.strip() == "False MEMSTATE_KERNEL=0" and not list(tmp_path.iterdir())

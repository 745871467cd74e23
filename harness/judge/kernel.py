"""The comparator's fast path, and the noise model's index-order pass, each as one compiled pass
(kernel.c), built on first use with the system's C compiler into memstate's cache and loaded with
ctypes. They give numpy's figures bit for bit (`_fast_chunk`'s and `ordered_partial_sums`';
tests/test_kernel.py), so whether they run changes the speed and nothing else: without a compiler,
with a build that fails, or with MEMSTATE_KERNEL=0, `supports` and `has_ordered` say False (and
`build_error` why) and numpy does the work.

ctypes lets go of the GIL during the call, so the comparator's threads run chunks side by side."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import cache_root

SOURCE = Path(__file__).with_name("kernel.c")
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fPIC", "-shared"]  # no FMAs: IEEE rounding of each operation
_FUNCTIONS = {(np.dtype(np.float32), np.dtype(np.float64)): "chunk_f32_f64",
              (np.dtype(np.float32), np.dtype(np.float32)): "chunk_f32_f32",
              (np.dtype(np.float64), np.dtype(np.float64)): "chunk_f64_f64"}  # (cmp, bound dtype) -> function
_CHUNK = (ctypes.c_int, [ctypes.c_void_p] * 3 + [ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p])
_SIGNATURES = {**{name: _CHUNK for name in _FUNCTIONS.values()},  # name -> (restype, argtypes)
               "ordered_sums": (None, [ctypes.c_long] * 3 + [ctypes.c_void_p] * 2
                                + [ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long])}
QMAX = 512  # kernel.c's widest strip of columns for ordered_sums
_lock = threading.Lock()
_tried = False  # whether loading was tried: once a process
_loaded: dict[str, Callable[..., int | None]] = {}  # name -> its compiled function, every one or none
build_error: str | None = None  # why the kernel is not in use, for the benchmark to say


def _library_path() -> Path:
    source = SOURCE.read_bytes()
    built_for = " ".join([*FLAGS, platform.machine(), platform.system()]).encode()
    digest = hashlib.sha256(source + built_for).hexdigest()[:16]
    return cache_root() / "kernel" / f"metrics-{digest}.so"


def _build(target: Path) -> None:
    """Compile kernel.c to `target` (via a temporary name, so that a concurrent build never loads half a file)."""
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc")
                                                         or shutil.which("clang") or ""]
    if not compiler[0]:
        raise OSError("no C compiler (cc, gcc or clang) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        proc = subprocess.run([*compiler, *FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, timeout=120,
                              check=False)
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace")[-400:]
            raise OSError(f"{compiler[0]} exited with code {proc.returncode}: {said}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _load() -> None:
    """Build (unless built) and load the kernel into `_loaded`, once; on any failure say why in `build_error`."""
    global build_error, _tried
    if _tried:  # loaded (or refused) already: no lock on the hot path
        return
    with _lock:
        if _tried:
            return
        try:
            if os.environ.get("MEMSTATE_KERNEL", "1") == "0":
                build_error = "MEMSTATE_KERNEL=0"
                return
            target = _library_path()
            if not target.is_file():
                _build(target)
            lib = ctypes.CDLL(str(target))
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
                _loaded[name] = fn
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            _loaded.clear()
            build_error = f"the compiled kernel is not in use: {e}"
        finally:
            _tried = True


def supports(cmp: np.dtype, allowed: np.dtype) -> bool:
    """Whether the compiled kernel runs chunks of `cmp` values against a bound of dtype `allowed`
    (building it now if need be)."""
    _load()
    return _FUNCTIONS.get((np.dtype(cmp), np.dtype(allowed))) in _loaded


def chunk(x: np.ndarray, y: np.ndarray, allowed: np.ndarray) -> tuple[int, float, float, float, float, int] | None:
    """(n_over, max_abs, max_rel, max_ulp, worst_ratio, worst) of one chunk, as `_fast_chunk` computes them,
    or None where it returns None (the chunk needs the exact path). Only where `supports` says so.
    x, y: (k,) in the comparison dtype; allowed: (k,), each contiguous."""
    if not x.size == y.size == allowed.size:  # the kernel reads x.size of each
        raise ValueError(f"chunk of {x.size}, {y.size} and {allowed.size} elements: expected one size")
    fn = _loaded[_FUNCTIONS[x.dtype, allowed.dtype]]
    x, y, allowed = (np.ascontiguousarray(a) for a in (x, y, allowed))  # views already, as the comparator slices
    out = np.empty(5, np.float64)
    worst = ctypes.c_long(0)
    if fn(x.ctypes.data, y.ctypes.data, allowed.ctypes.data, x.size, out.ctypes.data, ctypes.byref(worst)):
        return None
    return int(out[0]), float(out[1]), float(out[2]), float(out[3]), float(out[4]), worst.value


def has_ordered() -> bool:
    """Whether the compiled `ordered_sums` runs (building the kernel now if need be)."""
    _load()
    return "ordered_sums" in _loaded


def ordered(blocks: np.ndarray, counts: np.ndarray, total: np.ndarray, out: np.ndarray) -> None:
    """`ordered_partial_sums`' pass over one tile, into `out`: blocks (nb, p, q) float64 and counts (nb, p, q)
    or (nb, p) float32, each contiguous; total and out (p, q) float64 with contiguous rows. Only where
    `has_ordered` says so."""
    nb, p, q = blocks.shape
    if (not blocks.flags.c_contiguous or blocks.dtype != np.float64 or q > QMAX or counts.dtype != np.float32
            or not counts.flags.c_contiguous or counts.shape not in ((nb, p, q), (nb, p))):
        raise ValueError(f"ordered: blocks {blocks.shape} {blocks.dtype}, counts {counts.shape} {counts.dtype}")
    for a in (total, out):
        if a.shape != (p, q) or a.dtype != np.float64 or a.strides[1] != 8:
            raise ValueError(f"ordered: expected ({p}, {q}) float64 with contiguous rows, got {a.shape} {a.dtype}")
    _loaded["ordered_sums"](nb, p, q, blocks.ctypes.data, counts.ctypes.data, 1 if counts.ndim == 2 else q,
                total.ctypes.data, total.strides[0] // 8, out.ctypes.data, out.strides[0] // 8)

"""Long runs at scale: comparator throughput, recording overhead, bisect against full capture.

    python benchmarks/bench_scale.py [--data DIR] [--steps 5000] [--bug-step 4000] [--only PART] [--work DIR]

Every figure is a ratio against a baseline measured in the same run:
- compare: bytes of one side per second for two large float32 records judged against a per-element
  noise bound (every metric), against numpy.allclose, torch.testing.assert_close and deepdiff on the
  same tensors; and a whole memstate's comparison (the noise model evaluated too), against numpy.allclose
  and two floors (benchmarks/floors.py): one read of both sides, and that read plus each side's sums
  recomputed once in float64, what any model that checks each op against its inputs must do; and that
  comparison with glibc's allocator as the process started, against the heap the comparator's commands
  keep (harness/compare/heap.py; after one comparison to warm up, the baseline first).
- record: the numpy implementation's step with full capture and with summaries, each with its writes
  overlapping the next step (the writer thread) and written on the recording thread, against the same
  step with a recorder that keeps nothing, at H=128, batch 64 and at H=800, batch 100; the record call
  alone (train capture: every record checked, one summarised, none copied); and the floor
  under each: what reading, copying and writing one step's records cost on their own (--work picks
  the filesystem). The writer thread needs a core of its own: on 2 cores run it with
  OPENBLAS_NUM_THREADS=1 as well, or numpy's second BLAS thread takes that core.
- bisect: --bisect of numpy against numpy with a bug that waits for --bug-step, against comparing
  a full capture of both sides: wall time and bytes written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from floors import read_seconds, sums_seconds

from harness.compare.bisect import bisect
from harness.run.capture import SUMMARY, TRAIN, Capture, weighted_sum
from harness.compare.stream import compare_memstates
from harness.judge import kernel
from harness.judge.record import RecordDiff, Tolerance, compare_values
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.run.job import prepare_job
from harness.store.memstate import Memstate
from harness.compare.heap import keep_freed_memory
from harness.store.format import write_file
from harness.store.writer import MemstateWriter
from harness.spec.params import initial_params
from harness.run.runner import load_implementation, run_implementation


def best(f, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_compare(n: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n).astype(np.float32)
    b = (a + rng.standard_normal(n).astype(np.float32) * np.float32(3e-7) * np.abs(a)).astype(np.float32)
    allowed = np.abs(a).astype(np.float64) * 1e-6  # a per-element bound, as the noise model hands over
    tol = Tolerance("float32")
    ours = best(lambda: compare_values(RecordDiff(0, "x"), a, b, tol, allowed))
    with_kernel = kernel.supports(np.float32, np.float64)
    supports, kernel.supports = kernel.supports, lambda *_: False  # the same comparison on numpy's fast path
    try:
        numpy_path = best(lambda: compare_values(RecordDiff(0, "x"), a, b, tol, allowed))
    finally:
        kernel.supports = supports
    base = {"numpy.allclose": best(lambda: np.allclose(a, b, rtol=1e-4, atol=1e-5))}
    try:
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        base["torch.testing.assert_close"] = best(lambda: torch.testing.assert_close(ta, tb, rtol=1e-4, atol=1e-5))
    except ImportError:
        pass
    from deepdiff import DeepDiff
    k = min(n, 200_000)  # deepdiff walks Python floats: measured on a slice, scaled by bytes
    dd = best(lambda: DeepDiff(a[:k].tolist(), b[:k].tolist(), significant_digits=5), repeat=1) * n / k
    base["deepdiff (significant_digits=5, per byte)"] = dd
    mb = a.nbytes / 1e6
    print(f"compare: {n:,} float32 elements ({mb:.0f} MB a side), every metric against a per-element bound")
    print(f"  memstate    {ours * 1e3:9.1f} ms  {mb / ours:8.0f} MB/s   "
          + ("(the compiled kernel)" if with_kernel else f"(numpy's fast path: {kernel.build_error})"))
    print(f"  memstate, numpy's fast path (no compiled kernel) {numpy_path * 1e3:9.1f} ms  {mb / numpy_path:8.0f} MB/s")
    for name, t in base.items():
        print(f"  {name:<44s} {t * 1e3:9.1f} ms  {mb / t:8.0f} MB/s   memstate is {t / ours:6.2f}x its throughput")
    # the ceiling: any comparator must read both sides and the bound at least once
    read = best(lambda: (np.vdot(a, a), np.vdot(b, b), np.vdot(allowed, allowed)))
    print(f"  floor: one read of both sides and the float64 bound {read * 1e3:.1f} ms, {mb / read:.0f} MB/s: "
          + ", ".join(f"{t / read:.2f}x {name.split(' ')[0]}" for name, t in base.items() if "deepdiff" not in name)
          + f"; memstate takes {ours / read:.2f}x the floor ({numpy_path / read:.2f}x on numpy's fast path)")


def bench_memstate_compare(mnist, work: Path, steps: int, hidden: int) -> None:
    cfg = Config(steps=steps, hidden=hidden)
    job = prepare_job(work / "cjob", cfg, initial_params(cfg), mnist)
    sides = [Memstate(run_implementation(load_implementation(ROOT / "impls" / n), job, work / f"c-{n}").memstate)
             for n in ("numpy", "jax")]
    size = sum(f.stat().st_size for f in sides[0].dir.glob("*.safetensors"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _timed_compare(sides)  # once to warm up (the first comparison of a process measured 15% slower)
    default, default_kernel, _ = _timed_compare(sides)  # the allocator as the process started (the baseline)
    kept = keep_freed_memory()  # what `python -m harness.compare` runs with (harness/compare/heap.py)
    ours, kernel, c = _timed_compare(sides)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arrays = [(sides[0].get(s, n), sides[1].get(s, n)) for s in sides[0].units for n in sides[0].names(s)]
    t = time.perf_counter()
    for x, y in arrays:
        np.allclose(x, y, rtol=1e-4, atol=1e-5)
    base = time.perf_counter() - t
    read, sums = read_seconds(*sides), sums_seconds(*sides)
    print(f"compare memstates: numpy vs jax, H={hidden}, {steps} steps, {size / 1e6:.0f} MB a side, verdict "
          f"{c.verdict}: {ours:.2f} s ({size / 1e6 / ours:.0f} MB/s, noise model included); numpy.allclose on the "
          f"same records {base:.2f} s: {base / ours:.2f}x; peak RSS {before / 1e3:.0f} -> {peak / 1e3:.0f} MB\n"
          f"  floors (benchmarks/floors.py): one read of both sides {read:.2f} s: memstate {ours / read:.1f}x; "
          f"read + each side's sums once in float64 {read + sums:.2f} s: memstate {ours / (read + sums):.2f}x\n"
          f"  freed memory kept in the heap ({'on' if kept else 'not available here'}): {ours:.2f} s, {kernel:.2f} s of "
          f"it in the kernel; with the allocator's defaults (the baseline, run before it, after one run to warm up) {default:.2f} s, "
          f"{default_kernel:.2f} s in the kernel: {ours / default:.2f}x its time")


def _timed_compare(sides: list[Memstate]) -> tuple[float, float, object]:
    """A whole comparison's wall and kernel (system) seconds, and the comparison."""
    t, k = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    c = compare_memstates(*sides)
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_stime - k, c


class Null:
    """A recorder that keeps nothing: the bare step."""

    def describe(self, **_: str) -> None:
        pass

    def __call__(self, step, name, value, dtype=None) -> None:
        pass

    def close(self) -> None:
        pass


class Keep(Null):
    """A recorder that keeps the last step's arrays (copies), to measure what one step holds."""

    def __init__(self) -> None:
        self.step: object = None
        self.records: dict[str, np.ndarray] = {}

    def __call__(self, step, name, value, dtype=None) -> None:
        if step != self.step:
            self.step, self.records = step, {}
        self.records[name] = np.array(value, dtype=dtype)


def bench_record(mnist, work: Path, hidden: int = 128, batch: int = 64, steps: int = 400) -> None:
    spec = importlib.util.spec_from_file_location("bench_numpy_impl", ROOT / "impls" / "numpy" / "mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = Config(steps=steps, hidden=hidden, batch_size=batch)
    job = prepare_job(work / f"rjob-{hidden}", cfg, initial_params(cfg), mnist)
    n = [0]

    def writer(capture: Capture, overlap: bool):
        def make():
            n[0] += 1
            return MemstateWriter(work / f"rec-{hidden}-{n[0]}", {"capture": capture.to_dict()}, overlap=overlap)
        return make

    def timed(make) -> float:
        """The best of 5 runs, per step; each run's files are removed before the next starts, so that no run
        writes into a page cache (or a tmpfs) that the runs before it filled."""
        times = []
        for _ in range(5):
            w = make()
            t = time.perf_counter()
            module.run(job.dir, w)
            w.close()
            times.append(time.perf_counter() - t)
            shutil.rmtree(getattr(w, "dir", work / "none"), ignore_errors=True)
        return min(times) / steps

    bare = timed(Null)
    times = {(kind, overlap): timed(writer(capture, overlap)) for kind, capture in
             (("full capture", Capture()), ("summaries + a checkpoint every 100", Capture(SUMMARY, (), 100)))
             for overlap in (True, False)}
    # the record call itself: train capture checks each record and summarises only loss/value, copying nothing
    call = timed(writer(Capture(TRAIN), True))
    blas = (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
            or f"{os.cpu_count()} (every core)")
    print(f"record: numpy (BLAS threads: {blas}), H={hidden}, batch {batch}, {steps} steps, per step: bare "
          f"{bare * 1e3:.3f} ms; "
          + "; ".join(f"{kind} {t * 1e3:.3f} ms ({t / bare:.2f}x; written on the recording thread "
                      f"{times[kind, False] * 1e3:.3f} ms, {times[kind, False] / bare:.2f}x)"
                      for (kind, overlap), t in times.items() if overlap)
          + f"; the record call alone (train capture) {call * 1e3:.3f} ms ({call / bare:.2f}x)"
          + " (targets: full capture 1.5x, summaries 1.15x)")
    # the floor: what touching each of a step's records once costs, whatever the recorder does with it
    one = Keep()
    module.run(job.dir, one)
    arrays = [a for a in one.records.values() if a.size]
    size = sum(a.nbytes for a in arrays)
    floats = [a.ravel() for a in arrays if a.dtype.kind == "f"]
    read = best(lambda: [np.vdot(a, a) for a in floats], repeat=200)
    dots = best(lambda: [(np.vdot(a, a), weighted_sum(a)) for a in floats], repeat=200)
    copy = best(lambda: [a.copy() for a in arrays], repeat=200)
    blob = b"".join(a.tobytes() for a in arrays)
    count = [0]

    def write_new_file() -> None:  # what the kernel charges to put a step's bytes into the page cache
        count[0] += 1
        write_file(work / f"floor-{count[0]}", [blob])  # as the writer writes: a MiB a system call at most

    write = best(write_new_file, repeat=200)
    for i in range(count[0]):
        (work / f"floor-{i + 1}").unlink()
    t = time.perf_counter()
    for i in range(steps):  # a whole run's bytes, a step at a time: how fast the filesystem takes them for long
        write_file(work / f"sustained-{i}", [blob])
    sustained = (time.perf_counter() - t) / steps
    for i in range(steps):
        (work / f"sustained-{i}").unlink()
    print(f"record floor: a step's {len(arrays)} records, {size / 1e6:.2f} MB: one read (np.vdot(x, x) each) "
          f"{read * 1e3:.3f} ms = {read / bare:.2f}x of the bare step; a summary's two dot products (sumsq, wsum) "
          f"{dots * 1e3:.3f} ms = {dots / bare:.2f}x; one copy {copy * 1e3:.3f} ms = {copy / bare:.2f}x; one write "
          f"to a new file {write * 1e3:.3f} ms = {write / bare:.2f}x ({size / write / 1e9:.2f} GB/s, "
          f"in {work.parent}); {steps} such writes in a row {sustained * 1e3:.3f} ms each = {sustained / bare:.2f}x "
          f"({size / sustained / 1e9:.2f} GB/s); so summaries of every element cost at least {1 + read / bare:.2f}x "
          f"(these summaries {1 + dots / bare:.2f}x), a full capture written on the recording thread at least "
          f"{1 + (copy + sustained) / bare:.2f}x and one whose writes overlap the steps at least "
          f"{max(1 + copy / bare, sustained / bare):.2f}x")


def bench_bisect(mnist, work: Path, steps: int, bug: int, k: int) -> None:
    impl = work / "late"
    impl.mkdir(exist_ok=True)
    shutil.copy(ROOT / "impls" / "numpy" / "memstate-impl.json", impl)
    good = "P = E / E.sum(axis=1, keepdims=True)"
    (impl / "mlp.py").write_text((ROOT / "impls" / "numpy" / "mlp.py").read_text().replace(
        good, f"P = E / (E.sum(axis=1, keepdims=True) if step < {bug} else E.sum())"))
    a, b = load_implementation(ROOT / "impls" / "numpy"), load_implementation(impl)
    cfg = Config(steps=steps)
    t = time.perf_counter()
    res = bisect(a, b, cfg, initial_params(cfg), mnist, work / "bisect", checkpoint_every=k)
    t_bisect = time.perf_counter() - t
    first = res.comparison.first if res.comparison is not None else None  # a Comparison is falsy when it diverged
    t = time.perf_counter()
    job = prepare_job(work / "fjob", cfg, initial_params(cfg), mnist)
    full = [Memstate(run_implementation(x, job, work / f"full-{i}").memstate) for i, x in enumerate((a, b))]
    c = compare_memstates(*full, stop_at_origin=True)
    t_full = time.perf_counter() - t
    full_bytes = sum(f.stat().st_size for m in full for f in m.dir.iterdir())
    print(f"bisect: numpy vs numpy with a bug from step {bug}, {steps} steps, checkpoint every {k}: found "
          f"{first.where if first is not None else None} ({first.role if first is not None else '-'}), replay exact: "
          f"{res.passes[0].replay_exact}")
    print(f"  bisect       {t_bisect:7.1f} s  {res.bytes_written / 1e6:9.1f} MB written")
    print(f"  full capture {t_full:7.1f} s  {full_bytes / 1e6:9.1f} MB written, found {c.first.where if c.first is not None else None}"
          f" (--first)")
    print(f"  bisect writes {100 * res.bytes_written / full_bytes:.2f}% of the bytes, in {t_bisect / t_full:.2f}x "
          f"the time")
    for m in full:
        shutil.rmtree(m.dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="MNIST directory (default: the bundled subset)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--bug-step", type=int, default=4000)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--elements", type=int, default=16_000_000)
    p.add_argument("--only", choices=("compare", "memstate", "record", "bisect"))
    p.add_argument("--work", default=None, help="where the memstates go (default: the system's temporary directory)")
    args = p.parse_args()
    mnist = load_mnist(args.data)
    with tempfile.TemporaryDirectory(prefix="memstate-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        if args.only in (None, "compare"):
            bench_compare(args.elements)
        if args.only in (None, "memstate"):
            bench_memstate_compare(mnist, work, 50, 800)
        if args.only in (None, "record"):
            bench_record(mnist, work)
            bench_record(mnist, work, hidden=800, batch=100, steps=100)  # mnist-from-scratch's size
        if args.only in (None, "bisect"):
            bench_bisect(mnist, work, args.steps, args.bug_step, args.checkpoint_every)


if __name__ == "__main__":
    main()

"""Shared fixtures: the bundled data, and implementation runs cached per (impl, config)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from harness.compare.heap import keep_freed_memory
from harness.spec.config import Config
from harness.spec.data import Mnist, load_mnist
from harness.evaluate import Evaluator
from harness.run.job import Job
from harness.store.memstate import Memstate
from harness.run.runner import load_implementation, run_config, run_implementation

# Property tests draw new random inputs on every run where people work (that is how they find bugs);
# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) draws the same ones each time, so a landing is never decided
# by the luck of the draw. A failure prints the input, which then goes into an @example.
settings.register_profile("dev")
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The suite runs on every core (pytest-xdist, `-n auto` in pyproject.toml), and every worker and every
# implementation it starts gets one thread: BLAS, XLA and the comparator's pool would otherwise each start
# a thread per core and spin against the other workers' (measured: half the CPU time in the kernel). One
# thread everywhere also keeps each run's sums from depending on the machine's core count: a matmul split
# over another number of threads rounds differently, and the catalogue's suspects are measured figures.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEMSTATE_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}

# numpy asks Linux for 2 MiB pages for every array of 4 MiB or more (madvise); on a VM whose host takes its free
# memory back (free page reporting) such a page is faulted in afresh (docs/bisect.md, *Streaming comparison*,
# has the figures).
SMALL_PAGES = {"NUMPY_MADVISE_HUGEPAGE": "0"}


# JAX compiles its jitted step afresh in every run, warm or cold (about 1 s a run here); its persistent
# compilation cache, one directory for every worker of this session, compiles each program once (most
# runs of the suite are distinct programs: `-k "jax or depth"` took 151 s with it, 163 s without). The
# cache key holds the program, the backend, JAX's version and XLA_FLAGS: a run gets the executable its
# own compilation would have made, so nothing a test compares changes.
JAX_CACHE = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
_JAX_CACHE_DIR = pytest.StashKey[str]()  # the cache directory this process made, to remove at the end
# memstate's own cache (built ports, the compiled kernel) is the session's too: a build is keyed by the files
# its manifest lists, which for the kit examples leaves out the kit itself (../memstate.go, ../memstate.hpp:
# a source must lie in the port's directory), so a kit changed since an earlier session's build would not be
# the kit tested.
_CACHE_DIR = pytest.StashKey[str]()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker more than the cores this process may run on. A worker that waits (on an
    implementation's start, a timeout a test sets off, another worker's run of a shared job) leaves its core
    idle; the extra worker fills it. Measured on 2 cores: 2 workers kept the CPUs 96% busy and took 592 to 608 s;
    3 workers kept them 100% busy and took 571 s. PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores + 1


def pytest_configure(config: pytest.Config) -> None:
    """Before the workers start (they, and the implementations they run, inherit the environment)."""
    keep_freed_memory()  # each worker compares in-process, as `python -m harness.compare` does (compare/heap.py)
    # The suite starts Python about 350 times (implementation runs, the command-line tests). Where
    # PYTHONDONTWRITEBYTECODE is set (this machine sets it), each start compiles every module it imports afresh
    # and keeps nothing: `import harness.run.child, harness.compare.stream, harness.cli` took 0.21 s against
    # 0.15 s compiled. So these processes, and every one they start, write the byte code of what they import, as
    # Python does by default; the README's command installs with `pip install --no-compile`, which leaves the
    # compiling to the first import (the README says how many modules that spares).
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for name, value in {**ONE_THREAD, **SMALL_PAGES}.items():
        os.environ.setdefault(name, value)
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller
        config.stash[_JAX_CACHE_DIR] = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
            prefix="memstate-jax-cache-")
        for name, value in JAX_CACHE.items():
            os.environ.setdefault(name, value)
    if not hasattr(config, "workerinput") and "MEMSTATE_CACHE" not in os.environ:
        config.stash[_CACHE_DIR] = os.environ["MEMSTATE_CACHE"] = tempfile.mkdtemp(prefix="memstate-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, name in ((_JAX_CACHE_DIR, "JAX_COMPILATION_CACHE_DIR"), (_CACHE_DIR, "MEMSTATE_CACHE")):
        made = config.stash.get(key, None)
        if made:
            shutil.rmtree(made, ignore_errors=True)
            os.environ.pop(name, None)



ROOT = Path(__file__).resolve().parents[1]
IMPLS = ROOT / "impls"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    return load_mnist()


@pytest.fixture(scope="session")
def shared_mnist_dir() -> Path:
    path = Path(os.environ.get("MEMSTATE_MNIST", SHARED / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"full MNIST not found at {path} (set MEMSTATE_MNIST)")
    return path


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A directory every worker of this session sees (their temporary roots' parent), or, without
    workers, one of this session's own."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(exist_ok=True)
    return root


def run_once(root: Path, what: list[str], run: Callable[[Path], object]) -> Memstate:
    """The memstate `run(out)` writes for `what` (an implementation and its job's config), made once
    for every worker: the first to ask runs it under a lock while the others wait, then all read it."""
    out = root / hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        manifest = out / "manifest.json"
        if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "complete"):
            shutil.rmtree(out, ignore_errors=True)  # a run that failed in another worker is run again
            result = run(out)
            assert result, f"{what[0]} did not complete on {what[1]}: {getattr(result, 'error', '')}"
    return Memstate(out)


class Runs:
    """Runs implementations on jobs, once per (impl, config) for every worker (`run_once`); the jobs are
    the Evaluator's (one per config and worker)."""

    def __init__(self, root: Path, mnist: Mnist, shared: Path):
        self.root, self.shared = root, shared
        self.evaluator = Evaluator(root, mnist)
        self.done: dict[tuple[str, Config], Memstate] = {}

    def job(self, config: Config) -> Job:
        return self.evaluator.job(config)

    def run(self, impl: str | Path, config: Config) -> Memstate:
        key = (str(impl), config)
        if key not in self.done:
            path = Path(impl) if Path(impl).is_absolute() else IMPLS / impl
            self.done[key] = run_once(self.shared, [str(path), json.dumps(config.to_dict(), sort_keys=True)],
                                      lambda out: run_implementation(load_implementation(path), self.job(config), out))
        return self.done[key]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist: Mnist) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"), mnist, shared_dir(tmp_path_factory, "shared-runs"))


@pytest.fixture(scope="session", autouse=True)
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reports of the CLI tests (subprocesses included) go to a temporary directory, not reports/."""
    path = tmp_path_factory.mktemp("reports")
    os.environ["MEMSTATE_REPORTS"] = str(path)
    return path


pytest_plugins = ["pytester"]  # the plugin's tests run a user's project in a subprocess


@pytest.fixture(scope="session")
def numpy_memstate(tmp_path_factory) -> Path:
    """A complete numpy run (H=4, batch 8, 3 steps) that the memstate cases copy and damage."""
    work = tmp_path_factory.mktemp("numpy")
    result = run_config(IMPLS / "numpy", Config(hidden=4, batch_size=8, steps=3), work, load_mnist())
    assert result, result.error
    return result.memstate


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first (longest processing time first): started last, the longest of them
    (sorted-and-grouped-h800, about 110 s) kept one worker busy while the other had nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order

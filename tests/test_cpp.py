"""The C++ port: built by its manifest, run as a subprocess, compared like any other."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import IMPLS, ROOT
from test_implementations import VARIANTS, label

from harness.compare.stream import compare_memstates
from harness.spec.config import Config
from harness.store.jsonl import convert_jsonl
from harness.store.memstate import Memstate
from harness.run.runner import build_directory, ensure_built, load_implementation

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: the C++ port cannot be built")


@needs_gxx
@pytest.mark.parametrize("config", VARIANTS, ids=label)
def test_cpp_agrees_with_numpy_and_torch(runs, config):
    cpp = runs.run("cpp", config)
    for other in ("numpy", "torch"):
        c = compare_memstates(runs.run(other, config), cpp)
        assert c, f"{other} vs cpp: {c.first.where} {c.first.kind} {c.first.note}"


@needs_gxx
def test_cpp_default_config(runs):
    assert compare_memstates(runs.run("numpy", Config(steps=20)), runs.run("cpp", Config(steps=20)))


def planted_copy(tmp_path, old, new):
    d = tmp_path / "cpp-planted"
    shutil.copytree(IMPLS / "cpp", d)
    src = (d / "mlp.cpp").read_text()
    assert src.count(old) == 1
    (d / "mlp.cpp").write_text(src.replace(old, new))
    return d


@needs_gxx
@pytest.mark.parametrize("old, new, config, where", [
    # tanh' from the pre-activation instead of the activation: 1 - z^2 for 1 - a^2
    ("return T(1) - a * a;", "return T(1) - z * z;", Config(hidden=32, batch_size=16, steps=3, activation="tanh"),
     (0, "hidden/grad_preactivation")),
    # the weight decay term dropped from the momentum buffer's input, visible from step 0
    ("T g = grads[t][k] + wd * p[t][k];", "T g = grads[t][k];",
     Config(hidden=32, batch_size=16, steps=3, optimizer="momentum", weight_decay=0.01), (0, "hidden/weight_velocity")),
])
def test_planted_bug_in_the_cpp_source_is_localized(runs, tmp_path, old, new, config, where):
    c = compare_memstates(runs.run("numpy", config), runs.run(planted_copy(tmp_path, old, new), config))
    assert (c.first.step, c.first.name, c.first.kind) == (*where, "values")


@needs_gxx
def test_build_is_cached_and_redone_when_a_source_changes(tmp_path):
    d = tmp_path / "cpp"
    shutil.copytree(IMPLS / "cpp", d)
    impl = load_implementation(d)
    first, error, _ = ensure_built(impl)
    assert error is None and (first / "mlp").is_file()
    stamp = (first / "mlp").stat().st_mtime_ns
    assert ensure_built(impl)[0] == first and (first / "mlp").stat().st_mtime_ns == stamp  # not rebuilt
    (d / "mlp.cpp").write_text((d / "mlp.cpp").read_text() + "\n// an edit\n")
    assert build_directory(load_implementation(d)) != first


def compare(*args):
    return subprocess.run([sys.executable, "-m", "harness.compare", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, check=False)


def test_missing_compiler_is_said_clearly(tmp_path):
    d = tmp_path / "cpp-nocompiler"
    shutil.copytree(IMPLS / "cpp", d)
    manifest = json.loads((d / "memstate-impl.json").read_text())
    manifest["build"][0] = "g++-that-is-not-installed"
    (d / "memstate-impl.json").write_text(json.dumps(manifest))
    r = compare("impls/numpy", d, "--steps", "2", "--out", tmp_path / "run")
    assert r.returncode == 1
    assert "build tool 'g++-that-is-not-installed' is not installed" in r.stdout


@needs_gxx
def test_compile_error_is_reported_with_the_compiler_output(tmp_path):
    d = planted_copy(tmp_path, "int main(int argc, char** argv) {", "int main(int argc, char** argv) { oops;")
    r = compare("impls/numpy", d, "--steps", "2", "--out", tmp_path / "run")
    assert r.returncode == 1 and "the build failed: g++ exited with code 1" in r.stdout
    manifest = json.loads((tmp_path / "run" / "b-cpp" / "manifest.json").read_text())
    assert "oops" in manifest["stopped"]["build_output"] and "was not declared" in manifest["stopped"]["build_output"]


@pytest.mark.parametrize("fmt, named", [("%.6g", "%.6g"), ("%f", "%.6f"), ("%.7g", "%.7g")])
def test_floats_printed_with_too_few_digits_are_named_as_the_cause(runs, tmp_path, fmt, named):
    """A port that prints floats with C's defaults: every record is a little off, and the load
    records, which must equal the parameter file, show why."""
    numpy = runs.run("numpy", Config(hidden=16, batch_size=8, steps=2))
    lines = []
    for step in numpy.units:
        for name, arr in numpy.unit(step).items():
            data = [float(fmt % v) for v in arr.ravel().tolist()] if arr.dtype.kind == "f" else arr.ravel().tolist()
            lines.append(json.dumps({"step": step, "name": name, "dtype": arr.dtype.name,
                                     "shape": list(arr.shape), "data": data}))
    (tmp_path / "port.jsonl").write_text("\n".join(lines + ['{"end": "complete"}']) + "\n")
    port = convert_jsonl(tmp_path / "port.jsonl", tmp_path / "port")
    c = compare_memstates(Memstate(numpy.dir), port)
    assert (c.first.step, c.first.name, c.first.kind) == ("load", "hidden/weight", "values")
    assert f"B's values are A's printed as {named} and read back: B wrote its floats with too few digits" in c.first.note

"""The pytest plugin as a user meets it: a separate project, its own test file, pytest in a subprocess
(the plugin loads through its entry point), plain output and JUnit XML read back."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import IMPLS

from harness.golden import GOLDEN_DIR

USER_TEST = """
import pytest


@pytest.mark.memstate_impls("my_port", "other_port")
def test_port_matches_golden(memstate, memstate_impl):
    run = memstate.run(memstate_impl, hidden=8, batch_size=4, steps=3, seed=0)
    memstate.assert_golden(run, "relu-softmax-sgd-seed0")
"""
ORIGIN = "memstate: DIVERGED at step 0, input/x (values): the first origin"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: two ports (copies of impls/numpy), a test, and the project's goldens."""
    for name in ("my_port", "other_port"):
        shutil.copytree(IMPLS / "numpy", pytester.path / name)
    pytester.makeini(f"[pytest]\nmemstate_goldens = {GOLDEN_DIR}\n")
    pytester.makepyfile(test_port=USER_TEST)
    return pytester


def test_a_changed_constant_fails_with_its_origin_and_passing_again_once_restored(project):
    r = project.runpytest_subprocess("--memstate-impl", "my_port", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)  # numpy against the pure-Python goldens: agree or drift, no origin
    mlp = project.path / "my_port" / "mlp.py"
    good = mlp.read_text()
    assert "astype(dt) / 255" in good
    mlp.write_text(good.replace("astype(dt) / 255", "astype(dt) / 256"))  # one constant
    r = project.runpytest_subprocess("--memstate-impl", "my_port", "--junitxml", "junit.xml")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert ORIGIN in out
    assert "B's pixels are not bytes / 255; A's are" in out
    assert "FAILED test_port.py::test_port_matches_golden[my_port] - AssertionError" in out
    report = Path(next(line.split("report: ", 1)[1].strip() for line in r.stdout.lines if "report: " in line))
    assert report.suffix == ".html" and "DIVERGED at step 0, layer input, op x" in report.read_text()
    failure = ET.parse(project.path / "junit.xml").getroot().find(".//failure")
    assert failure is not None and ORIGIN in failure.get("message", "")
    mlp.write_text(good)
    project.runpytest_subprocess("--memstate-impl", "my_port").assert_outcomes(passed=1)


def test_memstate_impl_chooses_implementations(project):
    r = project.runpytest_subprocess("--collect-only", "-q")
    assert "test_port.py::test_port_matches_golden[my_port]" in r.stdout.str()
    assert "test_port.py::test_port_matches_golden[other_port]" in r.stdout.str()
    r = project.runpytest_subprocess("--collect-only", "-q", "--memstate-impl", "other_port")
    assert "[other_port]" in r.stdout.str() and "[my_port]" not in r.stdout.str()


def test_update_goldens_writes_them_and_later_runs_check_them(pytester: pytest.Pytester):
    shutil.copytree(IMPLS / "numpy", pytester.path / "port")
    pytester.makeini("[pytest]\nmemstate_goldens = golden\n")
    pytester.makepyfile(test_mine="""
        def test_mine(memstate):
            memstate.assert_golden(memstate.run("port", hidden=4, batch_size=2, steps=2, seed=7), "mine")
    """)
    r = pytester.runpytest_subprocess()
    r.assert_outcomes(failed=1)
    assert "no golden 'mine'" in r.stdout.str() and "--memstate-update-goldens" in r.stdout.str()
    pytester.runpytest_subprocess("--memstate-update-goldens").assert_outcomes(passed=1)
    golden = pytester.path / "golden" / "mine"
    assert (golden / "manifest.json").is_file() and (golden / "step-000001.safetensors").is_file()
    before = {p.name: p.read_bytes() for p in golden.iterdir()}
    pytester.runpytest_subprocess().assert_outcomes(passed=1)  # the same port agrees with its golden
    pytester.runpytest_subprocess("--memstate-update-goldens").assert_outcomes(passed=1)
    assert {p.name: p.read_bytes() for p in golden.iterdir()} == before  # rewriting gives the same bytes


def test_a_port_that_refuses_the_config_is_skipped_with_its_reason(project):
    """A port that runs batch 1 only, asked for batch 4: skipped with the port's words, never passed."""
    mlp = project.path / "my_port" / "mlp.py"
    mlp.write_text(mlp.read_text().replace("def run(job_dir, record):", "def run(job_dir, record):\n"
                                           "    return record.unsupported('batch_size must be 1')\n", 1))
    r = project.runpytest_subprocess("--memstate-impl", "my_port", "-rs")
    r.assert_outcomes(skipped=1)
    assert "memstate: numpy does not support this config: batch_size must be 1" in r.stdout.str()

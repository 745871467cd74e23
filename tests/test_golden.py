"""The goldens: reproducible byte for byte, and every implementation agrees with them (or drifts), no origin."""

from __future__ import annotations

import json
import platform
import shutil

import pytest
from conftest import IMPLS

from harness.golden import CASES, GOLDEN_DIR, INDEX, check_against_golden, differing_files, make_goldens, sha256

IMPLEMENTATIONS = ["pure_python", "numpy", "jax", "torch", "cpp"]


def test_goldens_reproduce_byte_for_byte(tmp_path):
    index = json.loads((GOLDEN_DIR / INDEX).read_text())
    made_with = index["producer"]["python"].rsplit(".", 1)[0]
    if made_with != platform.python_version().rsplit(".", 1)[0]:
        pytest.skip(f"the goldens were made with Python {made_with}; this is {platform.python_version()}")
    assert set(index["cases"]) == set(CASES)
    for name, case in index["cases"].items():  # the index describes the files as they are
        for file, digest in case["files"].items():
            assert sha256(GOLDEN_DIR / name / file) == digest, f"{name}/{file} changed since the index was written"
    fresh = make_goldens(tmp_path)
    assert differing_files(GOLDEN_DIR, tmp_path) == []
    assert fresh == index


def test_a_changed_golden_is_noticed(tmp_path):
    """The byte check above can fail: one flipped byte in a copy is found and named."""
    shutil.copytree(GOLDEN_DIR, tmp_path / "g")
    victim = tmp_path / "g" / "relu-softmax-sgd-seed0" / "step-000001.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    assert differing_files(GOLDEN_DIR, tmp_path / "g") == ["relu-softmax-sgd-seed0/step-000001.safetensors"]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_implementation_matches_the_goldens(impl, case, tmp_path):
    if impl == "cpp" and shutil.which("g++") is None:
        pytest.skip("g++ not found")
    check = check_against_golden(IMPLS / impl, case, tmp_path)
    c = check.comparison
    assert c.b.status == "complete", c.b.stop_summary
    assert not c.origins, f"{impl} on {case}: first origin at {c.first.where if c.first else None}"
    assert check, c.verdict
    if impl == "pure_python":  # the goldens' own producer: the same bits
        assert c.verdict == "agree" and all(r.max_abs == 0 for r in c.records)

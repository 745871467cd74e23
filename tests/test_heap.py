"""The comparator's heap (harness/compare/heap.py): blocks it frees are reused, not faulted in afresh."""

import subprocess
import sys

import pytest
from conftest import ROOT

ROUNDS = """
import resource
import numpy as np
from harness.compare.heap import keep_freed_memory
took = keep_freed_memory()
a = np.ones((1000, 800))  # (m, H) float64: 6.4 MB, a noise-model temporary at batch 1000, H=800
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(50):
    blocks = [a * (k + 1) for k in range(8)]  # a record's temporaries, made and freed
    del blocks
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again():
    """50 rounds of eight 6.4 MB blocks: kept, their pages are faulted in about once (one round is 12,500
    pages); with glibc's defaults the heap is trimmed and they are faulted in again (146,000 to 215,000 measured)."""
    r = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, cwd=ROOT, check=True)
    took, faults = r.stdout.split()
    if took != "True":
        pytest.skip("no glibc mallopt here")
    assert int(faults) < 1.5 * 8 * 6_400_000 / 4096, faults

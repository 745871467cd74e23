"""The comparator's heap: memory it frees is kept for the next step instead of handed back to the system.

The noise model makes float64 temporaries the size of a step's largest records (6.4 MB each at a batch of
1,000 and H=800), frees them, and makes the same again for the next record and the next step. glibc
hands the top of its heap back to the system once more than a few of them are free, and the next
allocation takes fresh pages, which the kernel must fault in and zero one by one (on a virtual machine,
often the host as well). Kept, they are reused as they are (docs/bisect.md has the figures;
benchmarks/bench_scale.py --only memstate measures them in one run). The cost is memory: up to
TRIM_THRESHOLD freed bytes stay with the process.

A process-wide setting, so only the harness's own processes make it (the compare and evaluate commands,
and this project's test workers); a library caller (the pytest plugin in a user's test session) keeps
the allocator its process has.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # blocks below this come from the heap (glibc's largest allowed value)
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept before any is handed back


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to MMAP_THRESHOLD in the heap and not to trim it below
    TRIM_THRESHOLD. True when it took both; False where there is no glibc (another C library, another
    system), which changes nothing but the speed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting either one ends glibc's own adjustment of it, which would otherwise
    # leave it at 128 KiB and map (and fault in) every large block afresh.
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1

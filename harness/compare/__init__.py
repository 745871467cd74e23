"""Two memstates, record by record: the streaming comparison and its result, bisect for long runs, and the
`python -m harness.compare` command."""

from harness.compare.comparison import Comparison
from harness.compare.stream import compare_memstates

__all__ = ["Comparison", "compare_memstates"]

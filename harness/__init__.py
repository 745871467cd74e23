"""memstate: find where two implementations of the 784-H-10 MNIST network part ways.

The packages follow the data: spec/ (what a run is) -> run/ (running implementations) -> store/
(memstates on disk) -> judge/ (one record's verdict) -> compare/ (two memstates, streamed) -> report/
(text and HTML). The modules at this level are the commands (`python -m harness.X`) and the pytest plugin.
"""

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from pathlib import Path

__version__ = "0.1.0"


def cache_root() -> Path:
    """memstate's cache on this machine (`$MEMSTATE_CACHE`, default ~/.cache/memstate): built ports, the
    comparator's compiled kernel."""
    return Path(os.environ.get("MEMSTATE_CACHE") or Path.home() / ".cache" / "memstate")

# Where the modules of the flat layout (before 0.2) live now: `from harness.memstate import Memstate` and the
# other documented imports keep working, and give the very same module objects as the new paths.
MOVED = {"config": "spec.config", "presets": "spec.presets", "records": "spec.records", "params": "spec.params",
         "data": "spec.data", "budget": "spec.budget", "job": "run.job", "capture": "run.capture",
         "runner": "run.runner", "processes": "run.processes", "outputs": "run.outputs", "memstate": "store.memstate",
         "manifest": "store.manifest", "jsonl": "store.jsonl", "legacy": "store.legacy", "metrics": "judge.metrics",
         "noise": "judge.noise", "comparator": "compare.stream", "bisect": "compare.bisect",
         "describe": "report.text"}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `harness.<old name>` and hands back the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, rest = fullname.partition(".")
        if prefix == __name__ and rest in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass  # already executed at its new place


sys.meta_path.append(_Moved())

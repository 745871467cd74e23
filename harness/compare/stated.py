"""What the command line states about a side beyond the config: its matmul precision (`--precision-b
tf32`). An implementation is asked for it through its own copy of the job (`"precision"` in job.json,
which an implementation that can honour it does, and declares in its memstate); a side that does not
declare it is judged as stated, and a side that declares otherwise is judged as stated, with a note."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from harness.run.job import Job
from harness.spec.precision import MATMUL
from harness.store.memstate import Memstate

MODES = tuple(MATMUL)


def job_with_precision(job: Job, directory: Path, matmul: str) -> Job:
    """A copy of `job` whose job.json asks for this matmul precision (the data files linked, not copied)."""
    directory.mkdir(parents=True)
    for f in job.dir.iterdir():
        if f.name != "job.json":
            try:
                os.link(f, directory / f.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copyfile(f, directory / f.name)
    meta = json.loads((job.dir / "job.json").read_text())
    meta["precision"] = {"matmul": matmul}
    (directory / "job.json").write_text(json.dumps(meta, indent=1))
    return dataclasses.replace(job, dir=directory.resolve())


def state_precision(ms: Memstate, label: str, matmul: str) -> str:
    """Hold `matmul` as the side's precision for this comparison (in memory; nothing is written) and say
    how it relates to what the side declared."""
    declared = ms.precision.matmul if ms.manifest.get("precision") else None
    ms.manifest["precision"] = {**(ms.manifest.get("precision") or {}), "matmul": matmul}
    if declared is None:
        return (f"{label} does not say what its matmuls computed in; judged as {matmul}, as --precision-"
                f"{label.lower()} says")
    if declared != matmul:
        return f"{label} declares {declared} matmuls, --precision-{label.lower()} says {matmul}: judged as {matmul}"
    return ""

"""What the command line states about a side beyond the config: its precision (`--precision-b tf32`,
`--precision-b bfloat16-storage`). An implementation is asked for it through its own copy of the job
(`"precision"` in job.json, which an implementation that can honour it does, and declares in its
memstate); a side that does not declare it is judged as stated, and one that declares otherwise is
judged as stated, with a note."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from harness.run.job import Job
from harness.spec.precision import MODES
from harness.store.memstate import Memstate


def job_with_precision(job: Job, directory: Path, mode: str) -> Job:
    """A copy of `job` whose job.json asks for this precision (the data files linked, not copied)."""
    directory.mkdir(parents=True)
    for f in job.dir.iterdir():
        if f.name != "job.json":
            try:
                os.link(f, directory / f.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copyfile(f, directory / f.name)
    meta = json.loads((job.dir / "job.json").read_text())
    meta["precision"] = MODES[mode]
    (directory / "job.json").write_text(json.dumps(meta, indent=1))
    return dataclasses.replace(job, dir=directory.resolve())


def state_precision(ms: Memstate, label: str, mode: str) -> str:
    """Hold `mode` as the side's precision for this comparison (in memory; nothing is written) and say
    how it relates to what the side declared."""
    declared = ms.precision.mode if ms.manifest.get("precision") else None
    ms.manifest["precision"] = dict(MODES[mode]) or None
    if declared is None:
        return f"{label} does not say what it computed in; judged as {mode}, as --precision-{label.lower()} says"
    if declared != mode:
        return f"{label} declares {declared}, --precision-{label.lower()} says {mode}: judged as {mode}"
    return ""

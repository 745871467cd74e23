"""What a side states beyond the config (a precision, a loss scale, records it does not compute), and what the
command line states about it: its precision (`--precision-b tf32`, `--precision-b bfloat16-storage`). An
implementation is asked for it through its own copy of the job (`"precision"` in job.json, which an
implementation that can honour it does, and declares in its memstate); a side that does not declare it is
judged as stated, and one that declares otherwise is judged as stated, with a note."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from harness.judge.noise import Z_SIGMA
from harness.run.job import Job
from harness.spec.config import Config
from harness.spec.precision import MODES
from harness.spec.records import LOAD, LOSS_SCALE, Step, graph, is_gradient, step_label
from harness.store.memstate import Memstate


def side_notes(label: str, ms: Memstate) -> list[str]:
    """What a side declared that changes how it is read: its precision, a loss scale, records it does not
    compute."""
    notes = [ms.precision.describe(label, Z_SIGMA)] if ms.precision.reduced else []
    scaled = next((u for u in ms.units if u != LOAD and LOSS_SCALE in ms.names(u)), None)
    if scaled is not None:
        notes.append(f"{label} scales its loss before the backward pass ({LOSS_SCALE}: {ms.loss_scale(scaled):g} "
                     f"at {step_label(scaled)}): its gradient records are read divided by each step's scale")
    if ms.missing:
        notes.append(f"{label} does not compute {', '.join(sorted(ms.missing))} (declared): not compared; each record "
                     f"{label} computes from one is judged against the op applied to {label}'s own recorded inputs, "
                     f"with the missing op's rounding added to its own")
    return notes


def origin_notes(cfg: Config | None, step: Step, name: str, sides: dict[str, Memstate],
                 values: tuple[np.ndarray, np.ndarray]) -> tuple[list[str], bool]:
    """What an origin owes to what a side declared: inputs it does not compute, a loss scale that overflowed
    (True: then the overflow is the reason, and no other diagnosis is sought)."""
    inputs = graph(cfg)[name].inputs if cfg is not None and step != LOAD and name in graph(cfg) else ()
    absent = ", ".join(f"{lab}'s {i}" for i in inputs for lab, ms in sides.items() if i in ms.missing)
    notes = [f"it reads {absent}, which that side does not compute: the difference may start there"] if absent else []
    overflow = overflow_note(sides, step, name, values)
    return notes + ([overflow] if overflow else []), bool(overflow)


def overflow_note(sides: dict[str, Memstate], step: Step, name: str, values: tuple[np.ndarray, np.ndarray]) -> str:
    """Why a side's gradient is inf or NaN where the other's is not, when that side scales its loss: the
    scaled gradient overflowed its format, and a loss scaler then skips the step's update."""
    for (label, ms), own, other in zip(sides.items(), values, values[::-1]):
        scale = ms.loss_scale(step) if is_gradient(name) and own.dtype.kind == "f" else None
        if scale is not None and not np.isfinite(own).all() and (other.dtype.kind != "f" or np.isfinite(other).all()):
            return (f"{label}'s gradient times its loss scale ({scale:g}) overflows {ms.precision.storage} here: a "
                    f"loss scaler skips this step's update and lowers its scale, which the other side never does, "
                    f"so what follows differs for that reason")
    return ""


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

"""The job directory every implementation receives: config, parameters and batches as data.

    job.json     config and the names and shapes of the files below
    params.json  initial parameters (memstate-params/1)
    images.u8    raw bytes, (steps, batch_size, 784) row-major: step, sample, pixel
    labels.u8    raw bytes, (steps, batch_size): the class index of each sample
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .data import Mnist, batch_schedule
from .errors import InputError
from .params import Params

FORMAT = "memstate-job/1"


@dataclass(frozen=True)
class Job:
    """A prepared job directory and what went into it."""

    dir: Path
    config: Config
    params_sha256: str
    data_source: str


def prepare_job(directory: str | Path, config: Config, params: Params, mnist: Mnist) -> Job:
    """Write the job files; every implementation run on this job sees exactly the same inputs."""
    directory = Path(directory).resolve()  # implementations run in their own directory
    if params.hidden != config.hidden:
        raise InputError(f"parameters have H={params.hidden} but the config says hidden={config.hidden}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        index = batch_schedule(len(mnist.train_images), config.batch_size, config.steps, config.seed)  # (S, m)
        images = mnist.train_images.reshape(-1, 784)[index]  # (S, m, 784) uint8
        labels = mnist.train_labels[index]  # (S, m) uint8
        (directory / "images.u8").write_bytes(images.tobytes())
        (directory / "labels.u8").write_bytes(labels.tobytes())
        sha = params.write(directory / "params.json")
        meta = {
            "format": FORMAT,
            "config": config.to_dict(),
            "params": "params.json",
            "params_sha256": sha,
            "images": "images.u8",
            "labels": "labels.u8",
            "steps": config.steps,
            "batch_size": config.batch_size,
            "pixels": 784,
            "data": mnist.source,
        }
        (directory / "job.json").write_text(json.dumps(meta, indent=1))
    except OSError as e:
        raise InputError(f"{directory}: cannot write the job files: {e.strerror}") from None
    return Job(directory, config, sha, mnist.source)

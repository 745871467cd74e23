"""The job directory every implementation receives: config, parameters and batches as data.

    job.json     config and the names and shapes of the files below
    params.json  initial parameters (memstate-params/1)
    images.u8    raw bytes, (steps, batch_size, pixels) row-major: step, sample, pixel (784 pixels for MNIST)
    labels.u8    raw bytes, (steps, batch_size): the class index of each sample
    mask1.u8, ...  (dropout only) raw bytes, (steps, batch_size, width) per hidden layer with dropout: 1 keeps
                 a unit, 0 drops it; job.json's "dropout" lists them: layer, p and file
    velocity.json  (a replay of a momentum run only) the velocities the first step starts from
    adam_m.json, adam_v.json  (a replay of an Adam run only) the moments the first step starts from

An *indexed* job (harness.train: a long run, or a full batch of 60,000) holds the training images once
instead: pool_images.u8 (n, pixels), pool_labels.u8 (n,) and batches.u32 (steps, batch_size), the
little-endian uint32 pool index of each sample of each step.

A replay (harness.compare.bisect) starts at `first_step` from a checkpoint: params.json then holds the
parameters after step first_step - 1, and the batch files hold steps first_step onwards only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.spec.budget import check_job_fits
from harness.run.capture import Capture
from harness.spec.config import Config, widths_text
from harness.spec.data import Mnist, batch_schedule, dropout_masks
from harness.errors import InputError
from harness.spec.params import Params, load_params
from harness.spec.network import network
from harness.store.format import write_file

FORMAT = "memstate-job/1"


@dataclass(frozen=True)
class Job:
    """A prepared job directory and what went into it."""

    dir: Path
    config: Config
    params_sha256: str
    data_source: str
    capture: Capture = field(default_factory=Capture)
    first_step: int = 0
    steps: int = 0  # batches in the job: config.steps, or fewer for a replay

    def manifest_facts(self) -> dict[str, object]:
        """What a memstate's manifest says about how it was captured and where it starts."""
        facts: dict[str, object] = {}
        if self.capture != Capture():
            facts["capture"] = self.capture.to_dict()
        if self.first_step or (self.steps and self.steps != self.config.steps):  # a window of the run
            facts["replay"] = {"first_step": self.first_step, "steps": self.steps}
        return facts


STATE_FILES = ("velocity", "adam_m", "adam_v")  # optimizer buffers a replay starts from, one params file each


def replay_buffers(job_dir: Path) -> list[tuple[str, np.ndarray]]:
    """A replay's starting optimizer buffers as load-unit records (hidden/weight_velocity, ...) in the
    job's dtype: they belong to its load unit, as its parameters do, whatever wrote the memstate."""
    meta = json.loads((Path(job_dir) / "job.json").read_text())
    dtype = np.dtype(meta["config"]["dtype"])
    names = network(Config.from_dict(meta["config"])).parameters
    out = []
    for kind in STATE_FILES:
        if meta.get(kind):
            saved = load_params(Path(job_dir) / meta[kind])
            out.extend((f"{name}_{kind}", value.astype(dtype)) for name, value in zip(names, saved.arrays()))
    return out


def resolve(config: Config, mnist: Mnist) -> Config:
    """The config with what the data decides filled in: `inputs`, the pixels per image, and `epoch_steps`
    where the learning rate decays per epoch. A config whose `inputs` is not the data's is refused."""
    if config.inputs and config.inputs != mnist.pixels:
        raise InputError(f"config field 'inputs': {config.inputs} pixels per image, but the images of "
                         f"{mnist.source} have {mnist.pixels}")
    config = config.replace(inputs=mnist.pixels)
    if config.lr_decay != 1.0 and not config.epoch_steps:
        return config.replace(epoch_steps=max(1, train_count(config, mnist) // config.batch_size))
    return config


def train_count(config: Config, mnist: Mnist) -> int:
    """How many training images the run draws its batches from: the first `train_images`, or all."""
    n = len(mnist.train_images)
    return min(config.train_images, n) if config.train_images else n


def prepare_job(directory: str | Path, config: Config, params: Params, mnist: Mnist, capture: Capture | None = None,
                first_step: int = 0, last_step: int | None = None, state: dict[str, Params] | None = None,
                indexed: bool = False) -> Job:
    """Write the job files; every implementation run on this job sees exactly the same inputs. With
    `first_step` (and `last_step`), only those steps of config's batch schedule: a replay starting
    from `params` (and the optimizer buffers in `state`: velocity, adam_m, adam_v), the state after
    step first_step - 1. `indexed` writes the training images once and each batch as indices."""
    capture = capture or Capture()
    config = resolve(config, mnist)
    last = config.steps - 1 if last_step is None else last_step
    if not 0 <= first_step <= last < config.steps:
        raise InputError(f"replay steps {first_step}..{last} are not within the run's {config.steps} steps")
    directory = Path(directory).resolve()  # implementations run in their own directory
    if params.W1.shape[1] != config.inputs:
        raise InputError(f"parameters have W1 of {params.W1.shape[1]} columns but the images of {mnist.source} "
                         f"have {config.inputs} pixels")
    if params.widths != config.widths:
        raise InputError(f"parameters have hidden widths {widths_text(params.widths)} but the config says "
                         f"{widths_text(config.widths)}")
    n_train = train_count(config, mnist)
    check_job_fits(config, directory, last + 1, indexed, n_train)  # before the schedule is allocated
    try:
        directory.mkdir(parents=True, exist_ok=True)
        index = batch_schedule(n_train, config.batch_size, config.steps, config.seed)  # (S, m)
        index = index[first_step:last + 1]
        extra: dict[str, object] = {}
        if indexed:
            pool = {"pool_images": mnist.train_images[:n_train].reshape(n_train, -1), "pool_labels":
                    mnist.train_labels[:n_train], "batches": index.astype("<u4")}
            for key, array in pool.items():
                name = f"{key}.{'u32' if key == 'batches' else 'u8'}"
                _write_array(directory / name, array)
                extra[key] = name
            extra["pool_size"] = n_train
        else:
            images = mnist.train_images.reshape(len(mnist.train_images), -1)[index]  # (S, m, pixels) uint8
            labels = mnist.train_labels[index]  # (S, m) uint8
            _write_array(directory / "images.u8", images)
            _write_array(directory / "labels.u8", labels)
            extra.update(images="images.u8", labels="labels.u8")
        extra.update(_write_masks(directory, config, first_step, last))
        sha = params.write(directory / "params.json")
        if first_step or last_step is not None:
            extra["first_step"] = first_step
        for kind, buffers in (state or {}).items():
            if kind not in STATE_FILES:
                raise ValueError(f"unknown optimizer state {kind!r}")
            buffers.write(directory / f"{kind}.json")
            extra[kind] = f"{kind}.json"
        if capture != Capture():
            extra["capture"] = capture.to_dict()
        meta = {
            "format": FORMAT,
            "config": config.to_dict(),
            "params": "params.json",
            "params_sha256": sha,
            "steps": len(index),
            "batch_size": config.batch_size,
            "pixels": config.inputs,
            "widths": list(config.widths),
            "data": mnist.source,
            **extra,
        }
        (directory / "job.json").write_text(json.dumps(meta, indent=1))
    except OSError as e:
        raise InputError(f"{directory}: cannot write the job files: {e.strerror}") from None
    return Job(directory, config, sha, mnist.source, capture, first_step, len(index))


def _write_array(path: Path, array: np.ndarray) -> None:
    """The array's bytes in C order, a MiB a write (format.write_all), without a copy of them first."""
    write_file(path, [memoryview(np.ascontiguousarray(array))])


def _write_masks(directory: Path, config: Config, first: int, last: int) -> dict[str, object]:
    """One keep-mask file per hidden layer with dropout, for steps first..last; job.json's "dropout" entry."""
    entries = []
    for layer in network(config).hidden:
        if layer.drop:
            name = f"mask{layer.index}.u8"
            masks = dropout_masks(config.seed, layer.index, layer.width, config.batch_size, layer.drop, first, last)
            _write_array(directory / name, masks)
            entries.append({"layer": layer.index, "name": layer.name, "p": layer.drop, "file": name,
                            "shape": list(masks.shape)})
    return {"dropout": entries} if entries else {}

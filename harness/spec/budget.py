"""What a config costs in memory and disk, checked against this machine before anything is allocated.

`--hidden 10000000` or `--steps 100000000` would otherwise end in a MemoryError traceback (or a
full disk hours later). The estimates are lower bounds of what the harness itself must hold (the
parameters as float64 and as JSON text, the batch schedule, the job's batch files); a config whose
lower bound does not fit is refused with the figure and what the machine has.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.spec.config import Config, widths_text
from harness.errors import InputError

CLASSES = 10
JSON_BYTES = 26  # a float32 printed with 9 significant digits, sign, exponent and separator


def parameter_count(config: Config) -> int:
    sizes = (config.input_width, *config.widths, CLASSES)
    return sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(len(sizes) - 1))


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or the physical memory where /proc says nothing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_parameters_fit(config: Config) -> None:
    """The initial parameters (float64 and their JSON text) fit in memory."""
    need = parameter_count(config) * (8 + 8 + JSON_BYTES)
    have = available_memory()
    if need > have:
        widths = f"layers={widths_text(config.layers)} make" if config.layers else f"hidden={config.hidden} makes"
        raise InputError(f"config: {widths} {parameter_count(config):,} parameters, which need "
                         f"about {_gb(need)} of memory to make and write; this machine has {_gb(have)} available")


def check_job_fits(config: Config, directory: Path, steps: int, indexed: bool, pool: int) -> None:
    """The batch schedule fits in memory and the job's batch files (and dropout masks) on the disk under
    `directory`."""
    cells = steps * config.batch_size
    masks = cells * sum(w for k, w in enumerate(config.widths) if config.drop(k))  # one byte a unit and sample
    pixels = config.input_width
    memory = cells * 8 + (0 if indexed else cells * (pixels + 1) * 2)  # indices, then images+labels and a copy
    disk = (cells * 4 + pool * (pixels + 1) if indexed else cells * (pixels + 1)) + masks
    have = available_memory()
    if memory > have:
        raise InputError(f"config: {steps:,} steps of batch {config.batch_size} need about {_gb(memory)} of memory "
                         f"for the batches; this machine has {_gb(have)} available")
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if disk > free:
        raise InputError(f"config: {steps:,} steps of batch {config.batch_size} need about {_gb(disk)} of job files "
                         f"in {directory}; its disk has {_gb(free)} free")

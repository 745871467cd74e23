"""Reading a memstate: the manifest checked field by field, each step file memory-mapped (no pickle, no
copies) and checked before a byte of it is used, and what a run that stopped or contradicts itself holds.
The layout is in format.py, the writer in writer.py.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DuplicateKey, InputError, loads, read_json, regular_file
from harness.run.capture import FULL, SUMMARY_FIELDS, Capture
from harness.spec.config import Config, widths_text
from harness.spec.network import network
from harness.spec.precision import Precision
from harness.spec.records import LOAD, LOSS_SCALE, Step, is_gradient, parameter_size, step_label
from harness.store.manifest import check_manifest, expected_steps

from harness.store.format import FORMAT, MANIFEST, MAX_DIMS, MAX_HEADER, ST_DTYPES, SUMMARIES, SUMMARY_NAMES, unit_file
from harness.store.writer import MemstateWriter  # noqa: F401 - harness.store.memstate.MemstateWriter, as documented
@dataclass
class Unit:
    """One safetensors file: its header read and checked when opened, its data memory-mapped on
    first use (opening a 5,000-step memstate reads headers only). Records in written order."""

    path: Path
    size: int = 0
    # name -> (dtype, shape, first byte, end byte) in the file
    entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = field(default_factory=dict)
    _arrays: dict[str, np.ndarray] | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            # a plain ndarray over the map: every view and result of a np.memmap is a memmap too, whose Python
            # __array_finalize__ was the largest single cost of a small comparison (11%)
            raw = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray) if self.size else np.zeros(0, np.uint8)
            if raw.size < self.size:
                raise InputError(f"{self.path}: shrank to {raw.size} bytes after it was opened ({self.size})")
            self._arrays = {n: raw[a:b].view(dt).reshape(sh) for n, (dt, sh, a, b) in self.entries.items()}
        return self._arrays

    @classmethod
    def open(cls, path: Path, step: Step | None = None) -> Unit:
        """Read and check one step file's header: every entry's dtype, shape and offsets, no two entries
        sharing bytes, no key twice, and (given `step`) the header's own step matching the file name."""
        size = regular_file(path, "a step file")
        try:
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise InputError(f"{path}: truncated: {size} bytes, no safetensors header")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8:
                    raise InputError(f"{path}: truncated: header says {n} bytes, file has {size - 8} after it")
                if n > MAX_HEADER:
                    raise InputError(f"{path}: safetensors header of {n} bytes, more than the {MAX_HEADER} allowed")
                header = loads(f.read(n))
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        except DuplicateKey as e:
            raise InputError(f"{path}: safetensors header is not valid: {e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: safetensors header is not valid JSON: {e}") from None
        except RecursionError:
            raise InputError(f"{path}: safetensors header nests too deeply to read") from None
        if not isinstance(header, dict):
            raise InputError(f"{path}: safetensors header is not an object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise InputError(f"{path}: safetensors field '__metadata__' must be an object of strings, got "
                             f"{str(meta)[:60]}")
        order = _order(path, meta.get("order"))
        if step is not None and "step" in meta and meta["step"] != str(step):
            raise InputError(f"{path}: header says step {meta['step']!r:.40}, the file name says {step}")
        names = [o for o in order if o in header] + sorted(set(header) - set(order))
        base = 8 + n
        unit = cls(path, size if size > base else 0)
        for name in names:
            info = header[name]
            try:
                if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
                    raise ValueError
                dtype = np.dtype(ST_DTYPES[info["dtype"]])
                if not isinstance(info["shape"], list) or len(info["shape"]) > MAX_DIMS \
                        or not all(isinstance(d, int) and not isinstance(d, bool) for d in info["shape"]):
                    raise ValueError
                shape = tuple(info["shape"])
                offsets = info["data_offsets"]
                if not isinstance(offsets, list) or len(offsets) != 2 \
                        or not all(isinstance(x, int) and not isinstance(x, bool) for x in offsets):
                    raise ValueError
                begin, end = offsets
                if any(d < 0 or d >= 2**62 for d in shape) or not 0 <= begin <= end \
                        or math.prod(d for d in shape if d) * dtype.itemsize >= 2**62:  # too large for numpy
                    raise ValueError
            except (KeyError, TypeError, ValueError, OverflowError):
                raise InputError(f"{path}: record {name!r}: bad entry {str(info)[:120]} (expected dtype one of "
                                 f"{', '.join(ST_DTYPES)}, a shape of at most {MAX_DIMS} non-negative integers, "
                                 f"data_offsets [begin, end])") from None
            need = math.prod(shape) * dtype.itemsize  # Python ints: a hostile shape cannot wrap around
            if end - begin != need or base + end > size:
                raise InputError(f"{path}: record {name!r}: data offsets {begin}..{end} do not hold shape "
                                 f"{list(shape)} of {dtype.name} ({need} bytes) in a {size}-byte file (truncated?)")
            unit.entries[name] = (dtype, shape, base + begin, base + end)
        spans = sorted((a, b, name) for name, (_, _, a, b) in unit.entries.items() if b > a)
        for (_, end1, n1), (begin2, _, n2) in zip(spans, spans[1:]):
            if begin2 < end1:
                raise InputError(f"{path}: records {n1!r} and {n2!r} share bytes (their data offsets overlap); "
                                 f"each record needs its own")
        return unit


def _order(path: Path, text: Any) -> list[str]:
    """The header's written order of records: a JSON list of distinct names."""
    if text is None:
        return []
    try:
        order = loads(text)
    except (ValueError, TypeError, RecursionError):
        order = None
    if not isinstance(order, list) or not all(isinstance(o, str) for o in order) or len(set(order)) != len(order):
        raise InputError(f"{path}: safetensors metadata 'order' must be a JSON list of distinct record names, "
                         f"got {str(text)[:60]}")
    return order


def _span(steps: range) -> str:
    return f"{steps.start}..{steps.stop - 1}" if steps.stop > steps.start else "none"  # len() overflows past 2^63


def _kept_steps(capture: Capture, steps: range) -> Iterator[int]:
    """The steps of `steps` of which `capture` keeps a unit, in order, without visiting the others (a
    summary run of 10^9 steps with a checkpoint every 100 is not walked step by step)."""
    if capture.mode == FULL:
        yield from steps
        return
    kept: set[int] = set()
    for lo, hi in capture.full_steps:
        kept.update(range(max(lo, steps.start), min(hi + 1, steps.stop)))
        if len(kept) > 10**6:
            break
    k = capture.checkpoint_every
    if k:
        first = steps.start + (k - 1 - steps.start) % k
        kept.update(range(first, steps.stop, k)[:10**6])
    yield from sorted(kept)


class Memstate:
    """A memstate directory opened for reading: every step's header is read and checked at once, its data
    memory-mapped when first asked for."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise InputError(f"{self.dir}: not a memstate (no {MANIFEST})")
        self.manifest: dict[str, Any] = read_json(path, "memstate manifest")
        self.cfg: Config | None = check_manifest(path, self.manifest, FORMAT)
        self.expected: range | None = expected_steps(self.manifest, self.cfg)  # the steps its config asks for
        on_disk = self._units_on_disk()
        units = self.manifest.get("units")
        if units is None:  # never closed (the writer was killed): the finished step files are the truth
            units = on_disk
        elif not isinstance(units, list) or any(u != LOAD and (not isinstance(u, int) or isinstance(u, bool) or u < 0)
                                                for u in units):
            raise InputError(f"{path}: field 'units' must list 'load' and non-negative step numbers")
        if len(set(units)) != len(units) or [u for u in units if u != LOAD] != sorted(u for u in units if u != LOAD):
            raise InputError(f"{path}: field 'units' must list each unit once, in step order")
        self.unlisted: list[Step] = [u for u in on_disk if u not in units]  # files the manifest does not name
        self.damaged: str | None = None  # what is wrong with the first unreadable unit; units stop before it
        self._open: dict[Step, Unit] = {}
        self.units: list[Step] = []
        for u in units:  # every header is read now, so a damaged file ends the memstate where it is
            try:
                if self.expected is not None and u != LOAD and u not in self.expected:
                    raise InputError(f"{path}: holds {step_label(u)}, but its config asks for steps "
                                     f"{_span(self.expected)}")
                if u not in on_disk:
                    raise InputError(f"{path}: lists {step_label(u)} but {unit_file(u)} is missing")
                self._open[u] = Unit.open(self.dir / unit_file(u), None if u == LOAD else u)
            except InputError as e:
                self.damaged = str(e)
                break
            self.units.append(u)
        if self.damaged is None:  # a converter found the source contradicting itself (lines past its end)
            self.damaged = self.manifest.get("damaged")
        if self.damaged is None and self.manifest.get("status") == "complete":
            self.damaged = self._contradiction(Path(self.manifest.get("converted_from") or path))

    def _contradiction(self, path: Path) -> str | None:
        """Where a memstate that says `complete` contradicts its own config: a step (or the load unit) it
        should hold and does not, or loaded parameters of another size than the config's. None if none."""
        if self.cfg is None or self.expected is None:
            return None
        if LOAD not in self.units:
            return f"{path}: says complete, but holds no load unit (the parameters as loaded)"
        for name in network(self.cfg).parameters:
            entry = self._open[LOAD].entries.get(name)
            if entry is not None and math.prod(entry[1]) != parameter_size(name, self.cfg):
                return (f"{path}: its config says hidden widths {widths_text(self.cfg.widths)}, but load {name} has "
                        f"shape {list(entry[1])}: the config is not the one that ran")
        capture = Capture.from_dict(self.manifest.get("capture"))
        held = {u for u in self.units if u != LOAD}
        for step in _kept_steps(capture, self.expected):
            if step not in held:
                n = len([s for s in held if s < step])
                return (f"{path}: says complete, but its config asks for steps {_span(self.expected)} and "
                        f"{step_label(step)} is missing ({n} step(s) before it are held)")
        return None

    def _units_on_disk(self) -> list[Step]:
        steps = sorted(int(m.group(1)) for f in self.dir.glob("step-*.safetensors")
                       if (m := re.fullmatch(r"step-(\d+)\.safetensors", f.name)))
        return ([LOAD] if (self.dir / unit_file(LOAD)).is_file() else []) + steps

    @property
    def status(self) -> str:
        """complete, stopped, interrupted, unsupported (refused its config), running (never closed), or damaged
        (a unit cannot be read)."""
        return "damaged" if self.damaged else str(self.manifest.get("status", "unknown"))

    @property
    def name(self) -> str:
        return str(self.manifest.get("implementation", {}).get("name", self.dir.name))

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    def unit(self, step: Step) -> dict[str, np.ndarray]:
        """The records of one step, name -> array (memory-mapped), in written order."""
        return self._open[step].arrays if step in self.units else {}

    def names(self, step: Step) -> list[str]:
        """The record names of one step in written order, without mapping its data."""
        return list(self._open[step].entries) if step in self.units else []

    def get(self, step: Step, name: str) -> np.ndarray | None:
        """A record as the spec defines it: a gradient of a step whose loss was scaled (LOSS_SCALE) is read
        divided by that step's scale, exactly so for a power of two."""
        value = self.unit(step).get(name)
        if value is None or step == LOAD or not is_gradient(name) or value.dtype.kind != "f":
            return value
        scale = self.loss_scale(step)
        return value if scale is None else (value / value.dtype.type(scale)).astype(value.dtype)

    def loss_scale(self, step: Step) -> float | None:
        """The factor this step's loss was multiplied by before its backward pass (LOSS_SCALE), checked: one
        positive finite number; None where the step records none."""
        scale = self.unit(step).get(LOSS_SCALE) if step != LOAD else None
        if scale is None:
            return None
        s = float(scale.reshape(-1)[0]) if scale.size == 1 and scale.dtype.kind in "fiu" else float("nan")
        if not (math.isfinite(s) and s > 0):
            raise InputError(f"{self.dir / unit_file(step)}: record {LOSS_SCALE} must hold one positive finite "
                             f"number (the factor the loss was multiplied by), got {scale.dtype} {scale.shape} "
                             f"{str(scale.reshape(-1)[:3].tolist())[:40]}")
        return s

    def release(self, step: Step) -> None:
        """Unmap one step's data (it is mapped again if asked for): a streaming reader's memory stays
        bounded by the steps it is looking at, not by the memstate."""
        if step in self._open:
            self._open[step]._arrays = None

    @property
    def missing(self) -> frozenset[str]:
        """The records this side declared it does not compute (checked against its config when opened)."""
        return frozenset(self.manifest.get("missing", []))

    @property
    def precision(self) -> Precision:
        """What this side computed its matmuls in (checked when opened); float32 where it does not say."""
        return Precision.of(self.manifest.get("precision"))

    @property
    def first_step(self) -> int:
        """The first step a replay ran (its load unit holds the state before it); 0 for a whole run."""
        return int((self.manifest.get("replay") or {}).get("first_step", 0))

    def summary_table(self) -> tuple[list[str], np.ndarray] | None:
        """A summary-mode run's summaries: (record names, rows (k, len(SUMMARY_FIELDS)) float64 with
        the name's index in column 1); None when it kept none. A row cut short by a crash is dropped."""
        path, names_path = self.dir / SUMMARIES, self.dir / SUMMARY_NAMES
        if not path.is_file():
            return None
        try:
            names = names_path.read_text(encoding="utf-8").splitlines() if names_path.is_file() else []
            raw = path.read_bytes()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read the summaries: {e}") from None
        width = len(SUMMARY_FIELDS) * 8
        rows = np.frombuffer(raw[:len(raw) - len(raw) % width], dtype="<f8").reshape(-1, len(SUMMARY_FIELDS))
        ids = rows[:, 1]
        if rows.size and (not np.all((ids >= 0) & (ids < len(names)) & (ids == np.round(ids)))
                          or not np.all(rows[:, 0] >= 0)):
            raise InputError(f"{path}: rows name records {names_path.name} does not list, or negative steps")
        return names, rows

    def stop_summary(self) -> str:
        """One line on how the run ended, for reports."""
        if self.status == "complete":
            return "complete"
        s = self.manifest.get("stopped") or {}
        last = self.units[-1] if self.units else None
        where = f"after {step_label(last)}" if last is not None else "before writing anything"
        if self.damaged:
            return f"damaged {'after ' + step_label(last) if last is not None else 'from the start'}: {self.damaged}"
        if self.status == "running":
            return f"never closed {where} (the writer was killed, or could not write its manifest)"
        err = s.get("error") or "no error message"
        if self.status == "unsupported":
            return f"does not support this config: {err}"
        return f"{self.status} {where}: {err}"

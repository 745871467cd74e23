"""Writing a memstate, one record at a time (`record(step, name, value)`, what an implementation is
handed): a step's records are gathered and, when the next step begins, handed to a writer thread that
writes them as one safetensors file while the next step computes (store/background.py); summaries and
checkpoints as its capture mode says, and the manifest at start and close."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harness.errors import InputError
from harness.run.capture import FULL, SUMMARY_FIELDS, Capture, Plan, summarize
from harness.spec.config import Config
from harness.spec.precision import check_precision
from harness.spec.records import LOAD, LOSS_SCALE, Step, check_missing, is_gradient, is_state, step_label
from harness.store.background import BackgroundWriter

from harness.store.format import FORMAT, MANIFEST, RECORD_DTYPES, SUMMARIES, SUMMARY_NAMES, WriteError, _RECORD_NP, _write_then_rename, now, step_file, unit_file, write_atomic

_LITTLE = sys.byteorder == "little"


class _Kind(NamedTuple):
    """What the writer needs to know of a record name, worked out once a run."""

    state: bool  # a parameter or optimizer buffer (is_state)
    gradient: bool  # a gradient of the loss (is_gradient): summarised unscaled
    missing: bool  # declared missing: never recorded


class MemstateWriter:
    """Builds a memstate one record at a time; each step is handed to the writer thread when the next begins
    (`overlap=False`: written there and then, on the recording thread).

    `manifest` holds what the caller knows up front (implementation, config, params
    checksum); `close()` adds how the run ended.
    """

    def __init__(self, directory: str | Path, manifest: dict[str, Any], overlap: bool = True):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.dir}: cannot create memstate directory: {e.strerror}") from None
        if any(self.dir.iterdir()):
            raise InputError(f"{self.dir}: memstate directory is not empty; refusing to overwrite")
        self.manifest = {"format": FORMAT, **manifest, "status": "running", "created": now()}
        self.manifest.setdefault("runtime", {})
        self.capture = Capture.from_dict(self.manifest.get("capture"), source="memstate manifest field 'capture'")
        self._background = BackgroundWriter(threaded=overlap)  # overlap=False: each step written as it ends
        self._step: Step | None = None
        self._plan = Plan(True, True, False)  # capture.plan(self._step)
        self._kinds: dict[str, _Kind] = {}  # name -> _kind(name)
        self._entries: list[tuple[str, np.dtype, tuple[int, ...], memoryview]] = []  # the step's kept records
        self._names: set[str] = set()  # the current step's record names
        self._rows: list[list[float]] = []  # the current step's summary rows
        self._summary_ids: dict[str, int] = {}
        self._summary_file: Any = None
        self.unsupported_reason: str | None = None  # set by unsupported(): the run refuses its config
        self._failure_raised = False
        self._scale = 0.0  # the current step's loss scale, if it records one (0: none)
        self._write_manifest()

    def describe(self, device: str | None = None, **versions: str) -> None:
        """Runtime facts from the implementation: its device and library versions."""
        if device is not None:
            self.manifest["runtime"]["device"] = str(device)
        self.manifest["runtime"].setdefault("versions", {}).update({k: str(v) for k, v in versions.items()})

    def missing(self, *names: str) -> None:
        """Declare records this implementation does not compute (a fused matmul and bias, no loss): the
        comparator judges their consumers from this side's own inputs instead (docs/protocol.md)."""
        declared = list(dict.fromkeys([*self.manifest.get("missing", []), *names]))
        config = self.manifest.get("config")
        wrong = check_missing(Config.from_dict(config) if config else None, declared)
        if wrong:
            raise ValueError(f"missing: {wrong}")
        self.manifest["missing"] = declared
        self._kinds.clear()  # _kind() reads the declared names
        self._write_manifest()

    def precision(self, **fields: str) -> None:
        """What this run computed in beyond its dtype: `matmul="tf32"` (or "bfloat16", "float16"): matmul
        operands rounded to that precision, accumulated in float32 (docs/protocol.md)."""
        value = {**(self.manifest.get("precision") or {}), **fields}
        wrong = check_precision(value)
        if wrong:
            raise ValueError(f"precision {wrong}")
        self.manifest["precision"] = value
        self._write_manifest()

    def unsupported(self, reason: str) -> None:
        """Refuse the job's config (batch 1 only, no Adam, ...): the run ends as `unsupported`, said as such
        in the comparison rather than as a crash. Return after calling it."""
        self.unsupported_reason = str(reason) or "no reason given"

    def __call__(self, step: Step, name: str, value: Any, dtype: str | None = None) -> None:
        """Record `value` as `name` of `step` ("load" or an int). dtype casts, e.g. lists to float32."""
        if step.__class__ is not int or step < 0:  # the common case, a plain int, checked in one comparison
            if step != LOAD and (not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0):
                raise ValueError(f"record {name!r}: step must be 'load' or a non-negative integer, got {step!r}")
            step = step if step == LOAD else int(step)
        if step != self._step:
            self._begin(name, step)
        if name.__class__ is not str or not name or name in self._names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{step_label(step)}: record name must be a non-empty string, got {name!r}")
            if name in self._names:
                raise ValueError(f"{step_label(step)}: record {name!r} written twice")
        kind = self._kinds.get(name) or self._kind(name)
        if kind.missing and step != LOAD:
            raise ValueError(f"{step_label(step)}: record {name!r} was declared missing (not computed); a run "
                             f"must not both declare and record it")
        array = np.asarray(value, dtype=dtype)  # no copy yet: a kept record is copied once, into its own buffer
        native = array.dtype if array.dtype.byteorder != ">" else array.dtype.newbyteorder("=")
        if native not in _RECORD_NP:
            raise ValueError(f"{step_label(step)}: record {name!r} has dtype {array.dtype}, "
                             f"expected one of {', '.join(RECORD_DTYPES)}")
        self._names.add(name)
        if name == LOSS_SCALE and array.size == 1 and array.dtype.kind == "f":
            self._scale = float(array.reshape(-1)[0])  # this step's gradients are of the loss times it
        keep, summarized = self._plan.decide(name, kind.state)
        if summarized:  # summarised as the comparator reads it: a gradient of the unscaled loss
            scaled = kind.gradient and self._scale > 0 and array.dtype.kind == "f"
            seen = array / array.dtype.type(self._scale) if scaled else array
            self._rows.append([float(step), float(self._summary_id(name)), *summarize(seen)])
        if not keep:
            return
        # a copy of its own (the implementation may change the array once the call returns), little-endian, C order
        copy = array.copy() if _LITTLE and native is array.dtype else array.astype(native.newbyteorder("<"))
        blob = memoryview(copy.reshape(-1)).cast("B") if copy.size else memoryview(b"")  # no cast of a 0 in a shape
        self._entries.append((name, native, array.shape, blob))

    def _begin(self, name: str, step: Step) -> None:
        """Hand the step before to the writer thread and start `step`, which must come after it."""
        self.flush()
        last = self._step
        if last is not None and (step == LOAD or (last != LOAD and step < last)):
            raise ValueError(f"record {name!r}: {step_label(step)} comes after {step_label(last)}; "
                             f"steps must be written in order, each once")
        self._step, self._plan = step, self.capture.plan(step)

    def _kind(self, name: str) -> _Kind:
        kind = self._kinds[name] = _Kind(is_state(name), is_gradient(name), name in self.manifest.get("missing", ()))
        return kind

    def _summary_id(self, name: str) -> int:
        """The row id of a record name; a new name is appended to summaries.names before any row uses it."""
        i = self._summary_ids.get(name)
        if i is None:
            i = self._summary_ids[name] = len(self._summary_ids)
            with open(self.dir / SUMMARY_NAMES, "a", encoding="utf-8") as f:
                f.write(name + "\n")
        return i

    def flush(self) -> None:
        """Hand the current step to the writer thread, which writes its unit atomically; raises the first
        write that failed (a full disk), naming its file, once. The manifest is written only at the start
        and at close(); a reader of a run that never closed finds its steps from the files."""
        if self._step is None or not self._names:
            return
        self._raise_failure()
        if self._rows and not self._failure_raised:  # a step's summary rows: one small append, written here
            try:
                if self._summary_file is None:
                    self._summary_file = open(self.dir / SUMMARIES, "ab")  # noqa: SIM115 - open until close()
                self._summary_file.write(np.asarray(self._rows, dtype="<f8").tobytes())
                self._summary_file.flush()
            except OSError as e:
                self._clear()  # this step is lost; close() must not try it again
                self._failure_raised = True
                raise WriteError(e.errno, e.strerror, str(self.dir / SUMMARIES)) from None
        if self._entries and self._background.failure is None:  # the unit, on the writer thread
            path = self.dir / unit_file(self._step)
            parts = step_file(self._step, self._entries)  # the step's own copies
            self._background.put(self._step, str(path), lambda: _write_then_rename(path, parts))
        self._clear()
        if not self._background.threaded:
            self._raise_failure()  # written already: its failure is this step's

    def _raise_failure(self) -> None:
        """The writer thread's first failure, as a WriteError naming its file; raised once."""
        failure = self._background.failure
        if failure is not None and not self._failure_raised:
            self._failure_raised = True
            self._clear()
            e = failure[1]
            raise WriteError(getattr(e, "errno", None), getattr(e, "strerror", None) or f"{type(e).__name__}: {e}",
                             failure[0])

    def _clear(self) -> None:
        self._entries, self._names, self._rows, self._scale = [], set(), [], 0.0

    def close(self, status: str = "complete", error: str | None = None, **stopped: Any) -> None:
        """Flush the last step and record how the run ended: complete, stopped, interrupted or unsupported."""
        pending = self._step if self._names else None
        try:
            try:
                self.flush()
            finally:
                self._background.stop()  # every step handed over is written, or failed
            self._raise_failure()
            if self._summary_file is not None:
                self._summary_file.close()
        except OSError as e:  # a step cannot be written (a full disk): the run did not complete
            where = Path(e.filename).name if e.filename else unit_file(pending)
            status, error = "stopped", f"cannot write {where}: {e.strerror or e}" + (
                f"; before that: {error}" if error else "")
        self.manifest["status"] = status
        self.manifest["units"] = list(self._background.written)
        if self.capture.mode != FULL:
            self.manifest["summaries"] = {"file": SUMMARIES, "names": SUMMARY_NAMES, "fields": list(SUMMARY_FIELDS)}
        if status != "complete":
            self.manifest["stopped"] = {"error": error, "partial_step": pending, **stopped}
        self.manifest["finished"] = now()
        self._write_manifest()

    def _write_manifest(self) -> None:
        write_atomic(self.dir / MANIFEST, json.dumps(self.manifest, indent=1).encode())

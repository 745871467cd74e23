"""The JSON-lines memstate: one JSON object a line, easy to write from any language.

    {"memstate": "jsonl/1", "implementation": "go-port", "device": "cpu", "versions": {"go": "1.22"}}
    {"step": "load", "name": "hidden/weight", "dtype": "float32", "shape": [128, 784], "data": [...]}
    {"step": 0, "name": "input/x", "dtype": "float32", "shape": [64, 784], "data": [...]}
    ...
    {"end": "complete"}            or   {"end": "error", "error": "what went wrong"}

docs/memstate.md is the full grammar. A file with no end line is a run that stopped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .memstate import RECORD_DTYPES, Memstate, MemstateWriter
from .records import LOAD

FORMAT = "jsonl/1"
SPECIAL = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf,
           "-Infinity": -math.inf, "-inf": -math.inf}


class LineError(Exception):
    """A line that is not a valid JSON-lines record."""


def _values(data: Any, dtype: str) -> np.ndarray:
    flat = data if isinstance(data, list) else [data]
    if dtype.startswith("float"):
        try:
            arr = np.array(flat, dtype=np.float64)
            for i in np.flatnonzero(np.isnan(arr)):  # numpy reads null as NaN: look where NaN came from
                if flat[i] is None:
                    raise TypeError
        except (TypeError, ValueError, OverflowError):
            fixed = []
            for i, v in enumerate(flat):
                if isinstance(v, str) and v in SPECIAL:
                    fixed.append(SPECIAL[v])
                elif v is None:
                    raise LineError(f"data[{i}] is null; write NaN/Infinity as the strings \"NaN\", "
                                    f"\"Infinity\", \"-Infinity\" (JavaScript's JSON.stringify turns them into null)")
                elif isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise LineError(f"data[{i}] is {v!r}, expected a number") from None
                else:
                    fixed.append(v)
            try:
                arr = np.array(fixed, dtype=np.float64)
            except OverflowError:
                raise LineError("an integer in 'data' is too large for a float") from None
        with np.errstate(over="ignore"):
            return arr.astype(dtype)  # beyond float32's range is inf, as a float32 program would hold it
    info = np.iinfo(dtype) if dtype != "bool" else None
    for i, v in enumerate(flat):
        ok = isinstance(v, (bool, int)) if dtype == "bool" else isinstance(v, int) and not isinstance(v, bool)
        if not ok:
            raise LineError(f"data[{i}] is {v!r}, expected an integer for dtype {dtype}")
        if info is not None and not info.min <= v <= info.max:
            raise LineError(f"data[{i}] is {v}, outside {dtype}'s range {info.min}..{info.max}")
    return np.array(flat, dtype=dtype)


def parse_record(obj: dict[str, Any]) -> tuple[Any, str, np.ndarray]:
    """(step, name, array) from one record line, or LineError saying which field is wrong."""
    step = obj.get("step")
    if step != LOAD and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise LineError(f"field 'step' must be \"load\" or a non-negative integer, got {step!r}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise LineError(f"field 'name' must be a record name like \"hidden/matmul\", got {name!r}")
    dtype = obj.get("dtype")
    if dtype not in RECORD_DTYPES:
        raise LineError(f"record {name!r}: field 'dtype' must be one of {', '.join(RECORD_DTYPES)}, got {dtype!r}")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise LineError(f"record {name!r}: field 'shape' must be a list of non-negative integers, got {shape!r}")
    if "data" not in obj:
        raise LineError(f"record {name!r}: field 'data' is missing")
    try:
        values = _values(obj["data"], dtype)
    except LineError as e:
        raise LineError(f"record {name!r}: {e}") from None
    if values.size != math.prod(shape):
        raise LineError(f"record {name!r}: shape {shape} needs {math.prod(shape)} values, 'data' has {values.size}")
    return step, name, values.reshape(shape)


def convert_jsonl(source: str | Path, target: str | Path, manifest: dict[str, Any] | None = None,
                  stderr_tail: str | None = None, load: list[tuple[str, np.ndarray]] | None = None) -> Memstate:
    """Convert a JSON-lines memstate into a binary one, keeping every record before any bad line.

    A bad line or a missing end line does not raise: the memstate is closed as stopped,
    with the file, line and reason in its manifest. `load` adds records to the load unit (a
    replay's starting optimizer buffers) where the file does not hold them itself.
    """
    source = Path(source)
    writer = MemstateWriter(target, dict(manifest or {}))
    extra = list(load or [])

    def add_load() -> None:
        for name, value in extra:
            try:
                writer(LOAD, name, value)
            except ValueError:  # the file recorded it itself
                pass
        extra.clear()
    status, error, where = "stopped", None, {}
    try:
        f: TextIO = open(source, encoding="utf-8")
    except OSError as e:
        writer.close("stopped", error=f"{source}: cannot read: {e.strerror}", stderr_tail=stderr_tail)
        return Memstate(target)
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LineError(f"not valid JSON ({e.msg} at column {e.colno}): {line[:80].rstrip()!r}") from None
                except RecursionError:
                    raise LineError("nests arrays or objects too deeply to read") from None
                if not isinstance(obj, dict):
                    raise LineError(f"expected a JSON object, got {line[:80].rstrip()!r}")
                if "memstate" in obj:
                    if obj["memstate"] != FORMAT:
                        raise LineError(f"header says format {obj['memstate']!r}, this reader knows {FORMAT!r}")
                    versions = obj.get("versions") or {}
                    if not isinstance(versions, dict):
                        raise LineError(f"header field 'versions' must be an object like {{\"go\": \"1.22\"}}, "
                                        f"got {versions!r:.60}")
                    if "implementation" in obj:
                        writer.manifest.setdefault("implementation", {}).setdefault("name", str(obj["implementation"]))
                    writer.describe(obj.get("device"), **versions)
                    if isinstance(obj.get("config"), dict) and not writer.manifest.get("config"):
                        writer.manifest["config"] = obj["config"]
                        writer.manifest["dtype"] = obj["config"].get("dtype")
                elif "end" in obj:
                    status = "complete" if obj["end"] == "complete" else "stopped"
                    error = None if status == "complete" else str(obj.get("error") or f"end: {obj['end']!r}")
                    break
                else:
                    step, name, array = parse_record(obj)
                    if step != LOAD and extra:
                        add_load()
                    try:
                        writer(step, name, array)
                    except ValueError as e:
                        raise LineError(str(e)) from None
            else:
                error = f"{source}: ends after line {lineno} without an end line (the process stopped early)"
        except LineError as e:
            error, where = f"{source}: line {lineno}: {e}", {"line": lineno}
        except UnicodeDecodeError as e:
            error = f"{source}: not UTF-8 text near line {lineno + 1}: {e.reason}"
    if status == "complete":
        writer.close("complete")
    else:
        writer.close(status, error=error, stderr_tail=stderr_tail, **where)
    return Memstate(target)


def _jsonable(array: np.ndarray) -> list[Any]:
    flat = np.asarray(array).ravel()
    return flat.astype(np.float64).tolist() if flat.dtype.kind == "f" else flat.tolist()


def write_jsonl(memstate: Memstate, target: str | Path) -> None:
    """Write a binary memstate as JSON lines (floats at full precision, NaN/Infinity bare), to
    TARGET.tmp renamed into place: a failed write leaves no partial file under the target's name."""
    m = memstate.manifest
    runtime = m.get("runtime", {})
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            header = {"memstate": FORMAT, "implementation": memstate.name, "device": runtime.get("device"),
                      "versions": runtime.get("versions", {}), "config": m.get("config")}
            f.write(json.dumps(header) + "\n")
            for step in memstate.units:
                for name, array in memstate.unit(step).items():
                    rec = {"step": step, "name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                           "data": _jsonable(array)}
                    f.write(json.dumps(rec) + "\n")
            if memstate.status == "complete":
                f.write(json.dumps({"end": "complete"}) + "\n")
            else:
                f.write(json.dumps({"end": "error", "error": memstate.stop_summary()}) + "\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

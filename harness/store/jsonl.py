"""The JSON-lines memstate: one JSON object a line, easy to write from any language.

    {"memstate": "jsonl/1", "implementation": "go-port", "device": "cpu", "versions": {"go": "1.22"}}
    {"step": "load", "name": "hidden/weight", "dtype": "float32", "shape": [128, 784], "data": [...]}
    {"step": 0, "name": "input/x", "dtype": "float32", "shape": [64, 784], "data": [...]}
    {"step": 0, "name": "hidden/matmul", "dtype": "float32", "shape": [64, 128], "base64": "AAB..."}
    ...
    {"end": "complete"}            or   {"end": "error", "error": "what went wrong"}
                                   or   {"end": "unsupported", "reason": "batch_size 1 only"}

docs/memstate.md is the full grammar. A file with no end line is a run that stopped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from harness.spec.config import Config
from harness.errors import DuplicateKey, InputError, loads, regular_file
from harness.store.manifest import expected_steps
from harness.store.format import MAX_DIMS, RECORD_DTYPES, temporary_name
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.precision import check_precision
from harness.spec.records import LOAD, check_missing

FORMAT = "jsonl/1"
SPECIAL = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf,
           "-Infinity": -math.inf, "-inf": -math.inf}


class LineError(Exception):
    """A line that is not a valid JSON-lines record."""


def _values(data: Any, dtype: str) -> np.ndarray:
    flat = data if isinstance(data, list) else [data]
    if dtype.startswith("float"):
        if set(map(type, flat)) <= {float, int}:  # the common case, checked in one pass
            try:
                arr = np.array(flat, dtype=np.float64)
            except OverflowError:
                raise LineError("an integer in 'data' is too large for a float") from None
        else:
            fixed = []
            for i, v in enumerate(flat):
                if isinstance(v, str) and v in SPECIAL:
                    fixed.append(SPECIAL[v])
                elif v is None:
                    raise LineError(f"data[{i}] is null; write NaN/Infinity as the strings \"NaN\", "
                                    f"\"Infinity\", \"-Infinity\" (JavaScript's JSON.stringify turns them into null)")
                elif isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise LineError(f"data[{i}] is {repr(v)[:40]}, expected a number") from None
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


def _decoded(text: Any, dtype: str, count: int) -> np.ndarray:
    """`count` values of `dtype` from `base64`: standard base64 (RFC 4648, with padding) of their
    little-endian bytes, row-major; bool is one byte, 0 or 1. Many times faster to read than a list
    of numbers (docs/memstate.md has the figures)."""
    if not isinstance(text, str):
        raise LineError(f"field 'base64' must be a string (the values' little-endian bytes in base64), "
                        f"got {json.dumps(text)[:40]}")
    size = count * np.dtype(dtype).itemsize  # bytes
    if len(text) != 4 * -(-size // 3):  # checked before decoding: a wrong shape says so, whatever the text
        raise LineError(f"its shape holds {count} {dtype} values, {size} bytes: {4 * -(-size // 3)} characters of "
                        f"base64, and 'base64' has {len(text)}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:  # ValueError: a character outside ASCII
        raise LineError(f"field 'base64' is not base64 (A-Z a-z 0-9 + /, padded with =): {e}") from None
    if len(raw) != size:  # padding that stands for more or fewer bytes
        raise LineError(f"field 'base64' decodes to {len(raw)} bytes, its shape needs {size}")
    if dtype == "bool":
        octets = np.frombuffer(raw, dtype=np.uint8)
        wrong = np.flatnonzero(octets > 1)
        if wrong.size:
            i = int(wrong[0])
            raise LineError(f"byte {i} of 'base64' is {octets[i]}, expected 0 or 1 for dtype bool")
        return octets.astype(bool)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)  # a native copy


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
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape):
        raise LineError(f"record {name!r}: field 'shape' must be a list of at most {MAX_DIMS} integers in "
                        f"0..2^31-1, got {json.dumps(shape)[:60]}")
    count = math.prod(shape)
    if ("data" in obj) == ("base64" in obj):
        raise LineError(f"record {name!r}: " + ("holds both 'data' and 'base64'; give its values once" if "data" in obj
                                                else "field 'data' is missing (or 'base64', the values' bytes)"))
    try:
        values = _values(obj["data"], dtype) if "data" in obj else _decoded(obj["base64"], dtype, count)
    except LineError as e:
        raise LineError(f"record {name!r}: {e}") from None
    if values.size != count:  # `base64` has its count from the length already
        raise LineError(f"record {name!r}: shape {shape} needs {count} values, 'data' has {values.size}")
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
        regular_file(source, "a JSON-lines memstate")
        f: TextIO = open(source, encoding="utf-8")
    except (OSError, InputError) as e:
        writer.close("stopped", error=str(e) if isinstance(e, InputError) else f"{source}: cannot read: {e.strerror}",
                     stderr_tail=stderr_tail)
        return Memstate(target)
    steps: range | None = None  # what the config asks for, once known
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = _object(line)
                if "memstate" in obj:
                    _header(writer, obj)
                elif "end" in obj:
                    status = obj["end"] if obj["end"] in ("complete", "unsupported") else "stopped"
                    error = None if status == "complete" else str(
                        obj.get("reason") or obj.get("error") or f"end: {obj['end']!r}")[:4000]
                    after = next((n for n, rest in enumerate(f, lineno + 1) if rest.strip()), None)
                    if after is not None:  # the file goes on past its end: which part is the run?
                        writer.manifest["damaged"] = (f"{source}: line {after}: more lines after the end line (line "
                                                      f"{lineno}); a run ends once")
                    break
                else:
                    step, name, array = parse_record(obj)
                    if steps is None:
                        steps = _steps(writer) or range(0, 2**62)
                    if step != LOAD and step not in steps:
                        raise LineError(f"record {name!r} is at step {step}, but the config asks for steps "
                                        f"{steps.start}..{steps.stop - 1}")
                    if step != LOAD and name in writer.manifest.get("missing", ()):
                        raise LineError(f"record {name!r} is declared missing in the header (not computed) but "
                                        f"recorded; a run must not say both")
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
    writer.manifest["converted_from"] = str(source)
    if status == "complete":
        writer.close("complete")
    else:
        writer.close(status, error=error, stderr_tail=stderr_tail, **where)
    return Memstate(target)


def _object(line: str) -> dict[str, Any]:
    """One line as a JSON object, or LineError."""
    try:
        obj = loads(line)
    except DuplicateKey as e:
        raise LineError(f"not valid: {e}") from None
    except json.JSONDecodeError as e:
        raise LineError(f"not valid JSON ({e.msg} at column {e.colno}): {line[:80].rstrip()!r}") from None
    except RecursionError:
        raise LineError("nests arrays or objects too deeply to read") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {line[:80].rstrip()!r}")
    return obj


def _header(writer: MemstateWriter, obj: dict[str, Any]) -> None:
    """The header line's fields into the manifest, each checked (the config as a config)."""
    if obj["memstate"] != FORMAT:
        raise LineError(f"header says format {str(obj['memstate'])[:40]!r}, this reader knows {FORMAT!r}")
    versions = obj.get("versions") or {}
    if not isinstance(versions, dict) or not all(isinstance(v, (str, int, float)) for v in versions.values()):
        raise LineError(f"header field 'versions' must be an object like {{\"go\": \"1.22\"}}, "
                        f"got {json.dumps(versions)[:60]}")
    for key in ("implementation", "device"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise LineError(f"header field {key!r} must be a string, got {json.dumps(obj[key])[:60]}")
    if obj.get("implementation"):
        writer.manifest.setdefault("implementation", {}).setdefault("name", obj["implementation"])
    writer.describe(obj.get("device"), **versions)
    if obj.get("config") is not None and not writer.manifest.get("config"):
        try:
            config = Config.from_dict(obj["config"], source="header field 'config'")
        except InputError as e:
            raise LineError(str(e)) from None
        writer.manifest["config"] = obj["config"]
        writer.manifest["dtype"] = config.dtype
    if obj.get("precision") is not None:
        wrong = check_precision(obj["precision"])
        if wrong:
            raise LineError(f"header field 'precision' {wrong}")
        writer.manifest["precision"] = obj["precision"]
    if obj.get("missing") is not None:
        config_dict = writer.manifest.get("config")
        wrong = check_missing(Config.from_dict(config_dict) if config_dict else None, obj["missing"])
        if wrong:
            raise LineError(f"header field 'missing': {wrong}")
        writer.manifest["missing"] = list(dict.fromkeys(obj["missing"]))


def _steps(writer: MemstateWriter) -> range | None:
    """The steps the run's config asks for (the job's, or the header's), None without a config."""
    if not writer.manifest.get("config"):
        return None
    return expected_steps(writer.manifest, Config.from_dict(writer.manifest["config"]))


def _jsonable(array: np.ndarray) -> list[Any]:
    flat = np.asarray(array).ravel()
    return flat.astype(np.float64).tolist() if flat.dtype.kind == "f" else flat.tolist()


def _base64(array: np.ndarray) -> str:
    """The values' little-endian bytes, row-major, in base64 (what `_decoded` reads)."""
    flat = np.ascontiguousarray(array).ravel()
    return base64.b64encode(flat.astype(flat.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def write_jsonl(memstate: Memstate, target: str | Path, binary: bool = False) -> None:
    """Write a binary memstate as JSON lines (floats at full precision, NaN/Infinity bare; `binary`:
    each record's bytes as `base64` instead of `data`), to TARGET.tmp renamed into place: a failed
    write leaves no partial file under the target's name."""
    m = memstate.manifest
    runtime = m.get("runtime", {})
    target = Path(target)
    tmp = temporary_name(target)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            header = {"memstate": FORMAT, "implementation": memstate.name, "device": runtime.get("device"),
                      "versions": runtime.get("versions", {}), "config": m.get("config")}
            if m.get("missing"):
                header["missing"] = m["missing"]
            if m.get("precision"):
                header["precision"] = m["precision"]
            f.write(json.dumps(header) + "\n")
            for step in memstate.units:
                for name, array in memstate.unit(step).items():
                    rec = {"step": step, "name": name, "dtype": array.dtype.name, "shape": list(array.shape)}
                    rec.update({"base64": _base64(array)} if binary else {"data": _jsonable(array)})
                    f.write(json.dumps(rec) + "\n")
            if memstate.status == "complete":
                f.write(json.dumps({"end": "complete"}) + "\n")
            elif memstate.status == "unsupported":
                f.write(json.dumps({"end": "unsupported", "reason": (m.get("stopped") or {}).get("error")}) + "\n")
            else:
                f.write(json.dumps({"end": "error", "error": memstate.stop_summary()}) + "\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

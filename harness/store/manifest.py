"""What a memstate's manifest.json may hold, checked once when it is read.

Every field is checked for its type and range where the manifest is opened, so that no later
reader (the comparator, the report, the converter) meets a list where it expects an object: a
bad field is an InputError naming the file and the field, which the command line turns into
exit 2. The checks follow docs/memstate.md's table of manifest fields.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.run.capture import Capture
from harness.spec.config import DTYPES, Config
from harness.errors import InputError
from harness.spec.precision import check_precision
from harness.spec.records import check_missing

STATUSES = ("complete", "stopped", "interrupted", "running", "unsupported")


def _fail(path: Path, field: str, expected: str, got: Any) -> InputError:
    return InputError(f"{path}: field {field!r} must be {expected}, got {_short(got)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_step(v: Any) -> bool:
    return v == "load" or (_is_int(v) and v >= 0)


def _strings(path: Path, field: str, value: Any, allow_none: bool = True) -> None:
    """An object whose values are strings (or null where allowed)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and (isinstance(v, str) or (allow_none and v is None))
                                              for k, v in value.items()):
        raise _fail(path, field, "an object of strings", value)


def check_manifest(path: Path, m: Any, format_name: str) -> Config | None:
    """Check every field of a memstate manifest; returns its config (None when it records none)."""
    if not isinstance(m, dict) or m.get("format") != format_name:
        raise InputError(f"{path}: field 'format' must be {format_name!r}")
    impl = m.get("implementation", {})
    if not isinstance(impl, dict):
        raise _fail(path, "implementation", "an object like {\"name\": \"numpy\"}", impl)
    for key in ("name", "path", "kind"):
        if key in impl and not isinstance(impl[key], str):
            raise _fail(path, f"implementation.{key}", "a string", impl[key])
    if "name" in impl and not impl["name"]:
        raise _fail(path, "implementation.name", "a non-empty string", impl["name"])
    status = m.get("status", "running")
    if status not in STATUSES:
        raise _fail(path, "status", "one of " + ", ".join(STATUSES), status)
    if m.get("dtype") is not None and m["dtype"] not in DTYPES:
        raise _fail(path, "dtype", "one of " + ", ".join(DTYPES), m["dtype"])
    for key in ("params_sha256", "data", "created", "finished", "damaged", "converted_from"):
        if m.get(key) is not None and not isinstance(m[key], str):
            raise _fail(path, key, "a string", m[key])
    runtime = m.get("runtime", {})
    if not isinstance(runtime, dict):
        raise _fail(path, "runtime", "an object like {\"device\": \"cpu\", \"versions\": {}}", runtime)
    if runtime.get("device") is not None and not isinstance(runtime["device"], str):
        raise _fail(path, "runtime.device", "a string", runtime["device"])
    _strings(path, "runtime.versions", runtime.get("versions", {}))
    stopped = m.get("stopped")
    if stopped is not None:
        if not isinstance(stopped, dict):
            raise _fail(path, "stopped", "an object", stopped)
        if stopped.get("error") is not None and not isinstance(stopped["error"], str):
            raise _fail(path, "stopped.error", "a string", stopped["error"])
    _strings(path, "legacy_notes", m.get("legacy_notes", {}), allow_none=False)
    unmapped = m.get("unmapped", [])
    if not isinstance(unmapped, list) or not all(
            isinstance(u, list) and len(u) == 3 and _is_step(u[0]) and isinstance(u[1], str) and isinstance(u[2], str)
            for u in unmapped):
        raise _fail(path, "unmapped", "a list of [step, record name, reason]", unmapped)
    missing = m.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(n, str) and n for n in missing):
        raise _fail(path, "missing", "a list of record names", missing)
    if m.get("precision") is not None and check_precision(m["precision"]):
        raise InputError(f"{path}: field 'precision' {check_precision(m['precision'])}")
    replay = m.get("replay")
    if replay is not None:
        if not isinstance(replay, dict):
            raise _fail(path, "replay", "an object {\"first_step\": N, \"steps\": K}", replay)
        if not _is_int(replay.get("first_step")) or replay["first_step"] < 0:
            raise _fail(path, "replay.first_step", "a non-negative integer", replay.get("first_step"))
        if "steps" in replay and (not _is_int(replay["steps"]) or replay["steps"] < 1):
            raise _fail(path, "replay.steps", "a positive integer", replay["steps"])
    wall = m.get("wall_seconds")
    if wall is not None and (isinstance(wall, bool) or not isinstance(wall, (int, float)) or not math.isfinite(wall)):
        raise _fail(path, "wall_seconds", "a finite number", wall)
    Capture.from_dict(m.get("capture"), source=f"{path}: field 'capture'")
    if "config" not in m:
        return None
    config = Config.from_dict(m["config"], source=f"{path}: field 'config'")
    wrong = check_missing(config, missing)
    if wrong:
        raise InputError(f"{path}: field 'missing': {wrong}")
    if m.get("dtype") is not None and m["dtype"] != config.dtype:
        raise InputError(f"{path}: field 'dtype' is {m['dtype']!r} but field 'config' says {config.dtype!r}")
    return config


def expected_steps(m: dict[str, Any], config: Config | None) -> range | None:
    """The steps a memstate's config asks it to hold: 0..steps-1, or a replay's window."""
    if config is None:
        return None
    replay = m.get("replay") or {}
    first = replay.get("first_step", 0)
    return range(first, first + replay.get("steps", config.steps - first))

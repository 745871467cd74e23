"""Errors the user caused: bad files, bad options. The CLI turns them into exit code 2."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad input. The message names the file, field or record and what was expected."""


class OutputError(InputError):
    """What memstate must write cannot be written (a full disk, an unwritable directory).
    Everything finished before it is kept."""


class DuplicateKey(ValueError):
    """A JSON object that names one key twice: which value was meant is not knowable."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: an object, or DuplicateKey naming the repeated key."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def loads(text: str | bytes) -> Any:
    """json.loads that refuses duplicate keys (DuplicateKey, a ValueError)."""
    return json.loads(text, object_pairs_hook=unique_keys)


def regular_file(path: str | Path, what: str) -> int:
    """The size of PATH, or InputError when it is not a regular file (a FIFO would hang a reader,
    /dev/zero fill its memory); symlinks are followed."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket"
                if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(f"{path}: {what} must be a regular file, found {kind}")
    return st.st_size


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, or raise InputError naming the file, what it is, and what is wrong."""
    path = Path(path)
    regular_file(path, what)
    try:
        return loads(path.read_bytes())
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from None
    except DuplicateKey as e:
        raise InputError(f"{path}: {what} is not valid: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: {what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{path}: {what} nests arrays or objects too deeply to read") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """TEXT with every control character escaped (\\n, \\x1b, ...): a name or message taken from a file
    can neither start a line of its own (a forged verdict) nor move the cursor or colour the terminal."""
    s = str(text)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)

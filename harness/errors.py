"""Errors the user caused: bad files, bad options. The CLI turns them into exit code 2."""

import json
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad input. The message names the file, field or record and what was expected."""


class OutputError(InputError):
    """What memstate must write cannot be written (a full disk, an unwritable directory).
    Everything finished before it is kept."""


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, or raise InputError naming the file, what it is, and what is wrong."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: {what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{path}: {what} nests arrays or objects too deeply to read") from None

"""Where results go, checked before anything runs: an output never overwrites an input, a run
directory belongs to one command at a time, and a file's directory exists before hours of work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from harness.errors import InputError

CLAIM = ".memstate-run"  # made with O_EXCL in a run directory: the first command to make it owns the directory


def claim_run_directory(out: Path) -> bool:
    """Make `out` (or take an empty one) for this command alone. Two commands given the same --out at once:
    exactly one claims it, the other is refused, so they never write into each other's memstates. True when
    this command made the directory (release_run_directory removes it again)."""
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the run directory: {e.strerror or e}") from None
    if any(p.name != CLAIM for p in out.iterdir()) or (out / CLAIM).exists():
        raise InputError(f"{out}: already holds a run; refusing to overwrite it (choose another --out)")
    try:
        os.close(os.open(out / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise InputError(f"{out}: another command is using it as its run directory (choose another --out)") from None
    except OSError as e:
        raise InputError(f"{out}: cannot write in the run directory: {e.strerror or e}") from None
    return made


def release_run_directory(out: Path, made: bool) -> None:
    """Give back a run directory this command claimed but wrote nothing into (bad input found before any
    work), so that the same command, corrected, is not refused as overwriting a run; a directory holding
    anything else is kept as it is."""
    try:
        if [p.name for p in out.iterdir()] == [CLAIM]:
            (out / CLAIM).unlink()
            if made:
                out.rmdir()
    except OSError:
        pass  # gone or unreadable: nothing of this command's to give back


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_output_paths(outputs: dict[str, str | Path | None], inputs: Iterable[Path]) -> None:
    """Refuse an output file that is an input or lies inside an input directory (a memstate, an
    implementation), and two outputs that are one file; `outputs` maps the option to its path."""
    roots = [Path(p).resolve() for p in inputs]
    seen: dict[Path, str] = {}
    for option, target in outputs.items():
        if target is None or str(target) == "-":
            continue
        path = Path(target).resolve()
        for root in roots:
            if _inside(path, root):
                what = "is" if path == root else "is inside"
                raise InputError(f"{target}: {option} {what} the input {root}; it would overwrite what is being "
                                 f"compared (write it elsewhere)")
        if path in seen:
            raise InputError(f"{target}: given to both {seen[path]} and {option}; each needs its own file")
        seen[path] = option


def check_file_target(target: str | Path, option: str) -> None:
    """A file to be written at the end must have a writable directory now, not after the work is done."""
    parent = Path(target).resolve().parent
    if not parent.is_dir():
        raise InputError(f"{target}: {option}'s directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{target}: {option}'s directory {parent} is not writable")
    if Path(target).is_dir():
        raise InputError(f"{target}: {option} names a directory; give a file name")

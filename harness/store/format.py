"""The memstate directory's format: a manifest plus one safetensors file per step.

    manifest.json            what ran, on what, and how it ended (written at start and close)
    load.safetensors         the parameters as loaded
    step-000000.safetensors  every record of step 0, and so on

Its names and limits, and the one way every file of it is written: to a temporary name unique per
writer, then renamed into place, so a crash leaves every finished file readable and none half-written.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.spec.records import LOAD, Step

FORMAT = "memstate/1"


MANIFEST = "manifest.json"


ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
             "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


RECORD_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


NP_TO_ST = {np.dtype(v): k for k, v in ST_DTYPES.items()}  # by native-order dtype: dtype.name costs microseconds


_RECORD_NP = frozenset(np.dtype(n) for n in RECORD_DTYPES)


SUMMARIES, SUMMARY_NAMES = "summaries.f64", "summaries.names"


MAX_DIMS = 16  # a record has at most this many dimensions (the spec's have 0 to 2; numpy stops at 64)


MAX_HEADER = 100_000_000  # bytes of a safetensors header, as the reference reader allows


WRITE_FAILED = 74  # a child's exit code when it could not write its memstate (sysexits' EX_IOERR)


class WriteError(OSError):
    """A memstate file could not be written (a full disk): raised by the writer, not by the
    implementation's own code, so the child can tell the two apart."""


def unit_file(step: Step) -> str:
    return "load.safetensors" if step == LOAD else f"step-{step:06d}.safetensors"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers see the old file or the whole new one."""
    _write_then_rename(path, [data], sync=True)


def write_file(path: Path, parts: list[bytes | memoryview], sync: bool = False) -> None:
    """Write `parts` to `path` as `write_all` does (a MiB a system call at most); `sync`: fsync before closing."""
    with open(path, "wb") as f:
        write_all(f, parts)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _write_then_rename(path: Path, parts: list[bytes | memoryview], sync: bool = False) -> None:
    """Write `parts` to PATH.tmp and rename it to PATH; on failure (a full disk) remove PATH.tmp
    and raise, so that no half-written file is left under either name."""
    tmp = temporary_name(path)
    try:
        write_file(tmp, parts, sync)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "writev") and "SC_IOV_MAX" in os.sysconf_names else 0


# Bytes handed to one system call at most. Linux (6.x) gives a write page-cache folios as large as the write,
# up to 2 MiB, and a 2 MiB page is one that a VM whose host takes back its free memory (free page reporting)
# must fault in afresh (docs/bisect.md, *What recording costs*, has the figures). A 7 MB step is 7 calls.
WRITE_CHUNK = 1 << 20


def write_all(f: BinaryIO, parts: list[bytes | memoryview]) -> None:
    """Write every part to the unbuffered end of `f`, at most WRITE_CHUNK bytes a system call: with writev,
    one call (and one release of the GIL, which a writer thread must win back from the step computing beside
    it) for as many small parts as fit rather than one for each; a short write (a disk filling up) goes on
    from where it stopped."""
    pieces = [v[at:at + WRITE_CHUNK] for v in (memoryview(p).cast("B") for p in parts)  # bytes, as writes count
              for at in range(0, v.nbytes, WRITE_CHUNK)]
    if not _IOV_MAX:
        f.writelines(pieces)
        return
    f.flush()
    batch: list[memoryview] = []
    size = 0
    for piece in pieces:
        if batch and (size + piece.nbytes > WRITE_CHUNK or len(batch) == _IOV_MAX):
            _writev_all(f.fileno(), batch)
            batch, size = [], 0
        batch.append(piece)
        size += piece.nbytes
    _writev_all(f.fileno(), batch)


def _writev_all(fd: int, views: list[memoryview]) -> None:
    """One writev of `views`, and more from where a short write stopped until every byte is written."""
    at = 0
    while at < len(views):
        n = os.writev(fd, views[at:])
        if n <= 0:
            raise OSError(errno.EIO, "the write made no progress")
        while at < len(views) and n >= views[at].nbytes:  # the parts written whole
            n -= views[at].nbytes
            at += 1
        if n:
            views[at] = views[at][n:]


# safetensors' own writer puts wider dtypes first, then names in order; memstate lays its data out the same
# way and sorts the header's keys, as the safetensors.save that first made the goldens did (safetensors 0.8
# keeps the keys in data order instead: its files read the same, their bytes differ)
_ST_RANK = {t: i for i, t in enumerate(("U64", "I64", "F64", "F32", "U32", "I32", "F16", "U16", "I16", "I8", "U8",
                                        "BOOL"))}


def safetensors_file(entries: list[tuple[str, np.dtype, tuple[int, ...], memoryview]],
                     metadata: dict[str, str]) -> list[bytes | memoryview]:
    """A safetensors file as parts to write: the 8-byte length and JSON header (keys sorted, padded so the
    data stays 8-byte aligned), then each entry's bytes (name, dtype, shape, its little-endian bytes) in
    safetensors' order."""
    order = _order(entries)
    return [_framed(_header_text(entries, order, metadata)), *(entries[i][3] for i in order)]


_STEP_MARK = "\x00step\x00"  # where a cached header's step number goes; JSON writes it as below
_STEP_MARK_JSON = json.dumps(_STEP_MARK)[1:-1].encode()
_LAYOUTS: dict[tuple[tuple[str, np.dtype, tuple[int, ...]], ...], tuple[bytes, bytes, list[int]]] = {}


def step_file(step: Step, entries: list[tuple[str, np.dtype, tuple[int, ...], memoryview]]) -> list[bytes | memoryview]:
    """A step's safetensors file as parts, with its step and its records' order as metadata. The steps of a run
    differ in little but their number, so the header is built once for each layout (names, dtypes and shapes,
    in order) and the number put in its place: 3.4 us a step instead of 38 at 20 records, the same bytes."""
    key = tuple((name, dtype, shape) for name, dtype, shape, _ in entries)
    cached = _LAYOUTS.get(key)
    if cached is None:
        order = _order(entries)
        metadata = {"step": _STEP_MARK, "order": json.dumps([name for name, *_ in entries])}
        pieces = _header_text(entries, order, metadata).split(_STEP_MARK_JSON)
        if len(pieces) != 2:  # a record's name holds the mark too: no template for this layout
            return safetensors_file(entries, {**metadata, "step": str(step)})
        if len(_LAYOUTS) >= 64:
            _LAYOUTS.clear()
        cached = _LAYOUTS[key] = (pieces[0], pieces[1], order)
    before, after, order = cached
    return [_framed(before + str(step).encode() + after), *(entries[i][3] for i in order)]


def _order(entries: list[tuple[str, np.dtype, tuple[int, ...], memoryview]]) -> list[int]:
    """The entries' indices in safetensors' order: wider dtypes first, then by name."""
    return sorted(range(len(entries)), key=lambda i: (_ST_RANK[NP_TO_ST[entries[i][1]]], entries[i][0]))


def _header_text(entries: list[tuple[str, np.dtype, tuple[int, ...], memoryview]], order: list[int],
                 metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    at = 0
    for i in order:
        name, dtype, shape, blob = entries[i]
        header[name] = {"dtype": NP_TO_ST[dtype], "shape": list(shape), "data_offsets": [at, at + blob.nbytes]}
        at += blob.nbytes
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _framed(text: bytes) -> bytes:
    """The header's 8-byte length and its text, padded with spaces so the data stays 8-byte aligned."""
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def temporary_name(path: Path) -> Path:
    """PATH's temporary sibling, unique to this writer (process and call), ending in .tmp: two writers of
    one file never share a temporary name, and whichever renames last wins whole."""
    return path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

"""Structured fuzzing: every field of a valid file of each format, replaced by a value of the wrong JSON type,
NaN, an infinity, a negative or huge number, written twice or left out. Each reader either loads the file or
raises the documented InputError naming the file; never another exception, never a hang (a case that runs
past HANG seconds fails), and a changed memstate never compares as agree.

Unlike the random mutations of test_properties.py, every (field, mutation) pair is tried, so a new field in
a format is fuzzed without anyone writing a strategy for it.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.compare.stream import compare_memstates
from harness.report.text import format_text
from harness.spec.config import Config
from harness.errors import InputError
from harness.store.jsonl import convert_jsonl, write_jsonl
from harness.store.legacy import convert_legacy
from harness.store.memstate import Memstate
from harness.spec.params import initial_params, parse_params
from harness.run.runner import load_implementation

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a reader prints nothing on a user's terminal either
HANG = 30  # seconds one case may take before it counts as a hang
MISSING = object()
MUTATIONS: dict[str, Any] = {"missing": MISSING, "null": None, "bool": True, "string": "x", "number": 3,
                             "negative": -1, "huge": 10**30, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
                             "list": [], "object": {}, "duplicate": "duplicate"}

Path_ = tuple[Any, ...]


def field_paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every key of every object, and the first element of every list, depth first."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from field_paths(v, prefix + (k,))
    elif isinstance(doc, list) and doc:
        yield prefix + (0,)
        yield from field_paths(doc[0], prefix + (0,))


def mutate(doc: Any, path: Path_, how: str) -> str:
    """`doc` as JSON text with the field at `path` mutated `how` (a copy; `doc` is untouched)."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    key = path[-1]
    if how == "missing":
        del node[key]
        return json.dumps(doc)
    if how == "duplicate":  # the key written twice, the second time with another value
        if not isinstance(node, dict):
            node.insert(0, node[0])  # a list: its first element twice
            return json.dumps(doc)
        marker = f"{key}\u0001dup"
        node[marker] = 7
        return json.dumps(doc).replace(json.dumps(marker), json.dumps(key))
    node[key] = MUTATIONS[how]
    return json.dumps(doc)  # NaN and Infinity as Python writes them


def cases(doc: Any) -> Iterator[tuple[str, str]]:
    """(label, mutated text) for every field path and mutation of `doc`."""
    for path in field_paths(doc):
        for how in MUTATIONS:
            if how == "duplicate" and not isinstance(path[-1], str):
                continue
            yield f"{'.'.join(map(str, path))} {how}", mutate(doc, path, how)


@contextmanager
def bounded(label: str) -> Iterator[None]:
    def timeout(signum, frame):
        raise TimeoutError(f"{label}: still running after {HANG} s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(HANG)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cases(doc: Any, attempt: Callable[[str, str], None]) -> int:
    """Run `attempt(label, text)` on every case; collect every failure and report them together."""
    failures, n = [], 0
    for label, text in cases(doc):
        n += 1
        try:
            with bounded(label):
                attempt(label, text)
        except Exception as e:  # noqa: BLE001 - every case's failure is listed, not only the first
            failures.append(f"{label}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, f"{len(failures)} of {n} cases failed:\n" + "\n".join(failures[:40])
    return n


def documented(e: InputError, name: str) -> None:
    assert str(e).startswith(f"{name}: "), f"the error does not start with the file's name {name}: {e}"


def test_every_field_of_a_parameter_file(tmp_path):
    doc = json.loads(initial_params(Config(hidden=2)).to_json())

    def attempt(label: str, text: str) -> None:
        try:
            p = parse_params(text.encode(), source="p.json")
        except InputError as e:
            documented(e, "p.json")
            return
        assert p.W1.shape == (p.hidden, 784) and all(np.isfinite(a).all() for _, a in p.items())
    assert run_cases(doc, attempt) > 200


@pytest.mark.parametrize("form", ["entry", "command"])
def test_every_field_of_an_implementation_manifest(tmp_path, form):
    impl = tmp_path / "impl"
    impl.mkdir()
    for name in ("mlp.py", "run", "mlp.cpp"):
        (impl / name).write_text("")
    doc = ({"name": "x", "entry": "mlp.py:run", "timeout": 30} if form == "entry" else
           {"name": "c", "command": ["./run", "{job}", "{out}"], "build": ["g++", "-o", "{build}/mlp", "mlp.cpp"],
            "sources": ["mlp.cpp"], "timeout": 30})

    def attempt(label: str, text: str) -> None:
        (impl / "memstate-impl.json").write_text(text)
        try:
            code = load_implementation(impl)
        except InputError as e:
            documented(e, str(impl / "memstate-impl.json"))
            return
        assert code.timeout is None or (math.isfinite(code.timeout) and code.timeout > 0), label
        assert (code.entry is None) != (code.command is None)
    run_cases(doc, attempt)


def same_records(a: Memstate, b: Memstate) -> bool:
    """Every unit, name, dtype, shape and bit equal."""
    if a.units != b.units:
        return False
    for u in a.units:
        if sorted(a.names(u)) != sorted(b.names(u)):
            return False
        for n in a.names(u):
            x, y = np.asarray(a.get(u, n)), np.asarray(b.get(u, n))
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
    return True


def never_agree_unless_same(original: Memstate, changed: Memstate, label: str) -> None:
    """A memstate that reads back different from the original never compares as agree."""
    c = compare_memstates(original, changed)
    format_text(c)
    if c.verdict == "agree" and c.exit_code == 0:
        assert changed.status == "complete" and not changed.damaged, f"{label}: {changed.status} read as agree"
        assert same_records(original, changed), f"{label}: changed records read as agree"


def test_every_field_of_a_memstate_manifest(tmp_path, numpy_memstate):
    original = Memstate(numpy_memstate)
    work = tmp_path / "m"
    shutil.copytree(numpy_memstate, work)
    doc = json.loads((numpy_memstate / "manifest.json").read_text())

    def attempt(label: str, text: str) -> None:
        (work / "manifest.json").write_text(text)
        try:
            m = Memstate(work)
        except InputError as e:
            documented(e, str(work / "manifest.json"))
            return
        never_agree_unless_same(original, m, label)
    run_cases(doc, attempt)


def read_step(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_every_field_of_a_step_header(tmp_path, numpy_memstate):
    original = Memstate(numpy_memstate)
    work = tmp_path / "m"
    shutil.copytree(numpy_memstate, work)
    step = work / "step-000001.safetensors"
    header, data = read_step(step)
    small = {k: v for k, v in header.items() if k in ("__metadata__", "hidden/bias", "input/y", "loss/value")}
    rest = {k: v for k, v in header.items() if k not in small}

    def attempt(label: str, text: str) -> None:
        mutated = json.loads(text)
        mutated.update({k: v for k, v in rest.items() if k not in mutated})  # fuzz a few entries, keep the rest
        blob = json.dumps(mutated).encode()
        step.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
        m = Memstate(work)  # never raises for a bad step file: the memstate is damaged from there on
        if m.damaged:
            assert m.damaged.startswith(str(work)), m.damaged
        never_agree_unless_same(original, m, label)
    run_cases(small, attempt)


def test_every_field_of_every_json_lines_kind(tmp_path, numpy_memstate):
    original = Memstate(numpy_memstate)
    files = {}
    for form, binary in (("text", False), ("base64", True)):  # a record's values as numbers, or as their bytes
        write_jsonl(original, tmp_path / f"{form}.jsonl", binary=binary)
        files[form] = (tmp_path / f"{form}.jsonl").read_text().splitlines()
    lines = files["text"]
    records = [i for i, line in enumerate(lines) if '"name"' in line]
    kinds = {"header": ("text", 0), "record": ("text", records[0]), "step record": ("text", records[-1]),
             "base64 record": ("base64", records[1]), "end": ("text", len(lines) - 1)}
    n = 0
    for kind, (form, index) in kinds.items():
        lines = files[form]
        doc = json.loads(lines[index])
        if "data" in doc:
            doc["data"] = doc["data"][:3] if len(doc["data"]) > 3 else doc["data"]
            doc["shape"] = [len(doc["data"])] if len(doc["data"]) != math.prod(doc["shape"]) else doc["shape"]
            fixed = json.dumps(doc)
        else:
            fixed = lines[index]

        def attempt(label: str, text: str, index: int = index, lines: list[str] = lines) -> None:
            target = tmp_path / f"c{attempt.count}.jsonl"
            attempt.count += 1
            target.write_text("\n".join(lines[:index] + [text] + lines[index + 1:]) + "\n")
            m = convert_jsonl(target, target.with_suffix(""))  # never raises: a bad line ends the memstate
            assert m.status in ("complete", "stopped", "damaged"), (label, m.status)
            if m.status == "stopped" and kind != "end":
                assert str(m.manifest["stopped"]["error"]).startswith(f"{target}: "), m.manifest["stopped"]
            never_agree_unless_same(original, m, f"{kind} {label}")
            shutil.rmtree(target.with_suffix(""))
            target.unlink()
        attempt.count = 0  # type: ignore[attr-defined]
        n += run_cases(json.loads(fixed), attempt)
    assert n > 120


def test_every_field_of_a_legacy_dump(tmp_path):
    rng = np.random.default_rng(0)
    h, m = 3, 2
    X = rng.integers(0, 256, (784, m)) / 255.0
    W1, b1 = rng.normal(0, 0.05, (h, 784)), np.zeros((h, 1))
    W2, b2 = rng.normal(0, 0.05, (10, h)), np.zeros((10, 1))
    Z1 = W1 @ X + b1
    A1 = np.maximum(Z1, 0)
    Z2 = W2 @ A1 + b2
    A2 = np.exp(Z2) / np.exp(Z2).sum(axis=0)
    dump = {k: v.tolist() for k, v in dict(X=X, Z1=Z1, A1=A1, Z2=Z2, A2=A2, W1=W1, b1=b1, W2=W2, b2=b2).items()}
    dump["Y"] = [3, 7]
    source = tmp_path / "d.json"
    source.write_text(json.dumps(dump))
    convert_legacy(source, tmp_path / "valid")  # the unmutated dump loads

    def attempt(label: str, text: str) -> None:
        source.write_text(text)
        target = tmp_path / "m"
        try:
            convert_legacy(source, target)
        except InputError as e:
            documented(e, str(source))
        finally:
            shutil.rmtree(target, ignore_errors=True)
    assert run_cases(dump, attempt) > 100

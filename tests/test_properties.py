"""Property-based tests: whatever bytes a user hands a reader, it loads them or raises the
documented InputError, never another exception; and the comparator survives any values.

Hypothesis shrinks a failure to its smallest input and prints it; @example pins the inputs
that once broke a reader.
"""

import base64
import json
import math
import struct
import warnings

import numpy as np
import pytest
from conftest import IMPLS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness.compare.stream import compare_memstates
from harness.judge.record import Tolerance, compare_record
from harness.report.text import format_text
from harness.spec.config import Config
from harness.spec.data import load_mnist, read_idx
from harness.errors import InputError
from harness.run.job import prepare_job
from harness.store.jsonl import convert_jsonl
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.params import Params, initial_params, parse_params
from harness.run.runner import load_implementation, run_implementation

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6),
    max_leaves=30)


def small_params(h: int = 1) -> dict:
    return json.loads(initial_params(Config(hidden=h)).to_json())


def mutations() -> st.SearchStrategy[bytes]:
    """A valid memstate-params/1 file (H=1) with one field replaced by any JSON value."""
    paths = [("format",), ("tensors",), ("tensors", "W1"), ("tensors", "b1", "shape"), ("tensors", "W2", "data"),
             ("tensors", "b2", "data", 3), ("tensors", "W1", "shape", 0), ("tensors", "extra")]

    def build(path, value):
        doc = small_params()
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return json.dumps(doc).encode()
    return st.builds(build, st.sampled_from(paths), json_values)


def legacy_mutations() -> st.SearchStrategy[bytes]:
    """The legacy layout (lowercase keys, lists of rows, bias columns) with sizes made inconsistent."""
    def build(w1_rows, w1_cols, b1_rows, w2_cols, b2_shape, drop):
        doc = {"w1": [[0.1] * w1_cols for _ in range(w1_rows)], "b1": [[0.0] for _ in range(b1_rows)],
               "w2": [[0.2] * w2_cols for _ in range(10)], "b2": [[0.0] * b2_shape[1] for _ in range(b2_shape[0])]}
        if drop:
            doc.pop(drop)
        return json.dumps(doc).encode()
    return st.builds(build, st.integers(0, 3), st.sampled_from([783, 784, 785]), st.integers(0, 3),
                     st.integers(0, 3), st.tuples(st.integers(0, 11), st.integers(0, 2)),
                     st.sampled_from([None, None, "w1", "b2"]))


@FAST
@given(st.binary(max_size=200) | mutations() | legacy_mutations() | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 100_000)  # deeper than Python's recursion limit
@example(b'{"format": "memstate-params/1", "tensors": {"W1": {"shape": [0, 784], "data": []}}}')
@example(json.dumps({**small_params(), "tensors": {**small_params()["tensors"],
                                                   "b2": {"shape": [10], "data": [10**400] * 10}}}).encode())
def test_parameter_reader_loads_or_says_what_is_wrong(data):
    try:
        p = parse_params(data, source="p.json")
    except InputError as e:
        assert str(e).startswith("p.json: ")
        return
    assert isinstance(p, Params) and p.hidden >= 1
    assert p.W1.shape == (p.hidden, 784) and p.W2.shape == (10, p.hidden)
    assert all(np.isfinite(a).all() for _, a in p.items())


def idx_files() -> st.SearchStrategy[bytes]:
    """Byte strings near the IDX layout: a plausible header and some payload, any of it wrong."""
    return st.builds(lambda code, dims, shape, payload: bytes([0, 0, code, dims]) + struct.pack(f">{len(shape)}I", *shape)
                     + payload,
                     st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]), st.integers(0, 4),
                     st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), max_size=4), st.binary(max_size=64))


@FAST
@given(data=st.binary(max_size=300) | idx_files(), gz=st.booleans(), ndim=st.sampled_from([None, 1, 3]))
@example(data=b"\x00\x00\x08\x03" + struct.pack(">3I", 2**31, 2**31, 4), gz=False, ndim=3)  # 2^64 bytes claimed
@example(data=b"\x1f\x8b\x08\x00garbage", gz=True, ndim=None)
@example(data=b"\x00\x00\x08\x04" + struct.pack(">4I", 0, 2**31, 2**31, 2**31), gz=False, ndim=None)  # empty, huge
def test_idx_reader_loads_or_says_what_is_wrong(tmp_path, data, gz, ndim):
    path = tmp_path / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
    path.write_bytes(data)
    try:
        arr = read_idx(path, ndim=ndim)
    except InputError as e:
        assert str(e).startswith(str(path))
        return
    assert ndim is None or arr.ndim == ndim
    assert 4 + 4 * arr.ndim + arr.nbytes == len(data)


record_lines = st.fixed_dictionaries(
    {"step": st.sampled_from(["load", 0, 1, -1, 2**70, "x", None, True]),
     "name": st.sampled_from(["input/x", "hidden/matmul", "", 7, "../../etc/passwd"]),
     "dtype": st.sampled_from(["float32", "float64", "int8", "uint8", "bool", "int64", "complex64", None]),
     "shape": st.lists(st.integers(-1, 4), max_size=3) | st.just("3"),
     "data": json_values | st.lists(st.floats() | st.integers(-10**40, 10**40) | st.sampled_from(
         ["NaN", "Infinity", "-inf", None, "1"]), max_size=8)})
base64_lines = st.fixed_dictionaries(  # the values' bytes: any bytes, as base64 or not quite
    {"step": st.sampled_from(["load", 0, 1]), "name": st.sampled_from(["input/x", "hidden/matmul"]),
     "dtype": st.sampled_from(["float32", "float64", "float16", "int8", "uint8", "bool", "int64"]),
     "shape": st.lists(st.integers(0, 4), max_size=3),
     "base64": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=12) | json_values},
    optional={"data": json_values})
header_lines = st.fixed_dictionaries({"memstate": st.sampled_from(["jsonl/1", "jsonl/2", 1])},
                                     optional={"implementation": json_values, "device": json_values,
                                               "versions": json_values, "config": json_values})
end_lines = st.fixed_dictionaries({"end": json_values}, optional={"error": json_values})


@FAST
@given(st.lists(st.one_of(header_lines.map(json.dumps), record_lines.map(json.dumps), base64_lines.map(json.dumps),
                          end_lines.map(json.dumps),
                          json_values.map(json.dumps), st.text(max_size=20)), max_size=8),
       st.binary(max_size=40))
@example(['{"memstate": "jsonl/1", "versions": [1, 2]}', '{"end": "complete"}'], b"")
@example(['{"step": 0, "name": "a", "dtype": "int8", "shape": [1], "data": [300]}'], b"")
@example(["[" * 100_000], b"")
@example(['{"step": 0, "name": "x", "dtype": "bool", "shape": [2], "base64": "AAE="}', '{"end": "complete"}'], b"")
@example(['{"step": "load", "name": "input/x", "dtype": "float32", "shape": [0, 0], "data": []}'], b"")  # found in CI
def test_json_lines_reader_keeps_what_it_can_and_says_why_it_stopped(tmp_path_factory, lines, tail):
    tmp = tmp_path_factory.mktemp("jsonl")
    src = tmp / "side.jsonl"
    src.write_bytes("\n".join(lines).encode() + b"\n" + tail)
    m = convert_jsonl(src, tmp / "ms")  # never raises: a bad line ends the memstate, named in its manifest
    assert m.status in ("complete", "stopped", "damaged")
    if m.status == "stopped":  # the reader's own reason names the file; an end line gives the program's
        err = m.manifest["stopped"]["error"]
        assert isinstance(err, str) and (err.startswith(f"{src}: ") or any('"end"' in line for line in lines)), err
    if m.status == "damaged":  # lines past the end line: the file contradicts itself
        assert m.damaged.startswith(f"{src}: line ") and "more lines after the end line" in m.damaged, m.damaged
    again = Memstate(tmp / "ms")  # and what it wrote reads back, as it was
    assert again.units == m.units and again.damaged == m.damaged


SPECIAL = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-310, 1e-45, 1.4e-45, 3.4e38, -3.4e38, 1e300, -1e300,
           1.0, -1.0]
special = st.sampled_from(SPECIAL)
floats64 = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True) | special


@FAST
@given(st.sampled_from(["float32", "float64"]), st.data())
def test_record_comparison_survives_any_values(dtype, data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=5))
    width = 32 if dtype == "float32" else 64
    fits = [v for v in SPECIAL if width == 64 or not math.isfinite(v) or abs(v) < 3.4e38]
    elements = st.floats(width=width) | st.sampled_from([float(np.array(v, dtype)) for v in fits])
    a = data.draw(hnp.arrays(dtype, shape, elements=elements))
    b = data.draw(hnp.arrays(dtype, shape, elements=elements) | st.just(a.copy()))
    mode = data.draw(st.sampled_from(["noise", "fixed", "exact"]))
    tol = Tolerance(dtype, *(0.0, 0.0) if mode == "exact" else (1e-4, 1e-5), "fixed")
    allowed = data.draw(st.none() | hnp.arrays(np.float64, shape, elements=floats64)) if mode == "noise" else None
    with np.errstate(all="raise", under="ignore"):  # no warnings: every special value is handled on purpose
        diff = compare_record(0, "hidden/matmul", a, b, tol, allowed=allowed)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        assert diff, diff
    nan_vs_number = np.isnan(a) != np.isnan(b)
    if nan_vs_number.any():
        assert not diff and diff.n_over >= int(nan_vs_number.sum())
    assert diff.n_over <= diff.size == a.size


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A real numpy run (H=4, batch 2, 2 steps) whose records the comparator property perturbs."""
    root = tmp_path_factory.mktemp("base")
    config = Config(hidden=4, batch_size=2, steps=2)
    job = prepare_job(root / "job", config, initial_params(config), load_mnist())
    result = run_implementation(load_implementation(IMPLS / "numpy"), job, root / "a")
    assert result, result.error
    return Memstate(root / "a")


@SLOW
@given(st.data())
def test_memstate_comparison_survives_special_values_anywhere(tmp_path_factory, base_run, data):
    """Replace a few elements of a few records of a real run with NaN, Inf, zeros, subnormals and
    huge values: the whole comparison (noise model, causal classification, text, JSON) completes,
    and a NaN against a number is always a divergence."""
    keys = [(u, n) for u in base_run.units for n, a in base_run.unit(u).items() if a.dtype.kind == "f"]
    picks = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    tmp = tmp_path_factory.mktemp("b")
    writer = MemstateWriter(tmp / "b", {k: v for k, v in base_run.manifest.items()
                                        if k in ("implementation", "config", "dtype", "params_sha256")})
    changed = {}
    for u in base_run.units:
        for n, a in base_run.unit(u).items():
            a = np.array(a)
            if (u, n) in picks and a.size:
                flat = a.reshape(-1)
                for i in data.draw(st.lists(st.integers(0, a.size - 1), min_size=1, max_size=4)):
                    with np.errstate(over="ignore"):
                        flat[i] = data.draw(special)
                changed[(u, n)] = a
            writer(u, n, a)
    writer.close("complete")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing printed to the user's terminal either
        c = compare_memstates(base_run, Memstate(tmp / "b"))
    assert c.verdict in ("agree", "drift", "diverged")
    json.dumps(c.to_dict(), default=str)
    format_text(c)
    for (u, n), a in changed.items():
        ref = np.asarray(base_run.get(u, n))
        if (np.isnan(a) != np.isnan(ref)).any():
            rec = next(r for r in c.records if (r.step, r.name) == (u, n))
            assert not rec, f"{u} {n}: a NaN against a number passed"


def safetensors_files() -> st.SearchStrategy[bytes]:
    """A header length, a JSON header (any values where dtype, shape and offsets belong) and data."""
    entry = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F64", "I64", "U8", "BF16", 3]),
                                   "shape": st.lists(st.integers(-2, 2**62), max_size=3) | json_values,
                                   "data_offsets": st.lists(st.integers(-8, 64), min_size=0, max_size=3)})
    header = st.dictionaries(st.text(max_size=6), entry | json_values, max_size=3).map(json.dumps)
    return st.builds(lambda h, pad, data: struct.pack("<Q", len(h.encode()) + pad) + h.encode() + b" " * pad + data,
                     header, st.integers(0, 3), st.binary(max_size=64)) | st.binary(max_size=80)


WRAPS = json.dumps({"x": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}).encode()  # 2^64 * 4 bytes
INFINITE = json.dumps({"x": {"dtype": "F32", "shape": [math.inf], "data_offsets": [0, 4]}}).encode()  # found in CI
EMPTY_HUGE = json.dumps({"x": {"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}}).encode()
NEGATIVE = json.dumps({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [4, 0]}}).encode()


@FAST
@given(blob=safetensors_files())
@example(blob=struct.pack("<Q", 2) + b"{}")
@example(blob=struct.pack("<Q", len(WRAPS)) + WRAPS)
@example(blob=struct.pack("<Q", len(INFINITE)) + INFINITE)
@example(blob=struct.pack("<Q", len(NEGATIVE)) + NEGATIVE + bytes(4))
@example(blob=struct.pack("<Q", len(EMPTY_HUGE)) + EMPTY_HUGE)
def test_step_file_reader_reads_or_marks_the_memstate_damaged(tmp_path_factory, blob):
    d = tmp_path_factory.mktemp("st")
    (d / "manifest.json").write_text(json.dumps({"format": "memstate/1", "status": "complete", "units": [0]}))
    (d / "step-000000.safetensors").write_bytes(blob)
    m = Memstate(d)  # never raises for a bad step file: the memstate ends before it
    if m.damaged:
        assert m.units == [] and m.damaged.startswith(str(d))
    else:
        for name, a in m.unit(0).items():
            assert a.nbytes == m._open[0].entries[name][3] - m._open[0].entries[name][2]

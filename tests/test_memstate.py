import base64
import errno
import json
import mmap
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from safetensors.numpy import load, load_file

from harness.errors import InputError
from harness.store import format as format_module
from harness.store.background import DEPTH, BackgroundWriter
from harness.store.format import WriteError, safetensors_file, step_file, unit_file
from harness.store.jsonl import convert_jsonl, write_jsonl
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter


def small_memstate(path, steps=3, config_steps=None):
    w = MemstateWriter(path, {"implementation": {"name": "t"}, "config": {"hidden": 2, "dtype": "float32",
                                                                          "steps": config_steps or steps}})
    w.describe(device="cpu", numpy=np.__version__)
    w("load", "hidden/weight", np.arange(2 * 784, dtype=np.float32).reshape(2, 784))
    for s in range(steps):
        w(s, "input/y", np.array([s, 1], dtype=np.int64))
        w(s, "loss/value", np.float32(0.5 + s))
        w(s, "hidden/weight", np.full((2, 784), s, dtype=np.float32))
    return w


def test_round_trip_keeps_order_dtype_and_values(tmp_path):
    small_memstate(tmp_path / "m").close()
    m = Memstate(tmp_path / "m")
    assert m.status == "complete" and m.units == ["load", 0, 1, 2]
    assert list(m.unit(1)) == ["input/y", "loss/value", "hidden/weight"]  # written order, not sorted
    assert m.get(2, "loss/value").shape == () and m.get(2, "loss/value").dtype == np.float32
    assert float(m.get(2, "loss/value")) == 2.5
    weight, root = m.get("load", "hidden/weight"), m.get("load", "hidden/weight")
    while isinstance(root, np.ndarray):  # memory-mapped, not read: the array's memory is the file's map
        root = root.base
    assert isinstance(root, mmap.mmap) and type(weight) is np.ndarray  # a plain array (a memmap's views cost more)
    assert m.manifest["runtime"]["device"] == "cpu"
    # the files are plain safetensors: the reference library reads them too
    ref = load_file(str(tmp_path / "m" / "step-000001.safetensors"))
    assert np.array_equal(ref["input/y"], [1, 1])


def test_unfinished_run_keeps_finished_steps(tmp_path):
    w = small_memstate(tmp_path / "m", config_steps=5)
    w(3, "input/y", np.array([0, 0]))
    w.close("stopped", error="boom")
    m = Memstate(tmp_path / "m")
    assert m.status == "stopped" and m.units[-1] == 3
    assert m.manifest["stopped"]["partial_step"] == 3
    assert "stopped after step 3: boom" == m.stop_summary()


def test_killed_writer_leaves_every_finished_step(tmp_path):
    code = (
        "import numpy as np, os, sys\n"
        "from harness.store.memstate import MemstateWriter\n"
        "w = MemstateWriter(sys.argv[1], {})\n"
        "for s in range(100):\n"
        "    w(s, 'x', np.full(1000, s, np.float32))\n"
        "    if s == 7: os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], check=False)
    m = Memstate(tmp_path / "m")
    assert m.status == "running"  # nobody closed it
    # steps 0..6 were handed to the writer thread; the kill may catch the last DEPTH of them queued and one
    # being written (left as a .tmp file, never as a step): what is there is whole, from step 0 on
    assert m.units == list(range(len(m.units))) and len(m.units) >= 7 - DEPTH - 1
    assert all(float(m.get(s, "x")[0]) == s for s in m.units)
    assert len(list((tmp_path / "m").glob("*.tmp"))) <= 1 and not m.unlisted


def test_the_writer_thread_writes_what_the_recording_thread_would_and_owns_its_copies(tmp_path):
    """Steps written while the next computes are the same bytes as steps written there and then, even when
    the implementation reuses its arrays in place the moment record() returns (a copy per record)."""
    for overlap in (True, False):
        w = MemstateWriter(tmp_path / str(overlap), {}, overlap=overlap)
        buffer = np.zeros((64, 128), np.float32)
        big = np.zeros(300_000, np.float64)
        for s in range(12):
            buffer[:] = s  # (64, 128), written over in place every step
            big[:] = -s
            w(s, "x", buffer)
            w(s, "y", big[::2])  # not contiguous
            w(s, "z", np.zeros((0, 3), np.float32))  # empty
        w.close()
    for s in range(12):
        unit = unit_file(s)
        assert (tmp_path / "True" / unit).read_bytes() == (tmp_path / "False" / unit).read_bytes()
        m = Memstate(tmp_path / "True")
        assert float(m.get(s, "x")[5, 5]) == s and float(m.get(s, "y")[-1]) == -s and m.get(s, "z").shape == (0, 3)


def test_a_write_that_raises_what_is_no_oserror_stops_the_writing_and_never_the_recording_thread(tmp_path):
    """A failure of any kind on the writer thread is kept and raised at the next boundary: had the thread died
    of it, the recording thread would wait forever once DEPTH steps were queued."""
    writer = BackgroundWriter()
    done = []

    def broken() -> None:
        raise ValueError("a bug in the write")

    def record() -> None:  # more steps than the queue holds
        writer.put(0, "step-000000.safetensors", lambda: done.append(0))
        writer.put(1, "step-000001.safetensors", broken)
        for step in range(2, 4 + 2 * DEPTH):
            writer.put(step, f"step-{step:06d}.safetensors", lambda s=step: done.append(s))
        writer.stop()
    recording = threading.Thread(target=record, daemon=True)
    recording.start()
    recording.join(timeout=60)
    assert not recording.is_alive(), "the recording thread waits on a writer thread that is gone"
    path, error = writer.failure
    assert (path, str(error), done, writer.written) == ("step-000001.safetensors", "a bug in the write", [0], [0])
    m = MemstateWriter(tmp_path / "m", {})
    m._background = writer  # the failure as the recording thread meets it at its next step
    m(0, "x", np.zeros(3, np.float32))
    with pytest.raises(WriteError, match=r"ValueError: a bug in the write: 'step-000001.safetensors'"):
        m(1, "x", np.zeros(3, np.float32))


@pytest.mark.parametrize("calls, message", [
    ([(0, "a"), (0, "a")], "record 'a' written twice"),
    ([(1, "a"), (0, "a")], "step 0 comes after step 1"),
    ([(0, "a"), ("load", "a")], "load comes after step 0"),
    ([(-1, "a")], "step must be 'load' or a non-negative integer"),
    ([(5, "a"), (5.0, "b")], "step must be 'load' or a non-negative integer"),
    ([(0, "a"), (0, 5)], "record name must be a non-empty string, got 5"),
    ([(0, "a"), (0, ["b"])], "record name must be a non-empty string"),
    ([(0, "a"), (0, "")], "record name must be a non-empty string"),
])
def test_writer_rejects_out_of_order_records(tmp_path, calls, message):
    w = MemstateWriter(tmp_path / "m", {})
    with pytest.raises(ValueError, match=message):
        for step, name in calls:
            w(step, name, np.zeros(2, np.float32))


@pytest.mark.parametrize("calls, message", [
    ([(0, "a"), (1, "a"), (0, "b")], "step 0 comes after step 1"),
    ([(3, "a"), ("load", "a")], "load comes after step 3"),
])
def test_steps_that_keep_only_summaries_are_still_checked_for_order(tmp_path, calls, message):
    """In summary capture most steps write no file of their own; their order is checked all the same."""
    w = MemstateWriter(tmp_path / "m", {"capture": {"mode": "summary", "full_steps": [], "checkpoint_every": 0}})
    with pytest.raises(ValueError, match=message):
        for step, name in calls:
            w(step, name, np.zeros(2, np.float32))


@pytest.mark.parametrize("layout", [
    [("b", np.float32, (3, 2)), ("a", np.float64, (2,)), ("z", np.int64, ()), ("e", np.float32, (0, 3)),
     ("m", np.bool_, (4,)), ("h", np.float16, (5,))],
    [("x\x00step\x00y", np.float32, (2,)), ("b", np.float32, (1,))],  # a name that holds the header's step mark
    [("hidden/gewicht-ü", np.uint8, (7,))],
], ids=["dtypes-and-shapes", "the-step-mark-in-a-name", "unicode"])
def test_a_step_file_from_its_cached_header_is_what_safetensors_writes(layout):
    """Steps of one layout share a header built once, with their own number put in; each is byte for byte the
    file built whole, and safetensors reads it back."""
    rng = np.random.default_rng(0)
    for step in (0, 9, 123456, "load", 10):  # 10 after 9: a wider number in a layout cached already
        tensors = {name: np.asarray(rng.standard_normal(shape) * 9).astype(dtype) for name, dtype, shape in layout}
        entries = [(name, np.dtype(dtype), shape, memoryview(np.ascontiguousarray(tensors[name]).reshape(-1)).cast("B")
                    if tensors[name].size else memoryview(b"")) for name, dtype, shape in layout]
        ours = b"".join(bytes(part) for part in step_file(step, entries))
        metadata = {"step": str(step), "order": json.dumps([name for name, *_ in layout])}
        assert ours == b"".join(bytes(part) for part in safetensors_file(entries, metadata))
        back = load(ours)
        assert all(np.array_equal(back[name], tensors[name]) and back[name].dtype == tensors[name].dtype
                   for name in tensors)


def test_a_write_cut_short_leaves_no_file_under_either_name(tmp_path):
    """A file size limit (RLIMIT_FSIZE) stops the write part-way, as a disk that fills up does: the parts are
    written with writev until the kernel refuses, then the error is raised and nothing is left behind."""
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from harness.store.format import _write_then_rename\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))\n"
        "parts = [b'h' * 10, memoryview(bytes(4000)), memoryview(bytes(4000))]\n"
        "_write_then_rename(Path(sys.argv[1]) / 'small', [parts[0]])\n"
        "try:\n"
        "    _write_then_rename(Path(sys.argv[1]) / 'big', parts)\n"
        "except OSError as e:\n"
        "    print('raised', e.errno)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False,
                       timeout=60)
    assert r.stdout.split() == ["raised", str(errno.EFBIG)], r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"] and (tmp_path / "small").read_bytes() == b"h" * 10


def test_a_step_of_more_records_than_one_writev_takes_is_written_whole(tmp_path):
    """writev takes at most IOV_MAX parts (1024 on Linux): a step of 3000 records goes in several calls."""
    w = MemstateWriter(tmp_path / "m", {})
    for i in range(3000):
        w(0, f"r{i:04d}", np.full(i % 3, i, np.float32))  # some empty: no part of their own
    w.close()
    unit = (tmp_path / "m" / unit_file(0)).read_bytes()
    entries = [(f"r{i:04d}", np.dtype(np.float32), (i % 3,), memoryview(np.full(i % 3, i, np.float32)).cast("B"))
               for i in range(3000)]
    assert unit == b"".join(bytes(part) for part in safetensors_file(entries, {"step": "0", "order": json.dumps(
        [e[0] for e in entries])}))
    assert float(Memstate(tmp_path / "m").get(0, "r2999")[1]) == 2999


def test_writer_refuses_to_overwrite(tmp_path):
    small_memstate(tmp_path / "m").close()
    with pytest.raises(InputError, match="not empty; refusing to overwrite"):
        MemstateWriter(tmp_path / "m", {})


def test_a_damaged_or_missing_step_file_ends_the_memstate_before_it(tmp_path):
    """A damaged unit is named, and every unit before it stays readable: nothing written is lost."""
    small_memstate(tmp_path / "m").close()
    path = tmp_path / "m" / "step-000001.safetensors"
    path.write_bytes(path.read_bytes()[:-3])
    m = Memstate(tmp_path / "m")
    assert m.units == ["load", 0] and m.status == "damaged"
    assert re.search(r"step-000001.safetensors: record '[a-z/_]+': data offsets .* \(truncated\?\)", m.damaged)
    assert m.stop_summary().startswith("damaged after step 0: ")
    assert float(m.get(0, "loss/value")) == 0.5
    path.unlink()
    m = Memstate(tmp_path / "m")
    assert m.units == ["load", 0]
    assert m.damaged.endswith("manifest.json: lists step 1 but step-000001.safetensors is missing")


def test_step_files_the_manifest_does_not_list_are_found_not_read(tmp_path):
    small_memstate(tmp_path / "m", steps=2).close()
    (tmp_path / "m" / "step-000001.safetensors").rename(tmp_path / "m" / "step-000005.safetensors")
    m = Memstate(tmp_path / "m")
    assert m.unlisted == [5] and m.units == ["load", 0]
    assert m.damaged.endswith("lists step 1 but step-000001.safetensors is missing")


def test_jsonl_round_trip(tmp_path):
    small_memstate(tmp_path / "m").close()
    write_jsonl(Memstate(tmp_path / "m"), tmp_path / "m.jsonl")
    back = convert_jsonl(tmp_path / "m.jsonl", tmp_path / "back")
    assert back.status == "complete" and back.units == ["load", 0, 1, 2]
    assert back.name == "t" and back.config == {"hidden": 2, "dtype": "float32", "steps": 3}
    assert back.manifest["runtime"]["device"] == "cpu"
    for step in back.units:
        for name, arr in Memstate(tmp_path / "m").unit(step).items():
            got = back.get(step, name)
            assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)


def test_jsonl_base64_round_trip_every_dtype_bit_for_bit(tmp_path):
    """`base64` holds the same values as `data`: every record dtype, NaN payloads, -0, subnormals and
    a scalar, read back bit for bit, and the file written with it is less than half the size."""
    rng = np.random.default_rng(1)
    floats = np.array([0.0, -0.0, np.nan, -np.inf, np.inf, 1e-45, 3.4e38, 1 / 3], dtype=np.float32)
    floats[2] = np.frombuffer(b"\x01\x00\xc0\x7f", dtype=np.float32)[0]  # a NaN with a payload
    arrays = {"f32": floats.reshape(2, 4), "f64": rng.standard_normal((3, 5)), "f16": np.float16([65504, 6e-8, -1]),
              "i64": np.array([-2**63, 2**63 - 1, 7]), "i32": np.int32([-5, 9]), "i16": np.int16([-300]),
              "i8": np.int8([-128, 127]), "u8": np.uint8([0, 255, 1]), "bool": np.array([True, False, True]),
              "scalar": np.float32(2.5).reshape(())}
    lines = [{"step": 0, "name": n, "dtype": a.dtype.name, "shape": list(a.shape),
              "base64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}
             for n, a in arrays.items()]
    write_lines(tmp_path / "a.jsonl", [*lines, {"end": "complete"}])
    m = convert_jsonl(tmp_path / "a.jsonl", tmp_path / "a")
    assert m.status == "complete", m.manifest.get("stopped")
    for n, a in arrays.items():
        got = m.get(0, n)
        assert got.dtype == a.dtype and got.shape == a.shape and got.tobytes() == a.tobytes(), n
    small_memstate(tmp_path / "m").close()
    write_jsonl(Memstate(tmp_path / "m"), tmp_path / "t.jsonl")
    write_jsonl(Memstate(tmp_path / "m"), tmp_path / "b.jsonl", binary=True)
    assert '"base64": "' in (tmp_path / "b.jsonl").read_text() and '"data"' not in (tmp_path / "b.jsonl").read_text()
    text, binary = convert_jsonl(tmp_path / "t.jsonl", tmp_path / "t"), convert_jsonl(tmp_path / "b.jsonl", tmp_path / "b")
    assert binary.status == "complete" and binary.units == text.units
    for step in text.units:
        for name, arr in text.unit(step).items():
            assert binary.get(step, name).tobytes() == arr.tobytes() and binary.get(step, name).dtype == arr.dtype


B64 = {"step": 0, "name": "x", "dtype": "float32", "shape": [2]}  # 8 bytes: 12 characters of base64


@pytest.mark.parametrize("fields, message", [
    ({"base64": "AACAPwAAAEA=", "data": [1, 2]}, "record 'x': holds both 'data' and 'base64'; give its values once"),
    ({}, "record 'x': field 'data' is missing (or 'base64', the values' bytes)"),
    ({"base64": [1, 2]}, ("record 'x': field 'base64' must be a string (the values' little-endian bytes in base64), "
                          "got [1, 2]")),
    ({"base64": "AACAPwAAAEAAAIA/"}, ("record 'x': its shape holds 2 float32 values, 8 bytes: 12 characters of "
                                      "base64, and 'base64' has 16")),
    ({"base64": "AACAPwAAAE"}, "and 'base64' has 10"),
    ({"base64": "AACAPwAA AEA"}, "record 'x': field 'base64' is not base64 (A-Z a-z 0-9 + /, padded with =)"),
    ({"base64": "AACAPwAAAE\u00e9="}, "field 'base64' is not base64"),
    ({"base64": "AACAPwAAA==="}, "field 'base64' is not base64"),
    ({"base64": "AACAPwAAAE=="}, "record 'x': field 'base64' decodes to 7 bytes, its shape needs 8"),
    ({"base64": "AACAPwAAAEA=", "dtype": "bool", "shape": [8]},
     "record 'x': byte 2 of 'base64' is 128, expected 0 or 1 for dtype bool"),
    ({"base64": "AAAA", "dtype": "float64", "shape": [2**30, 2**30]},  # said from the length, nothing decoded
     "its shape holds 1152921504606846976 float64 values"),
])
def test_jsonl_bad_base64_names_line_and_field(tmp_path, fields, message):
    write_lines(tmp_path / "a.jsonl", [{"step": 0, "name": "ok", "dtype": "int8", "shape": [1], "base64": "AQ=="},
                                       {**B64, **fields}, {"end": "complete"}])
    m = convert_jsonl(tmp_path / "a.jsonl", tmp_path / "a")
    assert m.status == "stopped" and m.units == [0] and m.get(0, "ok").tolist() == [1]  # what came before is kept
    assert m.manifest["stopped"]["error"].startswith(f"{tmp_path / 'a.jsonl'}: line 2: ")
    assert message in m.manifest["stopped"]["error"], m.manifest["stopped"]["error"]


def write_lines(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))


def test_jsonl_special_values_and_the_null_trap(tmp_path):
    rec = {"step": 0, "name": "x", "dtype": "float32", "shape": [4], "data": ["NaN", "Infinity", "-Infinity", 1]}
    write_lines(tmp_path / "a.jsonl", [rec, '{"step": 0, "name": "y", "dtype": "float64", "shape": [], "data": NaN}',
                                       {"end": "complete"}])
    m = convert_jsonl(tmp_path / "a.jsonl", tmp_path / "a")
    x = m.get(0, "x")
    assert np.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf and x[3] == 1 and np.isnan(m.get(0, "y"))
    write_lines(tmp_path / "b.jsonl", [{**rec, "data": [1, None, 2, 3]}])
    m = convert_jsonl(tmp_path / "b.jsonl", tmp_path / "b")
    assert m.status == "stopped"
    assert "line 1: record 'x': data[1] is null" in m.manifest["stopped"]["error"]
    assert "JSON.stringify" in m.manifest["stopped"]["error"]


def test_jsonl_bad_line_keeps_what_came_before(tmp_path):
    ok = lambda s: {"step": s, "name": "x", "dtype": "float32", "shape": [2], "data": [s, s]}
    write_lines(tmp_path / "a.jsonl", [{"memstate": "jsonl/1", "implementation": "go", "device": "cpu"},
                                       ok(0), ok(1), ok(2), "this is not json", ok(3)])
    m = convert_jsonl(tmp_path / "a.jsonl", tmp_path / "a")
    assert m.units == [0, 1, 2] and m.status == "stopped" and m.name == "go"
    assert "a.jsonl: line 5: not valid JSON" in m.manifest["stopped"]["error"]
    write_lines(tmp_path / "b.jsonl", [ok(0), ok(1)])
    m = convert_jsonl(tmp_path / "b.jsonl", tmp_path / "b")
    assert m.units == [0, 1] and "without an end line" in m.manifest["stopped"]["error"]


@pytest.mark.parametrize("bad, message", [
    ({"step": "first", "name": "x", "dtype": "float32", "shape": [1], "data": [1]}, "field 'step'"),
    ({"step": 0, "name": "x", "dtype": "float16x", "shape": [1], "data": [1]}, "field 'dtype'"),
    ({"step": 0, "name": "x", "dtype": "float32", "shape": [2, 2], "data": [1]}, "shape [2, 2] needs 4 values"),
    ({"step": 0, "name": "x", "dtype": "int64", "shape": [1], "data": [1.5]}, "expected an integer"),
    ({"step": 0, "name": "x", "dtype": "float32", "shape": [1], "data": ["one"]}, "data[0] is 'one'"),
    ({"step": 0, "dtype": "float32", "shape": [1], "data": [1]}, "field 'name'"),
])
def test_jsonl_bad_record_names_line_and_field(tmp_path, bad, message):
    write_lines(tmp_path / "a.jsonl", [bad])
    m = convert_jsonl(tmp_path / "a.jsonl", tmp_path / "a")
    assert m.status == "stopped" and "line 1" in m.manifest["stopped"]["error"]
    assert message in m.manifest["stopped"]["error"]


def test_a_write_the_kernel_takes_in_part_goes_on_where_it_stopped(tmp_path, monkeypatch):
    """POSIX lets writev write fewer bytes than asked (a signal, a filling disk): write_all goes on from the
    byte it stopped at, inside a part or between two, whatever the parts' item size."""
    real = os.writev
    calls = []

    def at_most_seven(fd, views):
        calls.append(len(views))
        return real(fd, [bytes(views[0])[:7]])  # the kernel's short write: 7 bytes of the first part at most
    monkeypatch.setattr(format_module.os, "writev", at_most_seven)
    floats = np.arange(5, dtype=np.float32)  # a view of 4-byte items, not cast to bytes
    parts = [b"header-", memoryview(floats), b"", memoryview(bytes(range(20)))]
    with open(tmp_path / "f", "wb", buffering=0) as f:
        format_module.write_all(f, parts)
    assert (tmp_path / "f").read_bytes() == b"header-" + floats.tobytes() + bytes(range(20))
    assert len(calls) == 1 + 3 + 3  # 7 bytes, then 20 in 7s, then 20 in 7s


def test_no_write_hands_the_kernel_more_than_a_mebibyte(tmp_path, monkeypatch):
    """A write of 2 MiB or more gets 2 MiB page-cache pages, which a VM whose host takes back its free memory
    faults in afresh (format.WRITE_CHUNK): a 2.5 MiB part goes in pieces, small parts share a call."""
    real, sizes = os.writev, []

    def counted(fd, views):
        sizes.append(sum(memoryview(v).nbytes for v in views))
        return real(fd, views)
    monkeypatch.setattr(format_module.os, "writev", counted)
    big = np.arange(5 << 17, dtype=np.float32)  # 2.5 MiB
    parts = [b"head", memoryview(big), b"tail", b"end"]
    with open(tmp_path / "f", "wb", buffering=0) as f:
        format_module.write_all(f, parts)
    assert (tmp_path / "f").read_bytes() == b"head" + big.tobytes() + b"tailend"
    assert max(sizes) <= 1 << 20 and sum(sizes) == big.nbytes + 11, sizes
    assert len(sizes) == 4  # head; a MiB; a MiB; the last half MiB with tail and end

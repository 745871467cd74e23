"""The table of bad inputs: each case is built from a real file or run, given to the command
line (`harness.compare.main`, the code `python -m harness.compare` runs), and checked for its
exact exit code and message. docs/errors.md is this table in words.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS

from harness.compare.cli import main
from harness.spec.config import Config
from harness.spec.data import BUNDLED
from harness.store.jsonl import write_jsonl
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.params import initial_params

SMALL = ["--hidden", "4", "--batch-size", "8", "--steps", "3", "--no-html"]


@dataclass
class Case:
    """Arguments built in a temporary directory, and what the user must see."""

    id: str
    build: Callable[[Path, Path], list[str]]  # (tmp, a complete numpy memstate) -> argv
    code: int
    stderr: str = ""  # a regular expression the error output must match
    stdout: str = ""  # and the normal output


def params_file(tmp: Path, edit: Callable[[dict], object], legacy: bool = False) -> Path:
    doc = json.loads(initial_params(Config(hidden=4)).to_json())
    if legacy:
        t = doc["tensors"]
        doc = {"w1": np.reshape(t["W1"]["data"], (4, 784)).tolist(), "b1": [[v] for v in t["b1"]["data"]],
               "w2": np.reshape(t["W2"]["data"], (10, 4)).tolist(), "b2": [[v] for v in t["b2"]["data"]]}
    text = edit(doc)
    path = tmp / "p.json"
    path.write_text(text if isinstance(text, str) else json.dumps(doc))
    return path


def with_params(edit, legacy=False):
    return lambda tmp, ms: [str(IMPLS / "numpy"), str(IMPLS / "numpy"), "--params", str(params_file(tmp, edit, legacy)), *SMALL,
                            "--out", str(tmp / "run")]


def mnist_dir(tmp: Path, name: str, data: bytes) -> Path:
    """The bundled subset with one of its four files replaced by `data` (written as `name`)."""
    d = tmp / "mnist"
    shutil.copytree(BUNDLED, d)
    for f in d.glob(name.removesuffix(".gz") + "*"):
        f.unlink()
    (d / name).write_bytes(data)
    return d


def idx(header: bytes, n: int) -> bytes:
    return header + bytes(n)


def with_data(name, data):
    return lambda tmp, ms: [str(IMPLS / "numpy"), str(IMPLS / "numpy"), "--data", str(mnist_dir(tmp, name, data)), *SMALL,
                            "--out", str(tmp / "run")]


def copy_of(ms: Path, tmp: Path, change: Callable[[Path], None]) -> Path:
    b = tmp / "b"
    shutil.copytree(ms, b)
    change(b)
    return b


def with_copy(change):
    return lambda tmp, ms: [str(ms), str(copy_of(ms, tmp, change)), "--no-html"]


def rewrite(ms: Path, edit: Callable[[int, dict[str, np.ndarray]], None], status: str = "complete") -> None:
    """Write memstate `ms` again with each step's records passed through `edit` (in place)."""
    src = Memstate(ms)
    units = {u: {n: np.array(a) for n, a in src.unit(u).items()} for u in src.units}
    manifest = {k: v for k, v in src.manifest.items() if k in ("implementation", "config", "dtype", "params_sha256")}
    shutil.rmtree(ms)
    w = MemstateWriter(ms, manifest)
    for u, records in units.items():
        edit(u, records)
        for n, a in records.items():
            w(u, n, a)
    w.close(status, error=None if status == "complete" else "planted: the process died")


def edit_step(step, fn):
    return lambda u, records: fn(records) if u == step else None


def symlinked_entry(tmp: Path) -> Path:
    """An entry file that is a symlink to a file outside the directory."""
    (tmp / "elsewhere.py").write_text("def run(job, record):\n    pass\n")
    d = impl_dir(tmp, json.loads(VALID))
    (d / "mlp.py").symlink_to(tmp / "elsewhere.py")
    return d


def under_a_file(tmp: Path) -> Path:
    (tmp / "f").write_text("")
    return tmp / "f" / "run"


def impl_dir_raw(tmp: Path, text: str) -> Path:
    d = tmp / "impl"
    d.mkdir()
    (d / "memstate-impl.json").write_text(text)
    return d


def impl_dir(tmp: Path, manifest: dict, files: dict[str, str] | None = None) -> Path:
    d = tmp / "impl"
    d.mkdir()
    (d / "memstate-impl.json").write_text(json.dumps(manifest))
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    return d


def with_impl(manifest, files=None, extra=()):
    return lambda tmp, ms: [str(IMPLS / "pure_python"), str(impl_dir(tmp, manifest, files)), *SMALL, *extra,
                            "--out", str(tmp / "run")]


def short_base64(tmp: Path, ms: Path) -> list[str]:
    """The run as JSON lines with `base64` values, step 1's input/x four characters short of its shape."""
    write_jsonl(Memstate(ms), tmp / "b.jsonl", binary=True)
    lines = (tmp / "b.jsonl").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith('{"step": 1, "name": "input/x"'))
    lines[i] = lines[i][:-len('XXXX"}')] + '"}'  # the base64's last 4 characters cut
    (tmp / "b.jsonl").write_text("\n".join(lines) + "\n")
    return [str(ms), str(tmp / "b.jsonl"), "--no-html", "--out", str(tmp / "run")]


GARBAGE_STDOUT = f"""
import os, sys
sys.stdout.buffer.write(bytes(range(256)) * 64)  # binary noise on stdout, then the real program
sys.stdout.flush()
os.execv(sys.executable, [sys.executable, {str(IMPLS / "pure_python" / "mlp.py")!r}, *sys.argv[1:]])
"""
VALID = '{"name": "x", "entry": "mlp.py:run"}'

CASES = [
    # parameter files: --params FILE
    Case("params-not-json", with_params(lambda d: "{'W1': [1, 2]}"), 2,
         r"p\.json: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"),
    Case("params-truncated", with_params(lambda d: json.dumps(d)[:5000]), 2, r"p\.json: not valid JSON: "),
    Case("params-missing-tensor", with_params(lambda d: d["tensors"].pop("b2")), 2,
         r"p\.json: missing tensor\(s\) b2; expected exactly W1, b1, W2, b2"),
    Case("params-extra-tensor", with_params(lambda d: d["tensors"].update(gamma=d["tensors"]["b2"])), 2,
         r"p\.json: unexpected tensor\(s\) gamma; expected exactly W1, b1, W2, b2"),
    Case("params-third-layer-half-given", with_params(lambda d: d["tensors"].update(W3=d["tensors"]["b2"])), 2,
         r"p\.json: missing tensor\(s\) b3; expected exactly W1, b1, W2, b2, W3, b3"),
    Case("params-wrong-shape", with_params(lambda d: d["tensors"]["W2"].update(shape=[4, 10])), 2,
         r"p\.json: tensor 'W2' has shape \(4, 10\), expected \(10, 4\)"),
    Case("params-not-a-number", with_params(lambda d: d["tensors"]["W1"]["data"].__setitem__(3, "0.5")), 2,
         r"p\.json: tensor 'W1': element 3 is '0\.5', expected a number"),
    Case("params-nan", with_params(lambda d: json.dumps(d).replace('"b1": {"shape": [4], "data": [0.0',
                                                                    '"b1": {"shape": [4], "data": [NaN')), 2,
         r"p\.json: tensor 'b1': element 0 is nan; parameters must be finite \(1 non-finite in all\)"),
    Case("params-infinity", with_params(lambda d: d["tensors"]["b2"]["data"].__setitem__(9, 1e999)), 2,
         r"tensor 'b2': element 9 is inf; parameters must be finite"),
    Case("params-huge-integer", with_params(lambda d: d["tensors"]["b2"]["data"].__setitem__(2, 10**400)), 2,
         r"tensor 'b2': element 2 is an integer too large for a float \(401 digits\)"),
    Case("legacy-inconsistent-sizes", with_params(lambda d: d["w2"].__setitem__(3, d["w2"][3] + [0.0]), True), 2,
         r"p\.json: legacy 'w2' has rows of different lengths \[4, 5\]"),
    Case("legacy-bias-too-long", with_params(lambda d: d["b1"].append([0.0]), True), 2,
         r"p\.json: tensor 'b1' has shape \(5,\), expected \(4,\)"),
    # MNIST IDX files: --data DIR
    Case("idx-wrong-magic", with_data("train-labels-idx1-ubyte", idx(b"\x08\x01\x00\x00" + struct.pack(">I", 10), 10)),
         2, r"train-labels-idx1-ubyte: bad IDX magic 08010000; expected 0000 then a type byte"),
    Case("idx-wrong-dimensions", with_data("t10k-labels-idx1-ubyte", idx(b"\0\0\x08\x02" + struct.pack(">2I", 5, 2), 10)),
         2, r"t10k-labels-idx1-ubyte: IDX file has 2 dimensions, expected 1"),
    Case("idx-truncated", with_data("train-images-idx3-ubyte", idx(b"\0\0\x08\x03" + struct.pack(">3I", 10, 28, 28), 7000)),
         2, r"train-images-idx3-ubyte: truncated: 7016 bytes, expected 7856 for shape 10x28x28 of uint8"),
    Case("idx-label-count", with_data("train-labels-idx1-ubyte.gz",
                                      gzip.compress(idx(b"\0\0\x08\x01" + struct.pack(">I", 4095), 4095))),
         2, r"mnist: 4096 train images but 4095 train labels"),
    Case("idx-gz-not-gzip", with_data("t10k-images-idx3-ubyte.gz", b"\0\0\x08\x03not gzip"), 2,
         r"t10k-images-idx3-ubyte\.gz: named \.gz but is not gzip \(first bytes 00000803, gzip starts 1f8b\)"),
    Case("idx-corrupt-gzip", with_data("t10k-images-idx3-ubyte.gz", gzip.compress(bytes(range(256)) * 40)[:200]), 2,
         r"t10k-images-idx3-ubyte\.gz: gzip data is corrupt or truncated"),
    # memstates: two directories
    Case("memstate-step-file-missing", with_copy(lambda b: (b / "step-000002.safetensors").unlink()), 2,
         r"error: B's memstate is damaged: .*/b/manifest\.json: lists step 2 but step-000002\.safetensors is missing; "
         r"the comparison above covers the 2 step\(s\) before it",
         r"verdict: DIVERGED at step 2, input/x \(stopped\): the first origin\n  B damaged after step 1: "),
    Case("memstate-step-file-truncated", with_copy(
        lambda b: (b / "step-000001.safetensors").write_bytes((b / "step-000001.safetensors").read_bytes()[:-100])), 2,
         r"error: B's memstate is damaged: .*/b/step-000001\.safetensors: record '.*': data offsets \d+\.\.\d+ do not "
         r"hold shape \[.*\] of float32 .* \(truncated\?\); the comparison above covers the 1 step\(s\) before it",
         r"verdict: DIVERGED at step 1, input/x \(stopped\)"),
    Case("memstate-header-garbage", with_copy(
        lambda b: (b / "step-000000.safetensors").write_bytes(struct.pack("<Q", 7) + b"{nope}x")), 2,
         r"step-000000\.safetensors: safetensors header is not valid JSON",
         r"verdict: DIVERGED at step 0, input/x \(stopped\)"),
    Case("memstate-unlisted-step-file", with_copy(
        lambda b: shutil.copy(b / "step-000002.safetensors", b / "step-000007.safetensors")), 0, "",
         r"note: B's directory holds step-000007\.safetensors, which its manifest does not list: not compared\n"
         r"(.|\n)*verdict: AGREE"),
    Case("memstate-manifest-not-json", with_copy(lambda b: (b / "manifest.json").write_text('{"format": ')), 2,
         r"b/manifest\.json: memstate manifest is not valid JSON"),
    Case("memstate-manifest-bad-units", with_copy(lambda b: (b / "manifest.json").write_text(json.dumps(
        {**json.loads((b / "manifest.json").read_text()), "units": ["load", "../../etc/passwd"]}))), 2,
         r"b/manifest\.json: field 'units' must list 'load' and non-negative step numbers"),
    Case("memstate-wrong-dtype", with_copy(lambda b: rewrite(b, edit_step(1, lambda r: r.update(
        {"hidden/activation": r["hidden/activation"].astype(np.int32)})))), 1, "",
         r"verdict: DIVERGED at step 1, hidden/activation \(values\): the first origin\n(.|\n)*"
         r"  A holds float32, B int32"),
    Case("memstate-wrong-shape", with_copy(lambda b: rewrite(b, edit_step(0, lambda r: r.update(
        {"hidden/matmul": r["hidden/matmul"].T.copy()})))), 1, "",
         r"verdict: DIVERGED at step 0, hidden/matmul \(shape\): the first origin\n"
         r"  looks like: B holds A transposed \(samples or units kept as columns\?\)\n"
         r"    evidence: all 32 elements equal once transposed\n  shape A \[8, 4\] vs B \[4, 8\]\n"
         r"  B holds the transposed layout \(4, 8\) of A's \(8, 4\); the values agree once transposed"),
    Case("memstate-unknown-record", with_copy(lambda b: rewrite(b, lambda u, r: r.update(
        {"debug/norm": np.float32(1.0)}) if u != "load" else None)), 0, "",
         r"note: B records debug/norm \(3 unit\(s\) from step 0\), which the spec does not name and A does not "
         r"have: not compared\n(.|\n)*verdict: AGREE"),
    Case("memstate-stopped-early", with_copy(lambda b: rewrite(b, lambda u, r: r.clear() if u == 2 else None,
                                                                status="stopped")), 1, "",
         r"verdict: DIVERGED at step 2, input/x \(stopped\): the first origin\n"
         r"  B stopped after step 1: planted: the process died"),
    # implementations
    Case("impl-manifest-not-json", lambda tmp, ms: [str(IMPLS / "numpy"), str(impl_dir_raw(tmp, '{"name": "x", '))], 2,
         r"impl/memstate-impl\.json: implementation manifest is not valid JSON: Expecting property name"),
    Case("impl-manifest-both-entry-and-command", with_impl({"name": "x", "entry": "mlp.py:run", "command": ["x"]},
                                                           {"mlp.py": ""}), 2,
         r"impl/memstate-impl\.json: give exactly one of 'entry' \(\"file\.py:function\"\) or 'command'"),
    Case("impl-program-outside", with_impl({"name": "x", "command": ["../../bin/evil", "{out}"]}), 2,
         r"impl/memstate-impl\.json: program '\.\./\.\./bin/evil' is outside the implementation directory"),
    Case("impl-source-outside", with_impl({"name": "x", "command": ["{build}/x", "{out}"], "build": ["cc", "{build}"],
                                           "sources": ["../../../etc/hostname"]}), 2,
         r"impl/memstate-impl\.json: source '\.\./\.\./\.\./etc/hostname' is outside the implementation directory"),
    Case("impl-entry-symlink-outside", lambda tmp, ms: [str(IMPLS / "numpy"), str(symlinked_entry(tmp))], 2,
         r"impl/memstate-impl\.json: entry file 'mlp\.py' is outside the implementation directory"),
    Case("impl-entry-does-not-import", with_impl(json.loads(VALID), {"mlp.py": "import no_such_module_xyz\n"}), 1,
         "", r"verdict: DIVERGED at load, hidden/weight \(stopped\): the first origin\n  B stopped before writing "
             r"anything: entry point mlp\.py:run does not load: ModuleNotFoundError: No module named 'no_such_module_xyz'"
             r" \(the process exited with code 1\)"),
    Case("impl-exits-non-zero", with_impl(json.loads(VALID), {"mlp.py": "import os\ndef run(job, record):\n    "
                                                                        "os._exit(3)\n"}), 1, "",
         r"B stopped before writing anything: the process exited with code 3"),
    Case("impl-killed", with_impl(json.loads(VALID), {"mlp.py": "import os, signal\ndef run(job, record):\n    "
                                                                 "os.kill(os.getpid(), signal.SIGKILL)\n"}), 1, "",
         r"B stopped before writing anything: the process was killed by signal SIGKILL"),
    Case("impl-hangs", with_impl(json.loads(VALID), {"mlp.py": "import time\ndef run(job, record):\n    "
                                                                "time.sleep(600)\n"}, extra=("--timeout", "2")), 1, "",
         r"B stopped before writing anything: the process timed out after 2 s and was killed"),
    Case("impl-garbage-on-stdout", with_impl({"name": "noisy", "command": ["{python}", "noisy.py", "{job}", "{out}"]},
                                             {"noisy.py": GARBAGE_STDOUT}), 0, "",
         r"compared 64 records(.|\n)*verdict: AGREE"),
    Case("impl-garbage-as-memstate", with_impl({"name": "liar", "command": ["{python}", "-c",
                                                                            "import sys; open(sys.argv[1], 'wb').write(bytes(range(256)))", "{out}"]}), 1, "",
         r"B stopped before writing anything: .*b-liar\.jsonl: not UTF-8 text near line 1: invalid start byte"),
    Case("jsonl-base64-short", short_base64, 1, "",
         r"B stopped after step 0: .*b\.jsonl: line \d+: record 'input/x': its shape holds 6272 float32 values, "
         r"25088 bytes: 33452 characters of base64, and 'base64' has 33448(.|\n)*verdict: DIVERGED at step 1, "
         r"input/x \(stopped\)"),
    # where results go
    Case("out-under-a-file", lambda tmp, ms: [str(IMPLS / "numpy"), str(IMPLS / "numpy"), *SMALL, "--out", str(under_a_file(tmp))], 2,
         r"f/run: cannot create the run directory: Not a directory"),
    Case("out-already-used", lambda tmp, ms: [str(IMPLS / "numpy"), str(ms), "--no-html", "--out", str(ms.parent)], 2,
         r"already holds a run; refusing to overwrite it \(choose another --out\)"),
]
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_its_message_and_exit_code(case: Case, tmp_path, numpy_memstate, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    argv = case.build(tmp_path, numpy_memstate)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout:\n{out}\nstderr:\n{err}"
    own = [line for line in (out + err).splitlines() if not line.startswith("  | ")]  # not a port's quoted stderr
    assert not any("Traceback" in line for line in own)
    assert re.search(case.stderr, err), f"stderr does not match {case.stderr!r}:\n{err}"
    assert re.search(case.stdout, out), f"stdout does not match {case.stdout!r}:\n{out}"
    if case.code == 2 and not case.stdout:
        assert err.startswith("error: ") and "verdict" not in out  # refused before any comparison is claimed


"""Reduced matmul precision (TF32, bfloat16, float16 operands, float32 accumulation): a correct side that
computes so is agree or drift against float32 once the comparator knows, an origin (the false alarm)
when it does not, and a bug above that precision's floor is still named at its own step and record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS

from harness.catalogue import CATALOGUE
from harness.compare.cli import main
from harness.compare.stated import job_with_precision
from harness.compare.stream import compare_memstates
from harness.evaluate import Evaluator, precision_lines
from harness.run.runner import load_implementation, run_implementation
from harness.spec.config import Config
from harness.spec.precision import MODES
from harness.spec.presets import get_preset
from harness.run.capture import SUMMARY, Capture
from harness.spec.records import LOSS_SCALE
from harness.store.jsonl import write_jsonl
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter


def run_in(runs, tmp_path: Path, impl: Path, config: Config, mode: str) -> Memstate:
    """`impl` asked for `mode` matmuls through its own copy of the config's job."""
    job = job_with_precision(runs.job(config), tmp_path / f"job-{mode}", mode)
    result = run_implementation(load_implementation(impl), job, tmp_path / f"run-{mode}")
    return Memstate(result.memstate)


@pytest.mark.parametrize("mode, config", [
    ("tf32", Config(steps=200)),
    ("bfloat16", Config(steps=50)),
    ("float16", Config(steps=50, optimizer="adam", lr=0.001)),
    ("tf32", get_preset("born").config(steps=20)),
    ("bfloat16", get_preset("mnist-from-scratch").config(steps=20)),
    ("bfloat16-storage", Config(steps=50, optimizer="momentum")),
    ("float16-storage", Config(steps=50)),
    ("bfloat16-storage", get_preset("born").config(steps=20)),
], ids=["tf32-default-200", "bf16-default-50", "fp16-adam-50", "tf32-born-20", "bf16-mnist-from-scratch-20",
        "bf16-storage-momentum-50", "fp16-storage-50", "bf16-storage-born-20"])
def test_numpy_in_reduced_matmul_precision_drifts_with_no_origin(runs, tmp_path, mode, config):
    b = run_in(runs, tmp_path, IMPLS / "numpy", config, mode)
    assert b.manifest["precision"] == MODES[mode]  # it says what it computed in
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects, f"{c.first.where}: {c.first.note}"
    assert c.verdict == "drift" and c.b.title == f"numpy ({mode})"
    assert any(n.startswith("B computes its matmuls in " if "storage" not in mode else "B keeps every tensor in ")
               and "cannot be told from" in n for n in c.notes)


@pytest.mark.parametrize("config", [Config(steps=50, optimizer="momentum"), get_preset("born").config(steps=20)],
                         ids=["default-momentum-50", "born-20"])
def test_torch_bfloat16_autocast_on_the_cpu_drifts_with_no_origin(runs, tmp_path, config):
    """torch.autocast for real: its matmuls' results are bfloat16 values, judged as bfloat16 matmuls and storage."""
    b = run_in(runs, tmp_path, IMPLS / "torch", config, "bfloat16-autocast")
    matmul = b.get(1, "hidden/matmul").astype("float32")
    assert not (matmul.view("uint32") & 0xFFFF).any()  # bfloat16 values, held exactly in float32
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and c.verdict == "drift", f"{c.first.where}: {c.first.note}"


@pytest.mark.parametrize("mode, config", [
    ("bfloat16-compute", Config(steps=200)),
    ("float16-compute", get_preset("born").config(steps=20)),
    ("bfloat16-autocast", get_preset("mnist-from-scratch").config(steps=20)),
], ids=["bf16-default-200", "fp16-born-20", "bf16-autocast-mnist-from-scratch-20"])
def test_jax_in_half_precision_drifts_with_no_origin(runs, tmp_path, mode, config):
    """JAX's mixed precision as its users write it (float32 master weights, bfloat16 or float16 arrays for the
    passes): it declares its sums accumulated in the half-precision dtype, which XLA on the CPU does."""
    b = run_in(runs, tmp_path, IMPLS / "jax", config, mode)
    half = MODES[mode]["storage"]
    assert b.manifest["precision"] == {**MODES[mode], "accumulate": half}
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects and c.verdict == "drift", f"{c.first.where}: {c.first.note}"
    assert max(r.explained_ratio for r in c.records) < 0.75  # headroom: no record near its op's rounding
    assert any(f"B accumulates its sums in {half}" in n for n in c.notes)


def test_sums_accumulated_in_bfloat16_are_a_false_alarm_when_not_declared(runs, tmp_path):
    """XLA on the CPU keeps the running totals of bfloat16 sums (matmuls, a bias gradient over the batch) in
    bfloat16: read as float32 accumulation, those sums are origins no order of float32 summation explains."""
    config = Config(steps=50)
    b = run_in(runs, tmp_path, IMPLS / "jax", config, "bfloat16-compute")
    a = runs.run("numpy", config)
    assert compare_memstates(a, b).verdict == "drift"
    del b.manifest["precision"]["accumulate"]
    c = compare_memstates(a, b)
    sums = ("/matmul", "/grad_weight", "/grad_bias", "/grad_activation")
    assert c.verdict == "diverged" and c.origins and all(o.name.endswith(sums) for o in c.origins)
    assert "beyond the most any order of summation can round" in c.first.evidence


@pytest.mark.parametrize("config", [Config(steps=200), get_preset("born").config(steps=20)],
                         ids=["default-200", "born-20"])
def test_float64_against_float32_drifts_with_no_origin(runs, config):
    """The same network in float64: judged at float32, the lower precision of the two."""
    c = compare_memstates(runs.run("numpy", config), runs.run("numpy", config.replace(dtype="float64")))
    assert c and not c.origins and not c.suspects and c.verdict == "drift", f"{c.first.where}: {c.first.note}"


@pytest.mark.parametrize("config", [Config(steps=50, optimizer="adam", lr=0.001), get_preset("born").config(steps=5)],
                         ids=["default-adam-50", "born-5"])
def test_the_cpp_port_in_bfloat16_storage_drifts_with_no_origin(runs, tmp_path, config):
    """impls/cpp rounds every tensor it stores to bfloat16 (its own bit arithmetic), computing in float."""
    b = run_in(runs, tmp_path, IMPLS / "cpp", config, "bfloat16-storage")
    assert b.manifest["precision"] == {"storage": "bfloat16"}
    for name in ("hidden/matmul", "output/grad_weight", "hidden/weight"):
        assert not (b.get(3, name).astype("float32").view("uint32") & 0xFFFF).any(), name  # bfloat16 values
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects and c.verdict == "drift", f"{c.first.where}: {c.first.note}"


def test_the_cpp_port_refuses_what_it_cannot_compute(runs, tmp_path):
    config = Config(hidden=16, batch_size=8, steps=2)
    for mode in ("tf32", "float16-storage"):
        job = job_with_precision(runs.job(config), tmp_path / f"job-{mode}", mode)
        result = run_implementation(load_implementation(IMPLS / "cpp"), job, tmp_path / f"run-{mode}")
        assert result.status == "unsupported" and "the job asks for " in result.error, mode


@pytest.mark.parametrize("config", [Config(steps=50, optimizer="momentum"), get_preset("born").config(steps=20)],
                         ids=["default-momentum-50", "born-20"])
def test_torch_float16_autocast_with_a_loss_scale_drifts_with_no_origin(runs, tmp_path, config):
    """PyTorch's AMP recipe for real on the CPU: float16 matmuls and a GradScaler. Its gradient records are
    of the loss times the scale it records; read divided by it, they are the gradients of the loss."""
    b = run_in(runs, tmp_path, IMPLS / "torch", config, "float16-autocast")
    assert b.manifest["precision"] == {"matmul": "float16", "storage": "float16"}
    scale = float(b.unit(1)[LOSS_SCALE])
    assert scale == 2.0 ** 16  # the recipe's start, 2^16, not grown within 2000 steps
    raw, read = b.unit(1)["output/grad_weight"], b.get(1, "output/grad_weight")
    assert np.array_equal(raw, read * scale) and not np.array_equal(raw, read)
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects and c.verdict == "drift", f"{c.first.where}: {c.first.note}"
    assert LOSS_SCALE not in {r.name for r in c.records}  # each side's own factor, never compared
    assert "B scales its loss before the backward pass (loss/scale: 65536 at step 0)" in " ".join(c.notes)


def test_a_scaled_gradient_that_overflows_float16_is_named_as_the_scaler_skipping_the_step(runs, tmp_path):
    """mnist-from-scratch's output weight gradient reaches 1.4: times 2^16 it overflows float16, and the
    scaler skips the update. A real difference from float32, named with its reason, not as a rounding."""
    config = get_preset("mnist-from-scratch").config(steps=3)
    c = compare_memstates(runs.run("numpy", config), run_in(runs, tmp_path, IMPLS / "torch", config,
                                                            "float16-autocast"))
    assert (c.verdict, c.first.where, c.first.role) == ("diverged", "step 0, output/grad_weight", "origin")
    assert "B's gradient times its loss scale (65536) overflows float16 here: a loss scaler skips" in c.first.note
    assert c.first.diagnosis is None


def test_a_summary_capture_summarises_scaled_gradients_as_they_are_read(tmp_path):
    """bisect screens summaries: a scaled side's gradient rows are of its gradients divided by its scale,
    as the comparator reads them, so the screen sees no 65536x difference that is not there."""
    g = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32) * np.float32(1e-3)  # (10, 32)
    rows = []
    for scale in (None, 2.0 ** 16):
        w = MemstateWriter(tmp_path / f"m{scale}", {"capture": Capture(SUMMARY, (), 0).to_dict()})
        for step in range(2):
            if scale is not None:
                w(step, LOSS_SCALE, np.float32(scale))
            w(step, "output/grad_weight", g * np.float32(scale or 1))
        w.close()
        names, table = Memstate(tmp_path / f"m{scale}").summary_table()
        rows.append(table[table[:, 1] == names.index("output/grad_weight")])
    assert np.array_equal(rows[0][:, 2:], rows[1][:, 2:]) and rows[0].shape == (2, rows[0].shape[1])


@pytest.mark.parametrize("value", [0, -1024, "NaN"])
def test_a_loss_scale_that_is_no_positive_number_is_refused_with_the_record(runs, tmp_path, capsys, value):
    config = Config(hidden=16, batch_size=8, steps=2)
    write_jsonl(runs.run("numpy", config), tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    at = next(k for k, line in enumerate(lines) if json.loads(line).get("name") == "output/grad_logits"
              and json.loads(line).get("step") == 1)
    lines.insert(at, json.dumps({"step": 1, "name": LOSS_SCALE, "dtype": "float32", "shape": [], "data": [value]}))
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    assert main([tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--no-html", "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert "step-000001.safetensors: record loss/scale must hold one positive finite number" in err


def on_gpu(impl: str) -> None:
    """Skip, saying why, where this machine has no GPU for `impl` (torch: CUDA; jax: a GPU backend)."""
    if impl == "torch":
        import torch
        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU here: torch's TF32 and CUDA autocast runs need one")
    else:
        import jax
        if jax.default_backend() != "gpu":
            pytest.skip(f"JAX's backend here is {jax.default_backend()}: its TF32 and bfloat16 matmuls need a GPU")


@pytest.mark.parametrize("impl, mode", [("torch", "float32"), ("torch", "tf32"), ("torch", "bfloat16-autocast"),
                                        ("torch", "float16-autocast"), ("jax", "float32"), ("jax", "tf32"),
                                        ("jax", "bfloat16")])
@pytest.mark.parametrize("config", [Config(steps=20), get_preset("born").config(steps=20)],
                         ids=["default-20", "born-20"])
def test_on_a_gpu_each_precision_drifts_with_no_origin(runs, tmp_path, impl, mode, config):
    """The runs the mission is about: torch on CUDA with TF32 off and on and under autocast, JAX on a GPU at
    its highest and its default (TF32) precision, each against numpy on the CPU; the manifest names the GPU."""
    on_gpu(impl)
    b = run_in(runs, tmp_path, IMPLS / impl, config, mode)
    assert ("cuda:" if impl == "torch" else "gpu:") in b.manifest["runtime"]["device"]
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and not c.suspects, f"{c.first.where}: {c.first.note}"


def test_adam_in_float16_storage_divides_by_zero_and_is_named(runs, tmp_path):
    """Not a benign precision: Adam's eps = 1e-8 is below float16's range, so sqrt(v) + eps is 0 where v
    underflows, and the update divides by it. memstate names the update, not a rounding."""
    config = get_preset("born").config(steps=20)
    c = compare_memstates(runs.run("numpy", config), run_in(runs, tmp_path, IMPLS / "numpy", config,
                                                            "float16-storage"))
    assert c.verdict == "diverged" and c.first.name.endswith(("/weight", "/bias"))


def test_the_same_pair_read_as_float32_is_the_false_alarm(runs, tmp_path):
    """Not told (or a fixed tolerance), TF32's operand rounding reads as an origin at the first matmul."""
    config = Config(steps=3)
    b = run_in(runs, tmp_path, IMPLS / "numpy", config, "tf32")
    a = runs.run("numpy", config)
    told = compare_memstates(a, b)
    assert told.verdict == "drift" and told.first.where == "step 1, hidden/matmul"
    del b.manifest["precision"]
    untold = compare_memstates(a, b)
    first = untold.first
    assert (untold.verdict, first.where, first.role) == ("diverged", "step 0, hidden/matmul", "origin")
    assert first.worst_ratio > 100


def test_a_bug_above_the_floor_is_still_named_under_tf32(runs, tmp_path):
    b = run_in(runs, tmp_path, IMPLS / "examples" / "softmax_global_sum", Config(steps=3), "tf32")
    c = compare_memstates(runs.run("numpy", Config(steps=3)), b)
    assert (c.verdict, c.first.where, c.first.inconsistent) == ("diverged", "step 0, output/softmax", "B")


@pytest.mark.parametrize("mode, hidden", [("tf32", "matmul-32u"), ("bfloat16-autocast", "pixels-over-256")])
def test_the_catalogue_in_reduced_precision_names_what_its_rounding_hides(tmp_path, mnist, mode, hidden):
    """Bugs far above the precision's floor are found where they are; one below it (a 32-ulp matmul under
    TF32, pixels over 256, 0.4%, under bfloat16) is listed as hidden, with what was found instead."""
    ev = Evaluator(tmp_path, mnist, precision_b=mode)
    cases = {c.name: c for c in CATALOGUE}
    scores = [ev.score(cases[n]) for n in ("softmax-global-sum", "tanh-slope", hidden, "momentum-0.99")]
    assert [bool(s) for s in scores] == [True, True, False, True]
    lines = precision_lines(scores, mode)
    assert lines[0] == f"B in {mode}: 3/4 bugs found at the exact step and record"
    assert f"{hidden} (" in lines[1] and f"within {mode}'s rounding" in lines[1]


def test_the_command_line_states_and_asks_for_a_precision(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--hidden", "16", "--batch-size", "8", "--steps", "2", "--no-html"]
    assert main([IMPLS / "numpy", IMPLS / "numpy", "--precision-b", "tf32", "--out", tmp_path / "r", *small]) == 0
    out = capsys.readouterr().out
    assert "note: B computes its matmuls in TF32" in out
    assert json.loads((tmp_path / "r" / "job-b" / "job.json").read_text())["precision"] == {"matmul": "tf32"}
    # a memstate that does not say is judged as stated
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "r" / "a-numpy", b)
    assert main([tmp_path / "r" / "a-numpy", b, "--precision-b", "bfloat16", "--no-html"]) == 0
    assert ("B does not say what it computed in; judged as bfloat16, as --precision-b says"
            in capsys.readouterr().out)
    # torch has TF32 on a CUDA GPU only: on the CPU it refuses, said as such
    code = main([IMPLS / "numpy", IMPLS / "torch", "--precision-b", "tf32", *small])
    said = "verdict: UNSUPPORTED: B (torch) does not support this config: matmul precision tf32 needs"
    assert code == 1 and said in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ({"matmul": "tf16"}, "'matmul' is 'tf16'; expected one of float32, tf32, bfloat16, float16"),
    ({"storage": "tf32"}, "'storage' is 'tf32'; expected one of float32, bfloat16, float16"),
    ({"master": "float32"}, "has the key 'master'; expected one of matmul, storage, accumulate"),
    ("tf32", "must be an object like"),
])
def test_a_wrong_precision_names_the_field(runs, tmp_path, value, message):
    d = tmp_path / "port"
    d.mkdir()
    header = {"memstate": "jsonl/1", "precision": value}
    (d / "port.py").write_text(f"import json, sys\nopen(sys.argv[2], 'w').write(json.dumps({header!r}) + '\\n')\n")
    (d / "memstate-impl.json").write_text(json.dumps({"name": "p", "command": ["{python}", "port.py", "{job}",
                                                                                "{out}"]}))
    result = run_implementation(load_implementation(d), runs.job(Config(hidden=8, batch_size=4, steps=1)),
                                tmp_path / "run")
    assert result.status == "stopped" and f"header field 'precision' {message}" in result.error

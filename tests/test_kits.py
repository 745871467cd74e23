"""The port kits (kits/go, kits/js, kits/cpp): each example port, built with the real toolchain, agrees
with numpy, replays bit for bit from a checkpoint, has the softmax-over-the-batch bug named where it is
planted, and its kit refuses a damaged job with the file and what was expected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS, ROOT

from harness.compare.bisect import bisect, state_before
from harness.compare.stated import job_with_precision
from harness.compare.stream import compare_memstates
from harness.run.capture import SUMMARY, Capture
from harness.run.job import prepare_job
from harness.run.runner import load_implementation, run_implementation
from harness.spec.config import Config
from harness.spec.params import initial_params
from harness.spec.records import LOAD
from harness.store.memstate import Memstate

# kit -> (its toolchain, the example's source, the softmax line and that line summing over the whole batch)
KITS = {
    "go": ("go", "main.go", "P[i*10+j] /= sums[i]", "P[i*10+j] /= sum(sums)"),
    "js": ("node", "mlp.mjs", "const total = sums[i];", "const total = sums.reduce((a, b) => r(a + b));"),
    "cpp": ("g++", "mlp.cpp", "const T sum = sums[i];",
            "const T sum = [&] { T t = 0; for (T v : sums) t += v; return t; }();"),
}


def example(kit: str, tmp_path: Path | None = None, replace: tuple[str, str] | None = None) -> Path:
    """The kit's example port, or a copy of the kit with one line of the example changed."""
    tool = KITS[kit][0]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: the {kit} kit's example cannot run")
    if tmp_path is None:
        return ROOT / "kits" / kit / "example"
    copy = tmp_path / f"{kit}-kit"
    shutil.copytree(ROOT / "kits" / kit, copy)
    source = copy / "example" / KITS[kit][1]
    text = source.read_text()
    if replace:
        assert text.count(replace[0]) == 1, replace[0]
        source.write_text(text.replace(*replace))
    return copy / "example"


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("kit", sorted(KITS))
def test_kit_example_agrees_with_numpy_on_the_default_config(runs, kit, optimizer):
    config = Config(optimizer=optimizer, steps=5, lr=0.01 if optimizer == "adam" else 0.1)
    c = compare_memstates(runs.run("numpy", config), runs.run(example(kit), config))
    assert c and not c.origins, f"{c.first.where}: {c.first.kind} {c.first.note}"
    assert c.verdict in ("agree", "drift") and c.b.status == "complete"
    assert len(c.records) >= (62 if kit == "cpp" else 65) + 4 * (optimizer != "sgd") * (1 + (optimizer == "adam"))


@pytest.mark.parametrize("kit", sorted(KITS))
def test_kit_example_in_float64_with_adam_and_weight_decay(runs, kit):
    """Go's math.Pow need not agree with C's to the last bit: Adam's bias corrections 1 - beta^t cancel
    that ulp into 100s of float64 ulps of the step, which the model allows for (update.py)."""
    config = Config(hidden=32, batch_size=16, steps=20, optimizer="adam", lr=0.001, weight_decay=0.001,
                    dtype="float64", activation="tanh")
    c = compare_memstates(runs.run("numpy", config), runs.run(example(kit), config))
    assert c and not c.origins, f"{c.first.where}: {c.first.note}"


@pytest.mark.parametrize("kit", sorted(KITS))
def test_the_softmax_over_the_batch_is_found_in_each_kit_example(runs, tmp_path, kit):
    config = Config(hidden=16, batch_size=8, steps=2)
    bug = example(kit, tmp_path, KITS[kit][2:])
    c = compare_memstates(runs.run("numpy", config), runs.run(bug, config))
    first = c.first
    assert (first.step, first.name, first.kind, first.role, first.inconsistent) == (
        0, "output/softmax", "values", "origin", "B")
    assert first.diagnosis is not None and first.diagnosis.kind == "axis"


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("kit", sorted(KITS))
def test_kit_example_replays_from_a_checkpoint_bit_for_bit(tmp_path, mnist, kit, optimizer):
    """The kit hands the port first_step, the checkpoint's parameters and its optimizer buffers."""
    cfg = Config(hidden=16, batch_size=8, steps=9, optimizer=optimizer, lr_decay=0.5, epoch_steps=4,
                 lr=0.001 if optimizer == "adam" else 0.1)
    code = load_implementation(example(kit))
    params = initial_params(cfg)
    full = Memstate(run_implementation(code, prepare_job(tmp_path / "job", cfg, params, mnist), tmp_path / "full").memstate)
    summary = prepare_job(tmp_path / "sjob", cfg, params, mnist, Capture(SUMMARY, ((7, 7),), 3))
    part = Memstate(run_implementation(code, summary, tmp_path / "part").memstate)
    assert part.units == [LOAD, 2, 5, 7, 8]
    p, state = state_before(part, 6)
    rjob = prepare_job(tmp_path / "rjob", cfg, p, mnist, first_step=6, last_step=7, state=state)
    replay = Memstate(run_implementation(code, rjob, tmp_path / "replay").memstate)
    assert replay.units == [LOAD, 6, 7] and replay.status == "complete"
    for step in (6, 7):
        assert replay.names(step) == full.names(step)
        for name in full.names(step):
            assert np.array_equal(replay.get(step, name), full.get(step, name)), (step, name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kit", sorted(KITS))
def test_kit_writes_floats_as_base64_and_as_numbers_when_asked_with_the_same_bits(tmp_path, mnist, monkeypatch, kit,
                                                                                  dtype):
    """Floats go out as `base64` (their bytes); MEMSTATE_VALUES=numbers writes them as `data`, and the
    two files read back to the same bits, record for record, but for the sign of a zero: JSON's `-0` is an
    integer, read as 0 (relu's gradient holds -0.0 wherever dA < 0 meets z <= 0)."""
    cfg = Config(hidden=16, batch_size=8, steps=2, optimizer="momentum", dtype=dtype)
    code, job = load_implementation(example(kit)), prepare_job(tmp_path / "job", cfg, initial_params(cfg), mnist)
    read = {}
    for form in ("base64", "data"):
        if form == "data":
            monkeypatch.setenv("MEMSTATE_VALUES", "numbers")
        result = run_implementation(code, job, tmp_path / form)
        assert result, result.error
        lines = [json.loads(line) for line in (tmp_path / f"{form}.jsonl").read_text().splitlines()]
        floats = [x for x in lines if x.get("dtype") == dtype]
        assert len(floats) > 40 and all(form in x and len(x) == 5 for x in floats), (form, floats[0].keys())
        assert all("data" in x for x in lines if x.get("dtype") in ("int64", "uint8"))  # labels stay numbers
        read[form] = Memstate(tmp_path / form)
    packed, numbers = read.values()
    assert packed.units == numbers.units and packed.status == "complete"
    for step in packed.units:
        assert packed.names(step) == numbers.names(step)
        for name in packed.names(step):
            x, y = packed.get(step, name), numbers.get(step, name)
            assert x.dtype == y.dtype and x.shape == y.shape, (step, name)
            assert (x + 0).tobytes() == (y + 0).tobytes(), (step, name)  # -0.0 + 0 is +0.0: every other bit the same


def test_bisect_finds_a_late_bug_in_the_go_kit_example(tmp_path, mnist):
    late = ("P[i*10+j] /= sums[i]", ("if s < 12 {\n\t\t\t\t\t\tP[i*10+j] /= sums[i]\n\t\t\t\t\t} else {\n"
                                    "\t\t\t\t\t\tP[i*10+j] /= sum(sums)\n\t\t\t\t\t}"))
    cfg = Config(hidden=32, batch_size=16, steps=20)
    res = bisect(load_implementation(IMPLS / "numpy"), load_implementation(example("go", tmp_path, late)), cfg,
                 initial_params(cfg), mnist, tmp_path / "work", checkpoint_every=5)
    run = res.passes[0]
    assert (run.suspect.step, run.suspect.name) == (12, "output/softmax")
    assert run.window == (10, 12) and run.replay_exact
    first = res.comparison.first
    assert (first.step, first.name, first.role, first.inconsistent) == (12, "output/softmax", "origin", "B")


def _damage(job: Path, how: str) -> str:
    """Damage a job directory one way; returns what the kit's message must name."""
    if how == "images":
        data = (job / "images.u8").read_bytes()
        (job / "images.u8").write_bytes(data[:-100])
        return f"images.u8: {len(data) - 100} bytes, expected {len(data)}"
    if how == "params":
        p = json.loads((job / "params.json").read_text())
        p["tensors"]["W2"]["data"].pop()
        (job / "params.json").write_text(json.dumps(p))
        return "params.json: tensor \"W2\" must have"
    meta = json.loads((job / "job.json").read_text())
    meta["format"] = "memstate-job/0"
    (job / "job.json").write_text(json.dumps(meta))
    return "job.json: field 'format' must be \"memstate-job/1\""


@pytest.mark.parametrize("how", ["images", "params", "format"])
@pytest.mark.parametrize("kit", sorted(KITS))
def test_kit_refuses_a_damaged_job_with_the_file_and_what_was_expected(tmp_path, mnist, kit, how):
    cfg = Config(hidden=8, batch_size=4, steps=2)
    job = prepare_job(tmp_path / "job", cfg, initial_params(cfg), mnist)
    said = _damage(job.dir, how)
    result = run_implementation(load_implementation(example(kit)), job, tmp_path / "run")
    assert result.status == "stopped"
    assert said in result.error and str(job.dir) in result.error


def test_a_port_refuses_a_config_it_does_not_support(runs, tmp_path):
    """The C++ example does one hidden layer: two are refused as unsupported, said as such, exit 1."""
    config = Config(layers=(16, 12), batch_size=8, steps=2)
    refused = run_implementation(load_implementation(example("cpp")), runs.job(config), tmp_path / "cpp")
    assert refused.status == "unsupported" and refused.returncode == 0
    c = compare_memstates(runs.run("numpy", config), Memstate(refused.memstate))
    assert c.verdict == "unsupported" and not c and c.exit_code == 1
    assert c.refused is c.b and c.b.stop_summary.startswith("does not support this config: one hidden layer")


DECLARE = {  # the example's refusal of reduced precision, and a port that declares what the job asks for instead
    "go": ('if job.Precision != "float32" || job.Storage != "float32" {',
           'rec.Storage(job.Storage); rec.Accumulate(job.Accumulate); if false {'),
    "js": ('if (job.precision !== "float32" || job.storage !== "float32")',
           'rec.storage(job.storage); rec.accumulate(job.accumulate); if (false)'),
    "cpp": ('if (job.matmul_precision != "float32" || job.storage != "float32")',
            'rec.storage(job.storage); rec.accumulate(job.accumulate); if (false)'),
}


@pytest.mark.parametrize("kit", sorted(KITS))
def test_each_kit_reads_the_precision_asked_for_and_declares_it(runs, tmp_path, kit):
    """Asked for bfloat16 compute, the example refuses; a port that declares the job's storage and
    accumulation as the kit reads them gets them in its manifest, and is judged by them."""
    config = Config(batch_size=16, steps=3)
    job = job_with_precision(runs.job(config), tmp_path / "job", "bfloat16-compute")
    refused = run_implementation(load_implementation(example(kit)), job, tmp_path / "refused")
    assert refused.status == "unsupported" and "bfloat16 storage" in refused.error
    declared = run_implementation(load_implementation(example(kit, tmp_path, DECLARE[kit])), job, tmp_path / "run")
    b = Memstate(declared.memstate)
    assert b.manifest["precision"] == {"storage": "bfloat16", "accumulate": "bfloat16"}
    c = compare_memstates(runs.run("numpy", config), b)
    assert c and not c.origins and any("B accumulates its sums in bfloat16" in n for n in c.notes)


def test_the_per_sample_port_at_batch_1(runs):
    """A batch of one sample: the per-sample port and numpy's batched one are the same arithmetic."""
    config = Config(batch_size=1, steps=20, optimizer="momentum")
    c = compare_memstates(runs.run("numpy", config), runs.run(example("cpp"), config))
    assert c and not c.origins


def test_go_kit_example_with_two_hidden_layers_and_dropout(runs):
    config = Config(layers=(24, 16), dropout=(0.2, 0.1), batch_size=8, steps=5, optimizer="adam", lr=0.01)
    c = compare_memstates(runs.run("numpy", config), runs.run(example("go"), config))
    assert c and not c.origins
    assert {"hidden1/dropout_mask", "hidden2/grad_dropout"} <= {r.name for r in c.records}


def test_the_porting_guide_shows_the_go_example_as_it_is():
    """docs/porting.md quotes kits/go/example/main.go whole: one source, checked."""
    doc = (ROOT / "docs" / "porting.md").read_text()
    assert "```go\n" + (ROOT / "kits" / "go" / "example" / "main.go").read_text() + "```" in doc

import json

import numpy as np
import pytest

from harness.compare.stream import compare_memstates
from harness.report.cells import CELL_MARK, category
from harness.report.text import format_text
from harness.judge.record import Tolerance
from harness.spec.config import Config
from harness.store.memstate import Memstate
from harness.store.writer import MemstateWriter
from harness.spec.records import expected_order

CFG = Config(hidden=32, batch_size=16, steps=6)


@pytest.fixture(scope="module")
def base(runs) -> Memstate:
    return runs.run("numpy", CFG)


def altered(base: Memstate, path, edit=lambda step, name, a: a, stop_at=None, status="complete"):
    """A copy of `base` whose records pass through edit(step, name, array) -> array or None (dropped)."""
    manifest = {k: v for k, v in base.manifest.items() if k not in ("status", "units", "stopped")}
    w = MemstateWriter(path, manifest)
    for step in base.units:
        for name, arr in base.unit(step).items():
            if stop_at is not None and (step, name) == stop_at:
                w.close("stopped", error="RuntimeError: planted crash")
                return Memstate(path)
            new = edit(step, name, np.array(arr))
            if new is not None:
                w(step, name, new)
    w.close(status)
    return Memstate(path)


def test_identical_memstates_agree_on_every_record(base, tmp_path):
    c = compare_memstates(base, altered(base, tmp_path / "b"))
    assert c and c.verdict == "agree" and c.first is None
    assert [(r.step, r.name) for r in c.records] == expected_order(CFG)
    assert all(r.max_abs == 0 and r.max_ulp == 0 for r in c.records)


def test_a_planted_change_is_named_with_its_worst_element(base, tmp_path):
    def edit(step, name, a):
        if (step, name) == (2, "hidden/bias_add"):
            a[3, 5] *= 1.01
        return a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    assert not c and c.verdict == "diverged"
    f = c.first
    assert (f.step, f.name, f.kind) == (2, "hidden/bias_add", "values")
    assert f.worst_index == (3, 5) and f.n_over == 1
    assert f.worst_a == float(base.get(2, "hidden/bias_add")[3, 5])
    assert f.worst_b == pytest.approx(f.worst_a * 1.01, rel=1e-6)
    assert [(r.step, r.name) for r in c.divergences] == [(2, "hidden/bias_add")]  # nothing else was changed
    assert f.worst_case_ratio > 1 and f.evidence.startswith("1 element(s) beyond the most any order of summation")


def test_one_element_within_what_some_order_can_round_is_a_suspect_not_an_origin(base, tmp_path):
    """The same element 10x closer: beyond random rounding (21x), but a sum in some order (sorted, grouped)
    can round that far, and one element shows no sign: a suspect. It is listed, drift passes without
    --strict and fails with it."""
    def edit(step, name, a):
        if (step, name) == (2, "hidden/bias_add"):
            a[3, 5] *= 1.001
        return a
    b = altered(base, tmp_path / "b", edit)
    c = compare_memstates(base, b)
    assert c.verdict == "drift" and c and not c.origins
    assert [(r.step, r.name) for r in c.suspects] == [(2, "hidden/bias_add")]
    s = c.suspects[0]
    assert s.explained_ratio > 1 and s.worst_case_ratio < 1 and s.systematic <= 1 and not s.is_origin
    assert "within what some order of summation can round" in s.evidence
    assert not compare_memstates(base, b, strict=True)
    assert c.to_dict()["suspects"] == [(2, "hidden/bias_add")]
    text = format_text(c)
    assert "verdict: DRIFT: 1 record(s) differ by more than a step's rounding, first at step 2, hidden/bias_add; " \
           "1 suspect(s) (possible rounding), no origin" in text
    assert "why not an origin: 1 of 512 element(s) beyond random rounding" in text
    assert "1 suspect record(s) at 1 step(s)" in text
    assert category(s) == "suspect" and CELL_MARK["suspect"] == "s"


def test_one_ulp_on_every_computed_record_is_within_tolerance(base, tmp_path):
    def edit(step, name, a):
        return np.nextafter(a, np.inf) if a.dtype == np.float32 and step != "load" else a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    assert c
    assert max(r.max_ulp for r in c.records) == 1


def test_loaded_parameters_must_be_bit_identical(base, tmp_path):
    def edit(step, name, a):
        if (step, name) == ("load", "output/weight"):
            a[4, 7] = np.nextafter(a[4, 7], np.inf)
        return a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.kind, f.worst_index, f.max_ulp) == ("load", "output/weight", "values", (4, 7), 1)


def test_transposed_layout_is_named(base, tmp_path):
    def edit(step, name, a):
        return a.T.copy() if (step, name) == (1, "hidden/grad_weight") else a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.kind) == (1, "hidden/grad_weight", "shape")
    assert f.shape_a == (32, 784) and f.shape_b == (784, 32)
    assert "transposed layout" in f.note and "agree once transposed" in f.note


def test_bias_as_a_column_is_named(base, tmp_path):
    def edit(step, name, a):
        return a.reshape(-1, 1) if name == "output/bias" else a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.kind) == ("load", "output/bias", "shape")
    assert "same 10 elements" in f.note and "agree once reshaped" in f.note


def test_missing_record(base, tmp_path):
    def edit(step, name, a):
        return None if name == "output/grad_bias" else a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.kind) == (0, "output/grad_bias", "missing")
    assert f.note == "B has no such record"
    assert len(c.divergences) == CFG.steps


def test_label_mismatch(base, tmp_path):
    def edit(step, name, a):
        if (step, name) == (3, "input/y"):
            a[7] = (a[7] + 1) % 10
        return a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.kind, f.worst_index, f.n_over) == (3, "input/y", "labels", (7,), 1)


def test_nan_is_counted_and_located(base, tmp_path):
    def edit(step, name, a):
        if (step, name) == (4, "output/softmax"):
            a[2, 9] = np.nan
        return a
    c = compare_memstates(base, altered(base, tmp_path / "b", edit))
    f = c.first
    assert (f.step, f.name, f.worst_index, f.nan_a, f.nan_b) == (4, "output/softmax", (2, 9), 0, 1)
    assert f.worst_ratio == np.inf


def test_a_side_that_stopped_is_reported_where_it_stopped(base, tmp_path):
    b = altered(base, tmp_path / "b", stop_at=(4, "hidden/bias_add"))
    c = compare_memstates(base, b)
    f = c.first
    assert (f.step, f.name, f.kind) == (4, "hidden/bias_add", "stopped")
    assert "B stopped after step 4: RuntimeError: planted crash" in f.note
    assert all(r for r in c.records[:-1])  # everything before the stop agrees
    assert c.records[-2].name == "hidden/matmul"


def test_a_complete_run_with_fewer_steps_than_its_config_is_never_agree(base, tmp_path):
    """A manifest that says complete over 5 of its config's 6 steps contradicts itself: damaged (exit 2),
    and the comparison stops where the step is missing."""
    b = altered(base, tmp_path / "b", edit=lambda s, n, a: None if s == 5 else a)
    c = compare_memstates(base, b)
    assert not c and c.verdict == "diverged" and c.exit_code == 2
    f = c.first
    assert (f.step, f.name, f.kind) == (5, "input/x", "stopped")
    assert f.note == (f"B damaged after step 4: {b.dir}/manifest.json: says complete, but its config asks for "
                      f"steps 0..5 and step 5 is missing (5 step(s) before it are held)")
    assert all(r for r in c.records[:-1])


def test_both_sides_lacking_a_record_their_config_asks_for_is_missing(base, tmp_path):
    a = altered(base, tmp_path / "a", edit=lambda s, n, x: None if n == "output/grad_bias" else x)
    b = altered(base, tmp_path / "b", edit=lambda s, n, x: None if n == "output/grad_bias" else x)
    c = compare_memstates(a, b)
    assert not c and c.exit_code == 1
    assert [(r.step, r.name, r.kind) for r in c.origins] == [(s, "output/grad_bias", "missing") for s in range(6)]
    assert c.first.note == "neither side has this record, which their config asks for"


def test_unknown_records_are_compared_and_reported(base, tmp_path):
    w = MemstateWriter(tmp_path / "x", dict(base.manifest, status=None))
    for step in base.units:
        for name, arr in base.unit(step).items():
            w(step, name, arr)
        if step == 0:
            w(step, "debug/extra", np.ones(3, np.float32))
    w.close()
    y = Memstate(tmp_path / "x")
    c = compare_memstates(y, y)
    assert c and any("debug/extra" in n for n in c.notes)
    assert (0, "debug/extra") in [(r.step, r.name) for r in c.records]


def test_ulp_distance_across_zero_and_tolerance_override(tmp_path):
    def one(path, value):
        w = MemstateWriter(path, {"dtype": "float32"})  # no config: one record is the whole memstate
        w(0, "loss/value", np.float32(value))
        w.close()
        return Memstate(path)
    tiny = np.float32(1e-45)  # the smallest float32 denormal
    c = compare_memstates(one(tmp_path / "a", tiny), one(tmp_path / "b", -tiny))
    assert c.records[0].max_ulp == 2
    a, b = one(tmp_path / "c", 1.0), one(tmp_path / "d", 1.001)
    assert not compare_memstates(a, b, Tolerance("float32", rtol=1e-4, atol=1e-5, mode="fixed"))
    assert compare_memstates(a, b, Tolerance("float32", rtol=1e-2, atol=0))


def test_result_serialises_to_json(base, tmp_path):
    c = compare_memstates(base, altered(base, tmp_path / "b"))
    d = json.loads(json.dumps(c.to_dict(), default=str))
    assert d["verdict"] == "agree" and d["counts"]["records"] == len(expected_order(CFG))


def test_both_stopped_at_the_same_place_is_not_agreement(base, tmp_path):
    a = altered(base, tmp_path / "a", stop_at=(3, "output/softmax"))
    b = altered(base, tmp_path / "b", stop_at=(3, "output/softmax"))
    c = compare_memstates(a, b)
    assert not c
    assert (c.first.step, c.first.name, c.first.kind) == (3, "output/softmax", "stopped")
    assert c.first.note.startswith("A stopped after step 3") and "; B stopped after step 3" in c.first.note


def test_a_run_that_failed_after_its_last_record_is_still_reported(base, tmp_path):
    b = altered(base, tmp_path / "b", status="stopped")
    c = compare_memstates(base, b)
    assert not c and c.first.kind == "stopped" and c.first.step == CFG.steps - 1
    assert all(r for r in c.records[:-1])

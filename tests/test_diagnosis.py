"""What kind of bug an origin looks like: each signature's exact line on tensors built to show it, and the
near misses built to look almost like one (a scale on 90% of the elements is not a scale); then through the
command line, the report and --json on real runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import IMPLS

from harness.compare.cli import main
from harness.judge.diagnose import Origin, diagnose
from harness.spec.config import Config

RNG = np.random.default_rng(7)
REF = RNG.normal(0, 1, (8, 10))  # (m, 10)
U = 2.0 ** -24


def look(ref: np.ndarray, bug: np.ndarray, op: str = "", cfg: Config | None = None) -> tuple[str, str]:
    tol = 4 * U * np.fmax(np.abs(ref), np.abs(bug)) if ref.shape == bug.shape else np.zeros(0)
    d = diagnose(Origin(0, "output/grad_logits", ref, bug, tol, cfg, lambda s, n: None, lambda s, n: None, U), op)
    return d.kind, d.detail.format(ref="A", bug="B")


@pytest.mark.parametrize("bug, kind, detail", [
    (REF / 8, "scale", "B = A / 8 at every element (1/8: the batch size): a mean taken twice, or divided by m "
                       "once more?"),
    (REF / 64, "scale", "B = A / 64 at every element (not a quantity of the run: a wrong constant?)"),
    (REF * 8, "scale", "B = 8 x A at every element (8 is the batch size): not divided by the batch size?"),
    (REF / 10, "scale", "B = A / 10 at every element (1/10: the class count; or 0.1 is the learning rate): divided "
                        "by the class count once more? Or the learning rate applied twice?"),  # lr 0.1: both named
    (REF * 1.0001, "scale", "B = 1.0001 x A at every element (not a quantity of the run: a wrong constant?)"),
    (-REF, "sign", "B = -A at every element: a sign flipped (gradient ascent?)"),
    (1 - REF, "sign", "B = 1 - A at every element: sigmoid(-z) where sigmoid(z) was meant?"),
    (REF - 0.01, "offset", "B = A - 0.01 at every element (a constant shift missing or added?)"),
    (np.round(REF, 3), "precision", "B = A rounded to 3 decimals (printed with %.3f and read back?)"),
    (REF[::-1], "layout", "B = A with its rows reversed"),
    (np.roll(REF, 1, axis=0), "layout", "B = A with its rows shifted by 1"),
    (REF.ravel().reshape(REF.shape, order="F"), "layout",
     "B holds A's values read in column-major order (row-major meant)"),
    (np.where(REF > 0, REF, 0.01 * REF), "mask", None),
    (np.where(np.arange(8)[:, None] == 3, REF + 1, REF), "partial",
     "only 1 of 8 rows differ: 3"),
])
def test_each_signature_says_exactly_what_it_sees(bug, kind, detail):
    ref = np.where(REF > 0, REF, 0.0) if kind == "mask" else REF
    found = look(ref, bug, cfg=Config(batch_size=8))
    assert found[0] == kind, found
    if detail is not None:
        assert found[1] == detail
    else:  # the mask: A is relu's 0 where B leaks
        assert found[1].startswith("B equals A except at ") and "where A is 0 and the other is not" in found[1]


def test_precision_in_mantissa_bits_and_the_normalisation_axis():
    p = np.exp(REF) / np.exp(REF).sum(axis=1, keepdims=True)  # (m, 10), rows sum to 1
    low = (p.astype(np.float16)).astype(np.float64)
    kind, detail = look(p, low)
    assert kind == "precision" and detail.startswith("B = A to about ") and "mantissa bits at every element" in detail
    whole = np.exp(REF) / np.exp(REF).sum()
    kind, detail = look(p, whole, op="softmax")
    assert kind == "axis" and detail.startswith("B is normalised over the whole batch: its rows sum to ")
    assert detail.endswith("the whole matrix to 1")


def test_a_reduction_over_every_element_is_named_collapsed():
    dz = RNG.normal(0, 1, (8, 10))
    kind, detail = look(dz.sum(axis=0), np.array(dz.sum()))
    assert kind == "collapsed" and detail.startswith("B is one number, the sum over every element of A (")


@pytest.mark.parametrize("bug", [
    np.where(np.arange(80).reshape(8, 10) < 72, REF / 8, REF),  # a scale on 90% of the elements
    np.where(np.arange(80).reshape(8, 10) < 40, -REF, REF),  # a sign on half
    REF - 0.01 + RNG.normal(0, 1e-3, REF.shape),  # a shift, with noise far above the bound
    np.round(REF, 3) + 1e-4,  # rounded, then moved
    REF[[1, 0, 2, 3, 4, 5, 7, 6]] * 1.5,  # two swaps and a scale: no one pattern
])
def test_near_misses_are_not_called_the_pattern_they_resemble(bug):
    kind, detail = look(REF, bug, cfg=Config(batch_size=8))
    assert kind in ("none", "partial"), (kind, detail)  # never scale, sign, offset, precision or layout


def test_a_scalar_is_a_scale_only_by_a_quantity_of_the_run():
    assert look(np.array(2.0), np.array(2.0 * 64 / 65), cfg=Config(batch_size=64))[0] == "scale"
    assert look(np.array(2.0), np.array(2.37), cfg=Config(batch_size=64))[0] == "none"  # any two numbers are a scale


def test_the_original_story_is_named_in_the_text_the_report_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([str(IMPLS / "numpy"), str(IMPLS / "examples" / "softmax_global_sum"), "--hidden", "16",
                 "--batch-size", "8", "--steps", "2", "--out", str(tmp_path / "r"), "--json", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    at = lines.index("verdict: DIVERGED at step 0, output/softmax (values): the first origin")
    assert lines[at + 1].startswith("  looks like: B is normalised over the whole batch: its rows sum to ")
    assert lines[at + 2] == ("    evidence: A's rows each sum to 1; B's sum over every element is 1 (a sum over the "
                             "matrix where one per sample was meant)")
    d = json.loads((tmp_path / "r.json").read_text())["diagnosis"]
    assert d["kind"] == "axis" and d["checked"] == 80
    assert 'id="diagnosis">Looks like: B is normalised over the whole batch' in (tmp_path / "r.html").read_text()


def test_a_factor_moved_to_the_consumers_is_said_to_leave_training_unaffected(tmp_path, capsys, monkeypatch):
    """1/m taken out of dZ2 and applied to dW2, db2 and dA1 instead: dZ2 is 8x A's, every record computed from it
    agrees."""
    impl = tmp_path / "moved"
    shutil.copytree(IMPLS / "numpy", impl)
    src = (impl / "mlp.py").read_text()
    top = "(divisor if k == L + 1 else 1)"  # the output layer's consumers only
    for old, new in (("dZ = (P - Y) / divisor  #", "dZ = (P - Y)  #"),
                     ('grads[f"{name}/weight"] = dZ.T @ inputs[k - 1]  #',
                      f'grads[f"{{name}}/weight"] = dZ.T @ inputs[k - 1] / {top}  #'),
                     ('grads[f"{name}/bias"] = dZ.sum(axis=0)  #', f'grads[f"{{name}}/bias"] = dZ.sum(axis=0) / {top}  #'),
                     ('dOut = dZ @ params[f"{name}/weight"]  #', f'dOut = dZ @ params[f"{{name}}/weight"] / {top}  #')):
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    (impl / "mlp.py").write_text(src)
    monkeypatch.chdir(tmp_path)
    main([str(IMPLS / "numpy"), str(impl), "--hidden", "16", "--batch-size", "8", "--steps", "2", "--no-html",
          "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert ("  looks like: B = 8 x A, yet output/grad_weight, output/grad_bias, hidden/grad_activation at step 0 "
            "agree: the factor moved to where this record is used, and training is unaffected") in out


def test_a_record_never_computed_is_all_zeros_not_a_scale_of_zero():
    kind, detail = look(REF, np.zeros_like(REF))
    assert (kind, detail) == ("mask", "B is 0 at every element: never computed, never written, or masked out "
                                      "entirely?")


@pytest.mark.parametrize("k, detail", [
    (-0.0004998, "B = A - 0.0005 x hidden/bias of the step before: the weight-decay term missing"),  # within rounding
    (-0.00049, "B = A - 0.00049 x hidden/bias of the step before"),  # 2% off the decay: no name, the fit as it is
    (-1.0002, "B = A - 1 x hidden/bias of the step before: hidden/bias of the step before missing from B"),
])
def test_an_offset_by_a_record_prints_the_named_constant_only_where_it_fits(k, detail):
    cfg = Config(hidden=16, optimizer="momentum", weight_decay=0.0005)
    ref, bias = RNG.normal(0, 1e-3, 16), RNG.normal(0, 1, 16)  # (H,): the decay term as large as ref
    bug = ref + k * bias
    tol = 1e-3 * np.abs(k) * np.abs(bias)  # the constant 0.04% off fits; 2% off does not
    get = {(0, "hidden/bias"): bias}
    d = diagnose(Origin(1, "hidden/bias_velocity", ref, bug, tol, cfg, lambda s, n: get.get((s, n)),
                        lambda s, n: None, U), "velocity")
    assert (d.kind, d.detail.format(ref="A", bug="B")) == ("offset", detail)
    assert f"k = {k:.6g}" in d.evidence  # the fitted factor stays in the evidence


def _planted(tmp_path, old: str, new: str, *options: str) -> dict:
    """numpy against a copy with one line changed, through the command line: the --json result."""
    impl = tmp_path / "planted"
    shutil.copytree(IMPLS / "numpy", impl)
    src = (impl / "mlp.py").read_text()
    assert src.count(old) == 1, old
    (impl / "mlp.py").write_text(src.replace(old, new))
    main([str(IMPLS / "numpy"), str(impl), "--hidden", "16", "--batch-size", "8", "--steps", "2", "--no-html",
          "--out", str(tmp_path / "r"), "--json", str(tmp_path / "r.json"), *options])
    return json.loads((tmp_path / "r.json").read_text())


def test_a_substitution_that_changes_nothing_on_the_reference_is_no_wrong_operand(tmp_path, capsys):
    """relu applied to its own output gives it back on both sides: B = relu(B) fits any B >= 0, so a relu whose
    threshold moved (B = max(z + 1e-3, 0)) was called 'the op applied to hidden/activation'; now no pattern."""
    d = _planted(tmp_path, "return np.maximum(z, 0)", "return np.maximum(z + 1e-3, 0)")
    assert (d["verdict"], d["first"]["step"], d["first"]["name"]) == ("diverged", 0, "hidden/activation")
    assert d["diagnosis"] is None, d["diagnosis"]  # no known pattern, said as such, not as a wrong operand
    assert "looks like: no known pattern" in capsys.readouterr().out


def test_an_op_rounded_to_float32_in_a_float64_run_is_named_precision(tmp_path):
    d = _planted(tmp_path, 'A[k] = activate(cfg["activation"], Z[k])  # (m, H_k)',
                 'A[k] = activate(cfg["activation"], Z[k]).astype(np.float32).astype(dt)', "--dtype", "float64")
    assert (d["verdict"], d["first"]["step"], d["first"]["name"]) == ("diverged", 0, "hidden/activation")
    assert d["diagnosis"]["kind"] == "precision"
    assert d["diagnosis"]["detail"] == ("B = A to about 24 mantissa bits at every element: an op computed in float32 "
                                        "in a float64 run?")


def test_an_update_scaled_far_from_1_is_found_through_a_rounding_it_scales_too(tmp_path):
    """Adam's bias corrections swapped: B's step is (1 - beta1) / (1 - beta2) = 100 times A's at step 0; A's step
    is known only to A's rounding of the weights, which 100 scales too (it was called partial)."""
    d = _planted(tmp_path, "m_hat = adam_m[name] / (1 - beta1 ** (step + 1))",
                 "m_hat = adam_m[name] / (1 - beta2 ** (step + 1))", "--optimizer", "adam", "--lr", "0.001")
    assert (d["verdict"], d["first"]["step"], d["first"]["name"]) == ("diverged", 0, "hidden/weight")
    assert (d["diagnosis"]["kind"], d["diagnosis"]["detail"]) == ("update_scale", "B's update is 100x A's: the learning "
                                                                  "rate (or its schedule, a bias correction) differs, or "
                                                                  "the gradient is clipped by its norm?")


def test_a_record_that_explains_the_difference_comes_before_a_scale_of_no_quantity(tmp_path):
    """A weight decay of 5e-4 on the biases the config does not ask for: B = A - 5e-05 x the bias before (lr 0.1),
    which is also B = A / 1.00005 within the bound; the record is named, not 'a wrong constant'."""
    d = _planted(tmp_path, 'g = grads[name] + cfg["weight_decay"] * params[name]',
                 'g = grads[name] + (5e-4 * params[name] if name.endswith("bias") else 0)', "--init", "uniform",
                 "--hidden", "128", "--batch-size", "64")  # the default size, where the scale fits the bound too
    assert (d["verdict"], d["first"]["step"], d["first"]["name"]) == ("diverged", 0, "hidden/bias")
    assert (d["diagnosis"]["kind"], d["diagnosis"]["detail"]) == ("offset", "B = A - 5e-05 x hidden/bias of the "
                                                                             "step before")


def test_images_read_column_by_column_an_inverted_mask_and_the_other_form_of_momentum():
    images = RNG.integers(0, 256, (4, 784)) / 255  # (m, 784): four 28 x 28 images
    transposed = images.reshape(4, 28, 28).transpose(0, 2, 1).reshape(4, 784)
    assert look(images, transposed) == ("layout", "B holds each row of A as a 28 x 28 image transposed (pixels read "
                                                  "column by column: a column-major image format?)")
    mask = (RNG.random((8, 10)) < 0.8).astype(np.float64)  # (m, H): 1 keeps a unit
    assert look(mask, 1 - mask) == ("sign", "B = 1 - A at every element: a 0/1 mask inverted (kept where dropped)?")
    assert look(REF, 1 - REF)[1].endswith("sigmoid(-z) where sigmoid(z) was meant?")  # values that are no mask
    kind, detail = look(REF, -0.1 * REF, cfg=Config(optimizer="momentum", momentum=0.9, batch_size=8))
    assert (kind, detail) == ("scale", "B = A / -10 at every element (-0.1: minus the learning rate): the velocity "
                                       "kept as momentum x v - lr x g with w += v, where the spec keeps momentum x v + g "
                                       "with w -= lr x v?")
    assert look(REF, -0.1 * REF, cfg=Config(batch_size=8))[1].endswith("(not a quantity of the run: a wrong constant?)")


def test_one_number_is_no_precision_and_a_dropout_scale_of_1_over_p_is_named():
    """A loss 2^-9 off (label smoothing) is within some bits of any other number: no pattern, as for a scale."""
    assert look(np.array(2.3), np.array(2.3 * (1 + 2.0 ** -9))) == ("none", "no known pattern")
    assert look(REF, REF * (1 + 2.0 ** -9 * np.sign(RNG.normal(size=REF.shape))))[0] == "precision"  # many elements
    kind, detail = look(REF, 4 * REF, cfg=Config(batch_size=8, layers=(10, 10), dropout=(0.2,)))
    assert (kind, detail) == ("scale", "B = 4 x A at every element ((1 - 0.2)/0.2: 1/p over 1/(1 - p)): the dropout "
                                       "scale taken as 1/p, the drop rate where the keep rate was meant?")

"""The scorecard's catalogue, case by case: each planted bug is the first origin at exactly its
(step, record), with no origin before it; each benign variant agrees or drifts over 200 steps, and each
systematic order of summation over 100 steps (its suspects are possible rounding, never an origin)."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from harness.catalogue import BENIGN_VARIANTS, BUGS, CATALOGUE, DIAGNOSES, ORDER_VARIANTS
from harness.evaluate import Evaluator, case_config, judge
from harness.spec.records import LOAD, step_records


UNDIAGNOSED = {"matmul-32u", "soft-targets-ignored"}  # no known pattern fits: said so, not guessed
DETAILS = {  # the exact line for a sample of kinds
    "load-column-major": "B holds A's values read in column-major order (row-major meant)",
    "labels-of-previous-batch": "B holds A's input/y of the step before (a stale value: updated late, or taken from "
                                "the previous batch?)",
    "bias-subtracted": "B = A - 2 x hidden/bias of the step before: hidden/bias of the step before subtracted instead "
                       "of added",
    "tanh-slope": "B = dA x (1 - a): the derivative of the activation written wrong",
    "grad-b2-mean": "B = A / 64 at every element (1/64: the batch size): a mean taken twice, or divided by m once more?",
    "backprop-through-updated-w2": "B is the op applied to output/weight as updated by this step, where the graph has "
                                   "it before",
    "grad-b1-from-da1": "B is the op applied to hidden/grad_activation where the graph has hidden/grad_preactivation",
    "update-sign": "B's update is -1.00x A's: the parameters climb the gradient (a sign flipped)",
    "no-decay-on-biases": "B = A - 0.0005 x hidden/bias of the step before: the weight-decay term missing",
    "dropout-before-bias": "B = A x hidden1/dropout_mask x 1.25 at every element (1/(1 - 0.2): the dropout scale): "
                           "hidden1/dropout_mask and that factor applied here, where the graph has neither?",
}


def test_every_bug_carries_its_expected_diagnosis_and_nine_in_ten_are_reachable():
    assert set(DIAGNOSES) == {c.name for c in BUGS}
    assert len(UNDIAGNOSED) <= 0.1 * len(BUGS)


@pytest.fixture(scope="module")
def evaluator(request, tmp_path_factory, mnist):
    root, failed = tmp_path_factory.mktemp("catalogue"), request.session.testsfailed
    yield Evaluator(root, mnist)
    if request.session.testsfailed == failed:  # 2.5 GB of memstates: kept only to look into a failure
        shutil.rmtree(root, ignore_errors=True)


def test_catalogue_covers_what_the_issue_asks():
    phases = {c.phase for c in BUGS}
    assert {"load", "input", "hidden", "output", "loss"} <= phases
    records = {c.expect[1] for c in BUGS}
    assert {"hidden/weight_velocity", "hidden/bias_velocity"} <= records  # momentum
    assert any(c.config.get("activation") == "sigmoid" for c in BUGS)
    assert any(c.config.get("activation") == "tanh" for c in BUGS)
    assert any(c.config.get("loss") == "mse" for c in BUGS)
    assert any(c.expect[0] not in (LOAD, 0) for c in BUGS)  # only after step 0
    assert len(BUGS) >= 20 and len(BENIGN_VARIANTS) >= 12 and len(ORDER_VARIANTS) >= 8
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE)
    for c in BUGS:  # every expectation names a record of its own config
        names = {s.name for s in step_records(case_config(c))}
        assert c.expect[1] in names or c.expect[0] == LOAD, c.name


@pytest.mark.parametrize("case", BUGS, ids=lambda c: c.name)
def test_bug_is_the_first_origin_at_its_exact_record(evaluator, case):
    c = evaluator.compare(case)
    score = judge(case, c)
    assert c.verdict == "diverged"
    first = c.first
    assert (first.step, first.name) == case.expect, f"found {first.where}: {first.note}"
    assert first.is_origin and score.false_origins == 0 and score
    if first.judged_by == "noise" and first.kind == "values":
        assert first.inconsistent == "B"  # the edited side, and only it, is not its own op
    # what it looks like: the kind the catalogue expects, or honestly no known pattern for the two it cannot name
    expected = "none" if case.name in UNDIAGNOSED else DIAGNOSES[case.name]
    assert first.diagnosis is not None and first.diagnosis.kind == expected, first.diagnosis
    if case.name in DETAILS:
        assert first.diagnosis.detail == DETAILS[case.name]
    if case.name in EVIDENCE:  # which evidence made the call
        assert first.evidence.startswith(EVIDENCE[case.name]), first.evidence


EVIDENCE = {
    "matmul-32u": "8192 of 8192 element(s) beyond random rounding (up to 6.77x), within what some order of "
                  "summation can round, but leaning one way across the record (t = 87.2 > 6)",
    "grad-b2-mean": "10 element(s) beyond the most any order of summation can round",
}


@pytest.mark.parametrize("case", BENIGN_VARIANTS + [pytest.param(c, marks=pytest.mark.slow)  # the widest first
                                           for c in sorted(ORDER_VARIANTS, key=lambda c: -case_config(c).hidden)],
                         ids=lambda c: c.name)
def test_benign_variant_agrees_or_drifts(evaluator, case):
    c = evaluator.compare(case)
    steps = case_config(case).steps
    assert steps >= 100 and len({r.step for r in c.records}) == steps + 1  # load + every step compared
    assert c.verdict in ("agree", "drift") and c, [(o.where, o.evidence) for o in c.origins[:3]]
    assert not c.origins
    if case.name in SUSPECTED:  # beyond random rounding somewhere, yet not an origin: the grade at work
        assert c.suspects and all(0 < s.worst_case_ratio <= 1 and s.systematic <= 6 for s in c.suspects)
        assert SUSPECTED[case.name] in {s.name for s in c.suspects}


SUSPECTED = {  # the systematic orders that go beyond random rounding (measured 1.9x to 5x), and where. Measured
    # with one BLAS thread (tests/conftest.py): sums-by-value-adam, whose sorted batch sums reach 3.1x the random
    # rounding from step 18 when numpy's matmuls run on two threads, stays within 0.23x of it on one.
    "dot-products-sorted": "hidden/matmul", "dot-products-sorted-down-adam": "hidden/matmul",
    "sums-by-value-sigmoid-mse": "hidden/grad_bias", "sorted-and-grouped-h800": "hidden/grad_bias",
}


def test_scorecard_command_prints_the_table_and_totals(tmp_path):
    cases = ["softmax-global-sum", "momentum-0.99", "matmul-32u", "relu-as-where"]
    r = subprocess.run([sys.executable, "-m", "harness.evaluate", *cases, "--steps", "3", "--json", tmp_path / "s.json"],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bugs: 3/3 found as the first origin at the exact step and record" in r.stdout
    assert "benign variants: 1/1 agree or drift" in r.stdout and "false origins: 0" in r.stdout
    assert ("diagnoses: 2/3 of the kind expected (67%), 0 of another kind (0%), 1 with no known pattern"
            in r.stdout)
    rows = {s["case"]: s for s in json.loads((tmp_path / "s.json").read_text())}
    assert rows["momentum-0.99"]["found"] == "step 1, hidden/weight_velocity" and rows["momentum-0.99"]["ok"]
    assert (rows["momentum-0.99"]["diagnosis"], rows["momentum-0.99"]["diagnosis_expected"]) == ("offset", "offset")
    assert rows["momentum-0.99"]["diagnosis_detail"] == "B = A + 0.09 x hidden/weight_velocity of the step before"


def test_scorecard_fails_on_a_wrong_expectation(tmp_path, evaluator):
    """judge() is not a rubber stamp: the same comparison scored against a wrong record fails."""
    case = next(c for c in BUGS if c.name == "grad-b2-mean")
    c = evaluator.compare(case)
    wrong = type(case)(case.name, case.kind, case.what, case.edits, (0, "output/grad_weight"), case.config)
    assert judge(case, c) and not judge(wrong, c)
    benign = type(case)("x", "benign", "", ())
    assert not judge(benign, c)  # an origin in a benign variant fails it

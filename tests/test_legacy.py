"""Legacy one-step dumps (samples as columns) compared against a harness run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from harness.compare.stream import compare_memstates
from harness.spec.config import Config
from harness.store.legacy import convert_legacy

CFG = Config(hidden=10, batch_size=32, steps=3, lr=0.1)


def legacy_dump(job_dir, path, scalar_bias_grads=False):
    """One training step the way the memstate story's Python did it: X is (784, m), dZ2 = A2 - ohY,
    dW2 = dZ2 . A1^T / m. Written independently of every implementation in impls/."""
    job = json.loads((job_dir / "job.json").read_text())
    t = json.loads((job_dir / "params.json").read_text())["tensors"]
    W1, b1, W2, b2 = (np.array(t[k]["data"]).reshape(t[k]["shape"]) for k in ("W1", "b1", "W2", "b2"))
    b1, b2 = b1.reshape(-1, 1), b2.reshape(-1, 1)
    m = job["batch_size"]
    X = np.fromfile(job_dir / "images.u8", np.uint8)[:m * 784].reshape(m, 784).T / 255.0  # (784, m)
    Y = np.fromfile(job_dir / "labels.u8", np.uint8)[:m].astype(int)
    Z1 = W1.dot(X) + b1
    A1 = np.maximum(Z1, 0)
    Z2 = W2.dot(A1) + b2
    A2 = np.exp(Z2 - Z2.max(axis=0)) / np.exp(Z2 - Z2.max(axis=0)).sum(axis=0)
    ohY = np.zeros((10, m))
    ohY[Y, np.arange(m)] = 1
    dZ2 = A2 - ohY
    dW2 = dZ2.dot(A1.T) / m
    db2 = np.sum(dZ2) / m if scalar_bias_grads else dZ2.sum(axis=1, keepdims=True) / m
    dZ1 = W2.T.dot(dZ2) * (Z1 > 0)
    dW1 = dZ1.dot(X.T) / m
    db1 = np.sum(dZ1) / m if scalar_bias_grads else dZ1.sum(axis=1, keepdims=True) / m
    lr = job["config"]["lr"]
    W1, b1, W2, b2 = W1 - lr * dW1, b1 - lr * db1, W2 - lr * dW2, b2 - lr * db2
    dump = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dict(
        X=X, Y=Y, Z1=Z1, A1=A1, Z2=Z2, A2=A2, ohY=ohY, dZ2=dZ2, dW2=dW2, db2=db2, dZ1=dZ1, dW1=dW1, db1=db1,
        W1=W1, b1=b1, W2=W2, b2=b2).items()}
    path.write_text(json.dumps(dump))
    return path


def test_legacy_dump_agrees_with_a_harness_run(runs, tmp_path):
    numpy = runs.run("numpy", CFG)
    dump = legacy_dump(runs.job(CFG).dir, tmp_path / "step0.json")
    r = subprocess.run([sys.executable, "-m", "harness.compare", numpy.dir, dump, "--out", tmp_path / "run"],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: AGREE" in r.stdout
    assert "B output/grad_logits: dZ2 divided by m = 32" in r.stdout
    assert "B cannot hold step 0 hidden/matmul: the dump has Z1 but not X W1^T before the bias" in r.stdout
    assert "different parameter files" not in r.stdout and "different configs" not in r.stdout
    c = compare_memstates(numpy, convert_legacy(dump, tmp_path / "again"))
    compared = {r.name for r in c.records if r.step == 0}
    assert compared == {"input/x", "input/y", "hidden/bias_add", "hidden/activation", "output/bias_add",
                        "output/softmax", "output/grad_logits", "output/grad_weight", "output/grad_bias",
                        "hidden/grad_preactivation", "hidden/grad_weight", "hidden/grad_bias",
                        "hidden/weight", "hidden/bias", "output/weight", "output/bias"}


def test_scalar_bias_gradients_are_named_as_unmappable(runs, tmp_path):
    dump = legacy_dump(runs.job(CFG).dir, tmp_path / "step0.json", scalar_bias_grads=True)
    c = compare_memstates(runs.run("numpy", CFG), convert_legacy(dump, tmp_path / "m"))
    text = " ".join(c.notes)
    assert "cannot hold step 0 output/grad_bias: db2 is a single number" in text
    assert "cannot hold step 0 hidden/grad_bias: db1 is a single number" in text
    # the scalar db is the tutorial's bug: the biases it updates disagree with the spec's
    assert (c.first.step, c.first.name) == (0, "hidden/bias")


def test_legacy_dump_with_a_wrong_x_layout_is_rejected(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"X": [[0.0] * 3] * 5, "Z1": [[0.0]], "W1": [[0.0]]}))
    with pytest.raises(Exception, match=r"legacy 'X' has shape \(5, 3\), expected \(784, m\)"):
        convert_legacy(tmp_path / "bad.json", tmp_path / "m")

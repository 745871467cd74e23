"""A port in a language the harness knows nothing about: JavaScript on the kit (kits/js), the way
docs/porting.md shows it."""

import shutil
from pathlib import Path

import pytest

from harness.compare.stream import compare_memstates
from harness.spec.config import Config

KIT = Path(__file__).resolve().parents[1] / "kits" / "js"
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: no JavaScript port to run")


def js_port(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    """A copy of the kit and its example port, with one line of the port changed."""
    kit = tmp_path / "js-kit"
    shutil.copytree(KIT, kit)
    port = kit / "example" / "mlp.mjs"
    source = port.read_text()
    if replace:
        assert source.count(replace[0]) == 1
        source = source.replace(*replace)
    port.write_text(source)
    return kit / "example"


@pytest.mark.parametrize("config", [
    Config(hidden=16, batch_size=8, steps=5, dtype="float64"),
    Config(hidden=16, batch_size=8, steps=5),
    Config(hidden=16, batch_size=8, steps=5, activation="tanh", loss="mse", optimizer="momentum", weight_decay=1e-3),
    Config(layers=(16, 12, 8), dropout=(0.2,), batch_size=8, steps=5, optimizer="momentum"),
    Config(layers=(16, 12), activation="sigmoid", loss="mse", squared_error="half_sum", batch_reduction="sum",
           target_min=0.01, target_max=0.99, lr=0.05, batch_size=8, steps=5, dtype="float64"),
], ids=["relu-ce-sgd-f64", "relu-ce-sgd-f32", "tanh-mse-momentum-f32", "three-layers-dropout-momentum-f32",
        "two-layers-half-sum-soft-targets-f64"])
def test_javascript_port_agrees_with_numpy(runs, tmp_path, config):
    c = compare_memstates(runs.run("numpy", config), runs.run(js_port(tmp_path), config))
    assert c, f"{c.first.where}: {c.first.kind} {c.first.note}"
    assert c.b.manifest["runtime"]["versions"]["node"].startswith("v")
    assert not c.origins


def test_planted_bug_in_the_javascript_port(runs, tmp_path):
    config = Config(hidden=16, batch_size=8, steps=3)
    bug = js_port(tmp_path, ("if (ce) P[i * C + c] = r(P[i * C + c] / total);", "if (ce) P[i * C + c] = r(P[i * C + c] / (total + 1e-3));"))
    c = compare_memstates(runs.run("numpy", config), runs.run(bug, config))
    assert (c.first.step, c.first.name, c.first.kind) == (0, "output/softmax", "values")


def test_planted_dropout_bug_in_the_javascript_port(runs, tmp_path):
    """The mask applied without its 1 / (1 - p) scale: named at the first hidden layer's dropout."""
    config = Config(layers=(16, 12), dropout=(0.2,), batch_size=8, steps=2)
    bug = js_port(tmp_path, ("keep[k] = Array.from(bits, (bit) => (bit ? scale : 0));", "keep[k] = Array.from(bits, (bit) => (bit ? 1 : 0));"))
    c = compare_memstates(runs.run("numpy", config), runs.run(bug, config))
    assert (c.first.step, c.first.name, c.first.kind, c.first.role) == (0, "hidden1/dropout", "values", "origin")

"""The records and the dataflow graph are generated from a description of the network: for 784-H-10 they
are exactly the spec's table (docs/protocol.md), and a deeper network gets one block of records per layer
with every input computed before it is read."""

import pytest

from harness.judge.noise import Inputs, expected
from harness.spec.config import Config
from harness.spec.network import INPUT, Layer, Network, network
from harness.spec.records import expected_order, graph, parameter_size, records_of, step_records

# The spec's table for relu, softmax + cross-entropy and SGD: name, inputs of the step, the step before's.
SPEC = [
    ("input/x", (), ()), ("input/y", (), ()),
    ("hidden/matmul", ("input/x",), ("hidden/weight",)),
    ("hidden/bias_add", ("hidden/matmul",), ("hidden/bias",)),
    ("hidden/activation", ("hidden/bias_add",), ()),
    ("output/matmul", ("hidden/activation",), ("output/weight",)),
    ("output/bias_add", ("output/matmul",), ("output/bias",)),
    ("output/softmax", ("output/bias_add",), ()),
    ("loss/value", ("output/softmax", "input/y"), ()),
    ("output/grad_logits", ("output/softmax", "input/y"), ()),
    ("output/grad_weight", ("output/grad_logits", "hidden/activation"), ()),
    ("output/grad_bias", ("output/grad_logits",), ()),
    ("hidden/grad_activation", ("output/grad_logits",), ("output/weight",)),
    ("hidden/grad_preactivation", ("hidden/grad_activation", "hidden/bias_add", "hidden/activation"), ()),
    ("hidden/grad_weight", ("hidden/grad_preactivation", "input/x"), ()),
    ("hidden/grad_bias", ("hidden/grad_preactivation",), ()),
    ("hidden/weight", ("hidden/grad_weight",), ("hidden/weight",)),
    ("hidden/bias", ("hidden/grad_bias",), ("hidden/bias",)),
    ("output/weight", ("output/grad_weight",), ("output/weight",)),
    ("output/bias", ("output/grad_bias",), ("output/bias",)),
]


def test_one_hidden_layer_is_the_spec_table():
    assert [(s.name, s.inputs, s.previous) for s in step_records(Config())] == SPEC
    cfg = Config(hidden=7, loss="mse", optimizer="momentum")
    names = [s.name for s in step_records(cfg)]
    assert "output/sigmoid" in names and "output/softmax" not in names
    assert names[-8:] == ["hidden/weight_velocity", "hidden/bias_velocity", "output/weight_velocity",
                          "output/bias_velocity", "hidden/weight", "hidden/bias", "output/weight", "output/bias"]
    assert [parameter_size(p, cfg) for p in network(cfg).parameters] == [7 * 784, 7, 10 * 7, 10]
    assert len(expected_order(cfg)) == 4 + cfg.steps * len(names)


def deep() -> Network:
    """784 -> 256 (relu) -> 128 (tanh) -> 10 (softmax), Adam."""
    h1 = Layer("hidden1", INPUT, 784, 256, "relu")
    h2 = Layer("hidden2", h1.out, 256, 128, "tanh")
    return Network((h1, h2, Layer("output", h2.out, 128, 10, "softmax", output=True)), "cross_entropy", "adam")


def test_a_deeper_network_gets_a_block_of_records_per_layer_in_dataflow_order():
    net = deep()
    specs = records_of(net)
    names = [s.name for s in specs]
    assert names[2:12] == [f"{n}/{op}" for n in ("hidden1", "hidden2") for op in ("matmul", "bias_add", "activation")
                           ] + ["output/matmul", "output/bias_add", "output/softmax", "loss/value"]
    assert names.index("hidden2/grad_activation") < names.index("hidden2/grad_preactivation") < \
        names.index("hidden1/grad_activation") < names.index("hidden1/grad_preactivation")
    by = {s.name: s for s in specs}
    assert by["hidden1/grad_activation"].inputs == ("hidden2/grad_preactivation",)
    assert by["hidden1/grad_activation"].previous == ("hidden2/weight",)
    assert by["hidden2/grad_weight"].inputs == ("hidden2/grad_preactivation", "hidden1/activation")
    seen = set()
    for s in specs:  # every input of the step is written before it is read
        assert all(i in seen for i in s.inputs), s
        seen.add(s.name)
    assert sum(s.op == "update" for s in specs) == 6 and sum(s.op == "adam_v" for s in specs) == 6


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_op_of_the_graph_has_a_form_in_the_noise_model(optimizer):
    """The noise model dispatches on the graph's ops: each record of the config gets a form (a record the
    model does not know would raise KeyError)."""
    import numpy as np
    cfg = Config(hidden=3, batch_size=2, optimizer=optimizer)
    rng = np.random.default_rng(0)
    shapes = {"input/x": (2, 784), "input/y": (2,), "loss/value": ()}
    for p, shape in zip(network(cfg).parameters, [(3, 784), (3,), (10, 3), (10,)]):
        shapes[p] = shape
    for s in step_records(cfg):
        if s.name not in shapes:
            ref = s.name.partition("_")[0] if s.op in ("velocity", "adam_m", "adam_v") else s.name
            layer = network(cfg).layer(s.layer)
            shapes[s.name] = shapes.get(ref) or ((layer.width, layer.fan_in) if s.op == "grad_weight" else
                                                 (layer.width,) if s.op == "grad_bias" else
                                                 (2, 10 if layer.output else 3))
    values = {n: (rng.integers(0, 10, shape) if n == "input/y" else rng.random(shape)) for n, shape in shapes.items()}
    inp = Inputs(lambda step, name: values.get(name), 0)
    for s in graph(cfg).values():
        model = expected(s.name, cfg, inp, 2.0 ** -24)
        assert model.value is not None or s.op == "source", s.name


def test_the_flat_layout_s_import_paths_give_the_same_modules():
    import importlib

    import harness.compare.stream
    import harness.store.memstate
    old = importlib.import_module("harness.comparator")
    assert old is harness.compare.stream and importlib.import_module("harness.memstate") is harness.store.memstate
    from harness.memstate import Memstate
    assert Memstate is harness.store.memstate.Memstate
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("harness.no_such_module")

"""The spec's records: their names, the order a step writes them in, and the dataflow graph.

A record is identified by (step, name). Steps are integers from 0; the parameters as
loaded are the pseudo-step "load", which comes before step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from harness.spec.config import Config
from harness.spec.network import INPUT, LABELS, LOSS, Network, gradient_of, network

Step = int | Literal["load"]
LOAD: Literal["load"] = "load"
PARAMETERS = network(Config()).parameters  # 784-H-10's: hidden/weight, hidden/bias, output/weight, output/bias
STATE_SUFFIXES = ("_velocity", "_adam_m", "_adam_v")  # an optimizer buffer's name: its parameter's, then one of these
# The factor a side multiplied its loss by before the backward pass (a float16 loss scale), shape (): its
# step's gradient records are of the scaled loss, and are read divided by it. Each side's own, never compared.
LOSS_SCALE = "loss/scale"


def is_gradient(name: str) -> bool:
    """A backward record (grad_logits, grad_weight, ...): a gradient of the loss."""
    return name.rpartition("/")[2].startswith("grad_")


@dataclass(frozen=True)
class RecordSpec:
    """One record of a step: its name, phase, op and layer, and what it is computed from.

    `inputs` are records of the same step; `previous` are parameter-like records of the step before
    (the loaded parameters at step 0). `op` says which form of the noise model computes it (source,
    matmul, bias_add, activation, dropout, softmax, sigmoid, loss, grad_logits, grad_weight, grad_bias,
    grad_activation, grad_preactivation, velocity, adam_m, adam_v, update); `layer` names its layer.
    """

    name: str
    phase: str
    inputs: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()
    op: str = ""
    layer: str = ""


def parameter_size(name: str, config: Config) -> int:
    """How many elements a parameter of this config holds: a layer's weight is (width, fan_in), its bias
    (width,)."""
    layer = network(config).layer(name.partition("/")[0])
    return layer.width * layer.fan_in if name == layer.weight else layer.width


def velocity(param: str) -> str:
    """The momentum buffer record of a parameter: hidden/weight -> hidden/weight_velocity."""
    return param + "_velocity"


def adam_m(param: str) -> str:
    """Adam's first moment (the running mean of the gradient) of a parameter."""
    return param + "_adam_m"


def adam_v(param: str) -> str:
    """Adam's second moment (the running mean of the squared gradient) of a parameter."""
    return param + "_adam_v"


@cache
def step_records(config: Config) -> tuple[RecordSpec, ...]:
    """The records of one training step of a config, in the order the spec fixes."""
    return records_of(network(config))


def records_of(net: Network) -> tuple[RecordSpec, ...]:
    """The records of one training step of a network, generated from its layers: the batch; each layer's
    matmul, bias add and activation; the loss; from the top layer down, the gradient of its pre-activation,
    of its weight and bias, and of the activation of the layer below; the optimizer's update."""
    out = net.output
    specs = [RecordSpec(INPUT, "input", op="source"), RecordSpec(LABELS, "input", op="source")]
    for layer in net.layers:
        act = layer.activation if layer.output else "activation"
        specs += [RecordSpec(layer.record("matmul"), "forward", (layer.source,), (layer.weight,), "matmul", layer.name),
                  RecordSpec(layer.record("bias_add"), "forward", (layer.record("matmul"),), (layer.bias,), "bias_add",
                             layer.name),
                  RecordSpec(layer.activated, "forward", (layer.record("bias_add"),), (), act, layer.name)]
        if layer.drop:  # the mask is data; the dropped activation is A * mask / (1 - p)
            specs += [RecordSpec(layer.mask, "forward", op="source", layer=layer.name),
                      RecordSpec(layer.out, "forward", (layer.activated, layer.mask), (), "dropout", layer.name)]
    specs.append(RecordSpec(LOSS, "loss", (out.out, LABELS), (), "loss", out.name))
    for i in reversed(range(len(net.layers))):
        layer = net.layers[i]
        if layer.output:
            specs.append(RecordSpec(layer.pre_grad, "backward", (out.out, LABELS), (), "grad_logits", layer.name))
        else:  # its derivative reads Z for relu, and A (or Z) for sigmoid and tanh
            specs.append(RecordSpec(layer.pre_grad, "backward", (layer.record("grad_activation"),
                                    layer.record("bias_add"), layer.activated), (), "grad_preactivation", layer.name))
        specs += [RecordSpec(layer.record("grad_weight"), "backward", (layer.pre_grad, layer.source), (), "grad_weight",
                             layer.name),
                  RecordSpec(layer.record("grad_bias"), "backward", (layer.pre_grad,), (), "grad_bias", layer.name)]
        if i > 0:
            below = net.layers[i - 1]
            specs.append(RecordSpec(below.grad_out, "backward", (layer.pre_grad,), (layer.weight,),
                                    "grad_activation", below.name))
            if below.drop:  # back through the dropout: the same mask and scale
                specs.append(RecordSpec(below.record("grad_activation"), "backward", (below.grad_out, below.mask), (),
                                        "dropout", below.name))
    params = net.parameters
    if net.optimizer == "adam":
        for kind in (adam_m, adam_v):
            specs += [RecordSpec(kind(p), "update", (gradient_of(p),), (kind(p), p), kind.__name__, p.partition("/")[0])
                      for p in params]
        specs += [RecordSpec(p, "update", (adam_m(p), adam_v(p)), (p,), "update", p.partition("/")[0]) for p in params]
    elif net.optimizer == "momentum":
        specs += [RecordSpec(velocity(p), "update", (gradient_of(p),), (velocity(p), p), "velocity", p.partition("/")[0])
                  for p in params]
        specs += [RecordSpec(p, "update", (velocity(p),), (p,), "update", p.partition("/")[0]) for p in params]
    else:
        specs += [RecordSpec(p, "update", (gradient_of(p),), (p,), "update", p.partition("/")[0]) for p in params]
    return tuple(specs)


@cache
def graph(config: Config) -> dict[str, RecordSpec]:
    """Every record of a step by name."""
    return {s.name: s for s in step_records(config)}


def load_records(config: Config) -> list[RecordSpec]:
    """The records of the load pseudo-step: the parameters as the implementation loaded them."""
    return [RecordSpec(p, "load") for p in network(config).parameters]


def is_state(name: str) -> bool:
    """Whether a record is training state a step hands the next: a parameter or an optimizer buffer."""
    base = next((name[:-len(s)] for s in STATE_SUFFIXES if name.endswith(s)), name)
    return base.endswith(("/weight", "/bias"))


def omissible(config: Config) -> list[str]:
    """The records a port may declare it does not compute: every op of a step but the data (the inputs,
    the dropout masks) and the state a step hands the next (parameters, optimizer buffers), from which
    the rest is judged."""
    return [s.name for s in step_records(config) if s.op != "source" and not is_state(s.name)]


def check_missing(config: Config | None, names: object) -> str | None:
    """Why a declared list of records not computed is wrong for this config (without one, only that it is
    a list of names); None when it is right."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return f"must be a list of record names, got {str(names)[:60]}"
    if config is None:
        return None
    allowed = omissible(config)
    for n in names:
        if n not in allowed:
            why = ("it is data the harness hands out or state the next step starts from, from which the rest is "
                   "judged" if n in graph(config) else "this config has no such record")
            return f"{n!r} cannot be declared missing: {why}"
    return None


def expected_order(config: Config) -> list[tuple[Step, str]]:
    """Every (step, name) a complete memstate of this config holds, in comparison order."""
    keys: list[tuple[Step, str]] = [(LOAD, s.name) for s in load_records(config)]
    names = [s.name for s in step_records(config)]
    for step in range(config.steps):
        keys.extend((step, n) for n in names)
    return keys


def step_label(step: Step) -> str:
    return "load" if step == LOAD else f"step {step}"

"""The spec's records: their names, the order a step writes them in, and the dataflow graph.

A record is identified by (step, name). Steps are integers from 0; the parameters as
loaded are the pseudo-step "load", which comes before step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.spec.config import Config

Step = int | Literal["load"]
LOAD: Literal["load"] = "load"
PARAMETERS = ("hidden/weight", "hidden/bias", "output/weight", "output/bias")
GRADIENT_OF = {
    "hidden/weight": "hidden/grad_weight",
    "hidden/bias": "hidden/grad_bias",
    "output/weight": "output/grad_weight",
    "output/bias": "output/grad_bias",
}


@dataclass(frozen=True)
class RecordSpec:
    """One record of a step: its name, phase, and what it is computed from.

    `inputs` are records of the same step; `previous` are parameter-like records
    of the step before (the loaded parameters at step 0).
    """

    name: str
    phase: str
    inputs: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()


def parameter_size(name: str, config: Config, inputs: int = 784, classes: int = 10) -> int:
    """How many elements a parameter of this config holds: W1 is (H, inputs), b1 (H,), W2 (classes, H), b2
    (classes,)."""
    return {"hidden/weight": config.hidden * inputs, "hidden/bias": config.hidden,
            "output/weight": classes * config.hidden, "output/bias": classes}[name]


def velocity(param: str) -> str:
    """The momentum buffer record of a parameter: hidden/weight -> hidden/weight_velocity."""
    return param + "_velocity"


def adam_m(param: str) -> str:
    """Adam's first moment (the running mean of the gradient) of a parameter."""
    return param + "_adam_m"


def adam_v(param: str) -> str:
    """Adam's second moment (the running mean of the squared gradient) of a parameter."""
    return param + "_adam_v"


BUFFERS = {"sgd": (), "momentum": (velocity,), "adam": (adam_m, adam_v)}  # the optimizer state, per parameter


def buffers(config: Config) -> list[str]:
    """The optimizer's state records a step hands the next one, besides the parameters."""
    return [kind(p) for kind in BUFFERS[config.optimizer] for p in PARAMETERS]


def step_records(config: Config) -> list[RecordSpec]:
    """The records of one training step, in the order the spec fixes."""
    out = config.output  # "softmax" or "sigmoid"
    probs = f"output/{out}"
    # The hidden derivative reads Z1 for relu, and A1 (or Z1) for sigmoid and tanh.
    act_inputs = ("hidden/grad_activation", "hidden/bias_add", "hidden/activation")
    specs = [
        RecordSpec("input/x", "input"),
        RecordSpec("input/y", "input"),
        RecordSpec("hidden/matmul", "forward", ("input/x",), ("hidden/weight",)),
        RecordSpec("hidden/bias_add", "forward", ("hidden/matmul",), ("hidden/bias",)),
        RecordSpec("hidden/activation", "forward", ("hidden/bias_add",)),
        RecordSpec("output/matmul", "forward", ("hidden/activation",), ("output/weight",)),
        RecordSpec("output/bias_add", "forward", ("output/matmul",), ("output/bias",)),
        RecordSpec(probs, "forward", ("output/bias_add",)),
        RecordSpec("loss/value", "loss", (probs, "input/y")),
        RecordSpec("output/grad_logits", "backward", (probs, "input/y")),
        RecordSpec("output/grad_weight", "backward", ("output/grad_logits", "hidden/activation")),
        RecordSpec("output/grad_bias", "backward", ("output/grad_logits",)),
        RecordSpec("hidden/grad_activation", "backward", ("output/grad_logits",), ("output/weight",)),
        RecordSpec("hidden/grad_preactivation", "backward", act_inputs),
        RecordSpec("hidden/grad_weight", "backward", ("hidden/grad_preactivation", "input/x")),
        RecordSpec("hidden/grad_bias", "backward", ("hidden/grad_preactivation",)),
    ]
    if config.optimizer == "adam":
        for kind in (adam_m, adam_v):
            for p in PARAMETERS:
                specs.append(RecordSpec(kind(p), "update", (GRADIENT_OF[p],), (kind(p), p)))
        for p in PARAMETERS:
            specs.append(RecordSpec(p, "update", (adam_m(p), adam_v(p)), (p,)))
    elif config.optimizer == "momentum":
        for p in PARAMETERS:
            specs.append(RecordSpec(velocity(p), "update", (GRADIENT_OF[p],), (velocity(p), p)))
        for p in PARAMETERS:
            specs.append(RecordSpec(p, "update", (velocity(p),), (p,)))
    else:
        for p in PARAMETERS:
            specs.append(RecordSpec(p, "update", (GRADIENT_OF[p],), (p,)))
    return specs


def load_records() -> list[RecordSpec]:
    """The records of the load pseudo-step: the parameters as the implementation loaded them."""
    return [RecordSpec(p, "load") for p in PARAMETERS]


def expected_order(config: Config) -> list[tuple[Step, str]]:
    """Every (step, name) a complete memstate of this config holds, in comparison order."""
    keys: list[tuple[Step, str]] = [(LOAD, s.name) for s in load_records()]
    names = [s.name for s in step_records(config)]
    for step in range(config.steps):
        keys.extend((step, n) for n in names)
    return keys


def step_label(step: Step) -> str:
    return "load" if step == LOAD else f"step {step}"

"""The network as a description: its layers (each a matmul, a bias add and an activation), its loss and
its optimizer. The records a step writes and the dataflow graph between them (records.py) are generated
from it, and so are the noise model's dispatch and the report's chain, so that a network of more layers
changes this description, not the comparator, the noise model's op forms or the report.

Today every config describes 784-H-10: one hidden layer named `hidden` and the output layer `output`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from harness.spec.config import Config

INPUT, LABELS = "input/x", "input/y"  # the batch: pixels and class indices, data the harness hands out
LOSS = "loss/value"
PIXELS, CLASSES = 784, 10


@dataclass(frozen=True)
class Layer:
    """One affine layer and its activation: `source` (m, fan_in) @ weight^T (fan_in -> width) + bias."""

    name: str  # the records' prefix: hidden, output
    source: str  # the record it reads: input/x, or the activation of the layer below
    fan_in: int
    width: int
    activation: str  # relu | sigmoid | tanh for a hidden layer; softmax | sigmoid for the output
    output: bool = False  # the last layer: its activation gives the probabilities the loss reads

    @property
    def weight(self) -> str:
        return f"{self.name}/weight"

    @property
    def bias(self) -> str:
        return f"{self.name}/bias"

    def record(self, op: str) -> str:
        return f"{self.name}/{op}"

    @property
    def out(self) -> str:
        """The record of its activation: hidden/activation; the output's is named for the function,
        output/softmax or output/sigmoid."""
        return self.record(self.activation if self.output else "activation")

    @property
    def pre_grad(self) -> str:
        """The gradient of the loss with respect to its pre-activation (the output's: grad_logits)."""
        return self.record("grad_logits" if self.output else "grad_preactivation")


@dataclass(frozen=True)
class Network:
    """The layers from input to output, the loss and the optimizer of one config."""

    layers: tuple[Layer, ...]
    loss: str  # cross_entropy | mse
    optimizer: str  # sgd | momentum | adam

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter record, layer by layer, weight before bias."""
        return tuple(p for layer in self.layers for p in (layer.weight, layer.bias))

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)


@cache
def network(config: Config) -> Network:
    """The network a config describes: 784 -> hidden (H, the config's activation) -> 10 (softmax for
    cross-entropy, sigmoid for MSE)."""
    hidden = Layer("hidden", INPUT, PIXELS, config.hidden, config.activation)
    output = Layer("output", hidden.out, config.hidden, CLASSES, config.output, output=True)
    return Network((hidden, output), config.loss, config.optimizer)


def gradient_of(param: str) -> str:
    """The gradient record of a parameter: hidden/weight -> hidden/grad_weight."""
    layer, _, kind = param.partition("/")
    return f"{layer}/grad_{kind}"

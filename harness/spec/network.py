"""The network as a description: its layers (each a matmul, a bias add and an activation, a hidden one
optionally followed by dropout), its loss and its optimizer. The records a step writes and the dataflow
graph between them (records.py) are generated from it, and so are the noise model's dispatch and the
report's chain, so that a network of more layers changes this description, not the comparator, the noise
model's op forms or the report.

784-H-10 has one hidden layer named `hidden` and the output layer `output`; a deeper network names its
hidden layers `hidden1`, `hidden2`, ... from the input side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from harness.spec.config import Config

INPUT, LABELS = "input/x", "input/y"  # the batch: pixels and class indices, data the harness hands out
LOSS = "loss/value"
CLASSES = 10


@dataclass(frozen=True)
class Layer:
    """One affine layer and its activation: `source` (m, fan_in) @ weight^T (fan_in -> width) + bias."""

    name: str  # the records' prefix: hidden (hidden1, hidden2, ...), output
    source: str  # the record it reads: input/x, or the activation (or dropout) of the layer below
    fan_in: int
    width: int
    activation: str  # relu | sigmoid | tanh for a hidden layer; softmax | sigmoid for the output
    output: bool = False  # the last layer: its activation gives the probabilities the loss reads
    drop: float = 0.0  # inverted dropout's drop probability after the activation (hidden layers only)
    index: int = 0  # 1 for the first layer, counting from the input: the parameter file's W1, b1, ...

    @property
    def weight(self) -> str:
        return f"{self.name}/weight"

    @property
    def bias(self) -> str:
        return f"{self.name}/bias"

    def record(self, op: str) -> str:
        return f"{self.name}/{op}"

    @property
    def activated(self) -> str:
        """The record of its activation: hidden/activation; the output's is named for the function,
        output/softmax or output/sigmoid."""
        return self.record(self.activation if self.output else "activation")

    @property
    def out(self) -> str:
        """The record the layer above reads: its dropout where it has one, else its activation."""
        return self.record("dropout") if self.drop else self.activated

    @property
    def keep_scale(self) -> float:
        """What inverted dropout multiplies a kept unit by: 1 / (1 - p)."""
        return 1.0 / (1.0 - self.drop)

    @property
    def mask(self) -> str:
        """Its dropout mask record (1 keeps a unit, 0 drops it), data the harness hands out."""
        return self.record("dropout_mask")

    @property
    def grad_out(self) -> str:
        """The gradient of the loss with respect to `out`: grad_activation, or with dropout grad_dropout."""
        return self.record("grad_dropout" if self.drop else "grad_activation")

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

    @property
    def hidden(self) -> tuple[Layer, ...]:
        return self.layers[:-1]

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)


def layer_names(depth: int) -> tuple[str, ...]:
    """The hidden layers' names: `hidden` for one, `hidden1`, `hidden2`, ... for more."""
    return ("hidden",) if depth == 1 else tuple(f"hidden{k}" for k in range(1, depth + 1))


@cache
def network(config: Config) -> Network:
    """The network a config describes: its input width (784 for MNIST) -> each hidden width (the config's
    activation, then its dropout) -> 10 (softmax for cross-entropy, sigmoid for MSE)."""
    layers: list[Layer] = []
    source, fan_in = INPUT, config.input_width
    for k, (name, width) in enumerate(zip(layer_names(len(config.widths)), config.widths)):
        layer = Layer(name, source, fan_in, width, config.activation, drop=config.drop(k), index=k + 1)
        layers.append(layer)
        source, fan_in = layer.out, width
    layers.append(Layer("output", source, fan_in, CLASSES, config.output, output=True, index=len(layers) + 1))
    return Network(tuple(layers), config.loss, config.optimizer)


def gradient_of(param: str) -> str:
    """The gradient record of a parameter: hidden/weight -> hidden/grad_weight."""
    layer, _, kind = param.partition("/")
    return f"{layer}/grad_{kind}"


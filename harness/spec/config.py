"""The run configuration every implementation receives: one dataclass, JSON in and out."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import InputError, read_json

ACTIVATIONS = ("relu", "sigmoid", "tanh")
LOSSES = ("cross_entropy", "mse")  # cross_entropy: softmax output; mse: sigmoid output
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
INITS = ("default", "uniform", "fan_in", "small", "he", "xavier")  # harness.spec.params.initial_params
SQUARED_ERRORS = ("mean", "sum", "half_sum")  # mse: a sample's squared error over the 10 outputs
BATCH_REDUCTIONS = ("mean", "sum")  # the loss over the batch's samples
CHOICES = {"activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS, "dtype": DTYPES, "init": INITS,
           "squared_error": SQUARED_ERRORS, "batch_reduction": BATCH_REDUCTIONS}
LIST_FIELDS = ("layers", "dropout")  # tuples of numbers; on the command line, comma-separated
MAX_LAYERS = 100  # hidden layers: each adds a dozen records a step, and no MNIST MLP people port has more


@dataclass(frozen=True)
class Config:
    """One network and training run. Every field has a default; see docs/comparing.md#configuration."""

    inputs: int = 0  # pixels per image: 0 takes the data's (784 for MNIST's 28x28), which the harness fills in
    hidden: int = 128  # H: the hidden layer's width (784 -> H -> 10); with `layers`, the first layer's
    layers: tuple[int, ...] = ()  # the hidden widths, input side first (256, 128: 784-256-128-10); (): (hidden,)
    dropout: tuple[float, ...] = ()  # inverted dropout's drop probability per hidden layer (one: every layer); ()
    activation: str = "relu"  # the hidden layer's: relu | sigmoid | tanh
    loss: str = "cross_entropy"  # cross_entropy (softmax output) | mse (sigmoid output, mean over m * 10)
    optimizer: str = "sgd"  # sgd | momentum | adam; g = gradient + weight_decay * parameter in each
    lr: float = 0.1  # the learning rate
    momentum: float = 0.9  # v = momentum * v + g (optimizer momentum)
    weight_decay: float = 0.0  # L2, added to every parameter's gradient, biases too
    batch_size: int = 64  # m: samples a step
    steps: int = 10  # training steps (batches) the job holds
    dtype: str = "float32"  # float32 | float64: what every record is computed and written in
    seed: int = 0  # makes the initial parameters and the batch order (the harness's, handed out as data)
    adam_beta1: float = 0.9  # Adam's first-moment decay
    adam_beta2: float = 0.999  # Adam's second-moment decay
    adam_eps: float = 1e-8  # added to sqrt(v_hat) in Adam's step
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    epoch_steps: int = 0  # steps per epoch for lr_decay; 0: the training images // batch_size (the harness fills it in)
    init: str = "default"  # how the seed makes the parameters: default | uniform | fan_in | small | he | xavier
    train_images: int = 0  # train on the first N training images; 0: all of them
    input_min: float = 0.0  # x = byte / 255 * (input_max - input_min) + input_min
    input_max: float = 1.0
    target_min: float = 0.0  # Y = target_max for the label's class, target_min elsewhere (mse only)
    target_max: float = 1.0
    log_eps: float = 0.0  # cross-entropy's loss value is mean -log(P[y] + log_eps)
    squared_error: str = "mean"  # mse: a sample's error over the 10 outputs: mean | sum | half_sum (0.5 * sum)
    batch_reduction: str = "mean"  # the loss over the batch's samples: mean | sum

    def __post_init__(self) -> None:
        self._canonical_layers()
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"config field {name!r}: expected one of {', '.join(allowed)}, got {value!r}")
        for name in ("hidden", "batch_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"config field {name!r}: expected a positive integer, got {value!r}")
        for name in ("seed", "epoch_steps", "train_images", "inputs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"config field {name!r}: expected a non-negative integer, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "lr_decay",
                     "input_min", "input_max", "target_min", "target_max", "log_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"config field {name!r}: expected a finite non-negative number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("adam_beta1", "adam_beta2"):
            if getattr(self, name) >= 1:
                raise InputError(f"config field {name!r}: expected a number in [0, 1), got {getattr(self, name)!r}")
        if self.input_max <= self.input_min or self.target_max < self.target_min:
            raise InputError("config fields input_min/input_max and target_min/target_max: expected min < max, "
                             f"got inputs [{self.input_min}, {self.input_max}], targets [{self.target_min}, "
                             f"{self.target_max}]")
        if self.loss == "cross_entropy" and (self.target_min, self.target_max) != (0.0, 1.0):
            raise InputError("config fields target_min/target_max: soft targets need loss 'mse' (cross-entropy "
                             f"takes one-hot targets), got [{self.target_min}, {self.target_max}]")

    # Configs key the spec's caches (graph, network), which look one up for every record of a comparison:
    # the generated __hash__ and __eq__ build a tuple of all the fields at each call (about 4% of a small
    # comparison). The fields never change once __post_init__ is done, so their tuple and its hash are kept.
    @cached_property
    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @cached_property
    def _hash(self) -> int:
        return hash(self._fields)

    def __hash__(self) -> int:
        return self._hash

    def __getstate__(self) -> dict[str, Any]:
        """The fields alone: a kept hash would not hold in another process (str hashes are salted per process)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._hash == other._hash and self._fields == other._fields

    def _canonical_layers(self) -> None:
        """`layers` and `dropout` as tuples in one form: one hidden layer is `hidden` with layers (), and
        dropout is () or one probability per hidden layer, so equal networks make equal configs."""
        layers, dropout = self.layers, self.dropout
        if isinstance(dropout, (int, float)) and not isinstance(dropout, bool):
            dropout = (dropout,)  # one probability for every hidden layer
        for name, value in (("layers", layers), ("dropout", dropout)):
            if not isinstance(value, (list, tuple)):
                raise InputError(f"config field {name!r}: expected a list of numbers, got {value!r}")
        for width in layers:
            if not isinstance(width, int) or isinstance(width, bool) or width < 1:
                raise InputError(f"config field 'layers': expected a list of positive integers (hidden widths), "
                                 f"got {list(layers)!r}")
        layers = tuple(layers)
        if len(layers) > MAX_LAYERS:
            raise InputError(f"config field 'layers': {len(layers)} hidden layers; at most {MAX_LAYERS} are supported")
        if len(layers) == 1:
            object.__setattr__(self, "hidden", layers[0])
            layers = ()
        elif layers:
            object.__setattr__(self, "hidden", layers[0])
        depth = len(layers) or 1
        for p in dropout:
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise InputError(f"config field 'dropout': expected drop probabilities in [0, 1), "
                                 f"got {list(dropout)!r}")
        dropout = tuple(float(p) for p in dropout)
        if len(dropout) == 1:
            dropout *= depth
        if len(dropout) not in (0, depth):
            raise InputError(f"config field 'dropout': expected one probability, or one per hidden layer ({depth}), "
                             f"got {list(dropout)!r}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "dropout", () if not any(dropout) else dropout)

    @property
    def input_width(self) -> int:
        """Pixels per image: `inputs`, or MNIST's 784 where it is 0 (not yet taken from the data)."""
        return self.inputs or 784

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden layers' widths, input side first."""
        return self.layers or (self.hidden,)

    def drop(self, layer: int) -> float:
        """The drop probability of hidden layer `layer` (0-based); 0 where there is no dropout."""
        return self.dropout[layer] if self.dropout else 0.0

    @property
    def loss_scale(self) -> float:
        """The factor on a sample's summed error: 1 for cross-entropy; for mse 1/10 (mean over the outputs),
        1 (sum) or 1/2 (half the sum)."""
        if self.loss == "cross_entropy":
            return 1.0
        return {"mean": 0.1, "sum": 1.0, "half_sum": 0.5}[self.squared_error]

    def batch_divisor(self, m: int) -> int:
        """What the batch's summed loss is divided by: m for the mean, 1 for the sum."""
        return m if self.batch_reduction == "mean" else 1

    @property
    def scaled_inputs(self) -> bool:
        """Whether inputs are scaled beyond byte / 255."""
        return (self.input_min, self.input_max) != (0.0, 1.0)

    def lr_at(self, step: int) -> float:
        """The learning rate of a step: lr * lr_decay ** (the epoch the step is in)."""
        if self.lr_decay == 1.0 or not self.epoch_steps:
            return self.lr
        return self.lr * self.lr_decay ** (step // self.epoch_steps)

    @property
    def output(self) -> str:
        """The output activation implied by the loss: softmax for cross-entropy, sigmoid for MSE."""
        return "softmax" if self.loss == "cross_entropy" else "sigmoid"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> Config:
        """A copy with fields changed; `hidden` on a deeper network sets its first layer's width."""
        _same_first_width(changes)
        if "hidden" in changes and self.layers and "layers" not in changes:
            changes["layers"] = (changes["hidden"], *self.layers[1:])
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> Config:
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object of config fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            _same_first_width(data)
            return cls(**data)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        return cls.from_dict(read_json(path, "config file"), source=str(path))


def _same_first_width(fields: dict[str, Any]) -> None:
    """`hidden` and `layers` given together must name one first width: `hidden` is the first layer's width,
    and a network cannot take one and silently drop the other."""
    hidden, layers = fields.get("hidden"), fields.get("layers")
    if hidden is not None and isinstance(layers, (list, tuple)) and layers and hidden != layers[0]:
        raise InputError(f"config fields 'hidden' ({hidden!r}) and 'layers' ({list(layers)!r}) disagree: 'hidden' is "
                         f"the first hidden layer's width; give one of them, or the same first width in both")


def _number(text: str, low: float, strict: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (a timeout, a count of epochs); NaN, inf, 0 and below refused."""
    return _number(text, 0.0, True, "a finite number greater than 0")


def non_negative_number(text: str) -> float:
    """argparse type: a finite number >= 0 (rtol, atol); NaN, inf and negatives refused."""
    return _number(text, 0.0, False, "a finite number of at least 0")


def positive_integer(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def widths_text(widths: tuple[int, ...]) -> str:
    """Hidden widths as the command line writes them: 256,128."""
    return ",".join(map(str, widths))


def _int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive integers (--layers 256,128)."""
    try:
        return tuple(positive_integer(t.strip()) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def _float_list(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers in [0, 1) (--dropout 0.2 or 0.2,0.5)."""
    values = tuple(_number(t.strip(), 0.0, False, "comma-separated probabilities in [0, 1)") for t in text.split(","))
    if any(v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated probabilities in [0, 1), got {text!r}")
    return values


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --preset NAME, --config FILE and one --FIELD option per config field (each beats the one before)."""
    from harness.spec.presets import PRESETS
    group = parser.add_argument_group("configuration (defaults: docs/comparing.md#configuration)")
    group.add_argument("--preset", metavar="NAME", help=f"a named network and run: {', '.join(PRESETS)} "
                       "(docs/training.md); --config and the field options override its fields")
    group.add_argument("--config", metavar="FILE", help="JSON file of config fields")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        choices = CHOICES.get(f.name)
        kind = type(f.default) if choices is None else str
        if f.name in LIST_FIELDS:
            kind = _int_list if f.name == "layers" else _float_list
            group.add_argument(flag, dest=f"cfg_{f.name}", type=kind, default=None, metavar="A,B,...",
                               help="comma-separated; " + ("hidden widths, e.g. 256,128" if f.name == "layers" else
                                                           "drop probability, one or one per hidden layer"))
            continue
        group.add_argument(flag, dest=f"cfg_{f.name}", type=kind, choices=choices, default=None,
                           help=f"default {f.default}")


def _preset_fields(args: argparse.Namespace) -> dict[str, Any]:
    from harness.spec.presets import get_preset
    return dict(get_preset(args.preset).fields) if getattr(args, "preset", None) else {}


def config_from_arguments(args: argparse.Namespace) -> Config:
    """Build the Config from --preset, then --config FILE, then the per-field options on top."""
    file = read_json(args.config, "config file") if args.config else {}
    if not isinstance(file, dict):
        Config.from_dict(file, source=args.config)  # says what a config file must hold
    base = {**_preset_fields(args), **file}
    base_config = Config.from_dict(base, source=args.config or f"preset {args.preset}") if base else Config()
    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(Config)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return base_config.replace(**overrides)
    except InputError as e:
        raise InputError(f"command line: {e}") from None


def explicit_fields(args: argparse.Namespace) -> set[str]:
    """The config fields the user set: by a preset, in --config or on the command line."""
    names = {f.name for f in fields(Config) if getattr(args, f"cfg_{f.name}") is not None}
    names |= set(_preset_fields(args))
    if args.config:
        names |= set(read_json(args.config, "config file"))
    return names

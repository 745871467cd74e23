"""The run configuration every implementation receives: one dataclass, JSON in and out."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.errors import InputError, read_json

ACTIVATIONS = ("relu", "sigmoid", "tanh")
LOSSES = ("cross_entropy", "mse")  # cross_entropy: softmax output; mse: sigmoid output
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
INITS = ("default", "uniform", "fan_in", "small", "he", "xavier")  # harness.spec.params.initial_params
CHOICES = {"activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS, "dtype": DTYPES, "init": INITS}


@dataclass(frozen=True)
class Config:
    """One network and training run. Every field has a default; see docs/comparing.md#configuration."""

    hidden: int = 128  # H: the hidden layer's width (784 -> H -> 10)
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

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"config field {name!r}: expected one of {', '.join(allowed)}, got {value!r}")
        for name in ("hidden", "batch_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"config field {name!r}: expected a positive integer, got {value!r}")
        for name in ("seed", "epoch_steps", "train_images"):
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
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
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
            return cls(**data)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        return cls.from_dict(read_json(path, "config file"), source=str(path))


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

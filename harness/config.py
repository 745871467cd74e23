"""The run configuration every implementation receives: one dataclass, JSON in and out."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InputError, read_json

ACTIVATIONS = ("relu", "sigmoid", "tanh")
LOSSES = ("cross_entropy", "mse")  # cross_entropy: softmax output; mse: sigmoid output
OPTIMIZERS = ("sgd", "momentum")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    """One network and training run. Every field has a default; see docs/config.md."""

    hidden: int = 128
    activation: str = "relu"
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps: int = 10
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS, "dtype": DTYPES}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"config field {name!r}: expected one of {', '.join(allowed)}, got {value!r}")
        for name in ("hidden", "batch_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"config field {name!r}: expected a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"config field 'seed': expected a non-negative integer, got {self.seed!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise InputError(f"config field {name!r}: expected a non-negative number, got {value!r}")
            object.__setattr__(self, name, float(value))

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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config FILE and one --FIELD option per config field (command line beats file)."""
    group = parser.add_argument_group("configuration (defaults: docs/config.md)")
    group.add_argument("--config", metavar="FILE", help="JSON file of config fields")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        choices = {"activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS, "dtype": DTYPES}.get(f.name)
        kind = type(f.default) if choices is None else str
        group.add_argument(flag, dest=f"cfg_{f.name}", type=kind, choices=choices, default=None,
                           help=f"default {f.default}")


def config_from_arguments(args: argparse.Namespace) -> Config:
    """Build the Config from --config FILE, then the per-field options on top."""
    base = Config.from_file(args.config) if args.config else Config()
    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(Config)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return base.replace(**overrides)
    except InputError as e:
        raise InputError(f"command line: {e}") from None


def explicit_fields(args: argparse.Namespace) -> set[str]:
    """The config fields the user set on the command line or in --config."""
    names = {f.name for f in fields(Config) if getattr(args, f"cfg_{f.name}") is not None}
    if args.config:
        names |= set(read_json(args.config, "config file"))
    return names

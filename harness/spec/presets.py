"""Named configs for the networks people port: each preset is a Config plus how long its source
trained it and the test accuracy the source reports (docs/training.md says where each comes from)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.spec.config import Config
from harness.errors import InputError


@dataclass(frozen=True)
class Preset:
    """A named network and training run. `fields` are Config fields (steps excepted: `harness.compare`
    keeps its short default, `harness.train` runs `epochs` or `train_steps`)."""

    name: str
    about: str
    fields: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1  # how long harness.train trains by default, in epochs of the training images...
    train_steps: int = 0  # ...or in steps, where the source counts iterations (0: use epochs)
    published: tuple[float, float] | None = None  # the test accuracy the source reports, as a range in percent

    def config(self, **overrides: Any) -> Config:
        return Config(**{**self.fields, **overrides})


PRESETS = {p.name: p for p in (
    Preset("mnist-from-scratch", "784-800-10 relu, softmax + cross-entropy, SGD lr 0.1, batch 100, U[-0.5, 0.5] init",
           {"hidden": 800, "activation": "relu", "loss": "cross_entropy", "optimizer": "sgd", "lr": 0.1,
            "batch_size": 100, "init": "uniform"},
           train_steps=1000, published=(92.0, 92.0)),
    # The source's update is W += lr * ((t - o) * o (1 - o)) h^T: the gradient of half the summed squared error
    # over the 10 outputs, which squared_error half_sum states as it is, with the source's own lr 0.1.
    Preset("goml", "784-100-10 sigmoid, sigmoid + half the summed squared error, per-sample SGD lr 0.1, first "
                   "10,000 images, scaled inputs, soft targets 0.01/0.99",
           {"hidden": 100, "activation": "sigmoid", "loss": "mse", "squared_error": "half_sum", "optimizer": "sgd",
            "lr": 0.1, "batch_size": 1,
            "train_images": 10000, "input_min": 0.01, "input_max": 1.0, "target_min": 0.01, "target_max": 0.99,
            "init": "fan_in"},
           epochs=5, published=(90.0, 100.0)),
    Preset("than-dev", "784-128-10 relu, softmax + cross-entropy with log(P + 1e-9), full-batch gradient descent, "
                       "lr 0.2, randn * 0.01 init",
           {"hidden": 128, "activation": "relu", "loss": "cross_entropy", "optimizer": "sgd", "lr": 0.2,
            "batch_size": 60000, "init": "small", "log_eps": 1e-9},
           train_steps=200),
    Preset("born", "784-128-10 relu, cross-entropy, Adam lr 0.001, batch 64 reshuffled each epoch, He init",
           {"hidden": 128, "activation": "relu", "loss": "cross_entropy", "optimizer": "adam", "lr": 0.001,
            "batch_size": 64, "init": "he"},
           epochs=10, published=(97.0, 97.5)),
    Preset("born-deep", "784-256-128-10 relu, cross-entropy, Adam lr 0.001, batch 64 reshuffled each epoch, He init",
           {"layers": (256, 128), "activation": "relu", "loss": "cross_entropy", "optimizer": "adam", "lr": 0.001,
            "batch_size": 64, "init": "he"},
           epochs=10, published=(98.0, 98.5)),
    Preset("born-dropout", "784-256-128-10 relu with inverted dropout 0.2 after each hidden layer, cross-entropy, "
                           "Adam lr 0.001, batch 64, He init, 15 epochs",
           {"layers": (256, 128), "dropout": (0.2,), "activation": "relu", "loss": "cross_entropy",
            "optimizer": "adam", "lr": 0.001, "batch_size": 64, "init": "he"},
           epochs=15, published=(98.2, 98.7)),
    Preset("gon", "784-128-10 relu, cross-entropy, momentum 0.9 with L2 weight decay 5e-4, lr 0.01 decayed "
                  "0.95 per epoch, batch 64, Xavier init",
           {"hidden": 128, "activation": "relu", "loss": "cross_entropy", "optimizer": "momentum", "lr": 0.01,
            "momentum": 0.9, "weight_decay": 5e-4, "lr_decay": 0.95, "batch_size": 64, "init": "xavier"},
           epochs=10),
)}


def get_preset(name: str) -> Preset:
    """The preset of that name, or an error that lists them all."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None

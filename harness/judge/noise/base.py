"""What every form of the noise model shares: the unit roundoffs, how many standard deviations a sum's
rounding may reach, the result of a form (Expected), and one side's recorded inputs around a step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from harness.spec.precision import Precision
from harness.spec.records import LOAD, STATE_SUFFIXES, Step

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}


Z_SIGMA = 6.0  # how many standard deviations a sum's rounding may reach (about 1 in 5e8 elements)


C_ELEM = 4.0  # units of roundoff an elementwise op (and its storage) may be off by


SOURCES = ("input/x", "input/y")  # records with no inputs: data the harness hands out


@dataclass
class Expected:
    """What one side's record should hold, given that side's recorded inputs (see module doc)."""

    value: np.ndarray | None  # float64; None for a source record (nothing to recompute it from)
    sigma: np.ndarray | float
    fixed: np.ndarray | float
    any_order: Callable[[], np.ndarray | float] | None = None  # a sum's worst case over every order (sums.py)
    scale: float | None = None  # k where `fixed` is k |record| and nothing more (a source's), see carried.py

    @cached_property
    def worst(self) -> np.ndarray | float:
        """The most the op's own summation can round in any order: what replaces Z_SIGMA * sigma in the
        bound no correct implementation exceeds; 0 for an op that is no sum."""
        return self.any_order() if self.any_order is not None else 0.0


class MissingInput(Exception):
    """A record the model needs is not in the memstate (a partial or converted dump)."""


@dataclass
class Inputs:
    """One side's records around one step, as float64, for the model."""

    get: Callable[[Step, str], np.ndarray | None]
    step: int
    first: int = 0  # the step a replay started at: its state before it is the load unit
    memo: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, Callable[..., np.ndarray]]] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()  # records this side declared it does not compute
    model: Callable[[str, bool], Expected] | None = None  # this side's model of a record (bool: with its
    stand_ins: dict[tuple[str, bool], Expected] = field(default_factory=dict)  # absent inputs' rounding)
    precision: Precision = field(default_factory=Precision)  # what it computed in beyond its dtype (spec/precision.py)
    loaded: dict[tuple[Step, str], np.ndarray] = field(default_factory=dict)  # records as float64, converted once
    squares: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (a*a) @ (b*b) of a sum a @ b by the
    # names of a and b, where one is a source, for the bound it carries through (carried.py); apart from `memo`,
    # which would keep the weight gradients' values and sigmas for the step too (30 MB more at H=800, batch 100)

    def cur(self, name: str) -> np.ndarray:
        if name in self.absent and self.model is not None and self.get(self.step, name) is None:
            value = self.stand_in(name, rounding=False).value
            if value is None:
                raise MissingInput(f"{self.step} {name}")
            return value
        return self._need(self.step, name)

    def stand_in(self, name: str, rounding: bool = True) -> Expected:
        """An absent record's model from this side's own inputs: its value stands in for the record, and
        (`rounding`) its rounding, with that of absent records before it, joins each consumer's own
        (model.py). The value alone never needs the rounding, so a record's own value is no cycle."""
        assert self.model is not None
        if (name, rounding) not in self.stand_ins:
            self.stand_ins[name, rounding] = self.model(name, rounding)
        return self.stand_ins[name, rounding]

    def prev(self, name: str) -> np.ndarray:
        """A parameter (or velocity) as the step began: the previous step's update, or the load."""
        if self.step == self.first:
            if name.endswith(("/weight", "/bias")) or self.get(LOAD, name) is not None:  # a replay's load
                return self._need(LOAD, name)  # holds velocities
            param = next(name[:-len(s)] for s in STATE_SUFFIXES if name.endswith(s))
            return np.zeros_like(self._need(LOAD, param))  # optimizer buffers start at 0
        return self._need(self.step - 1, name)

    def _need(self, step: Step, name: str) -> np.ndarray:
        """The record as float64: converted at the first read of this step's model and kept for the next
        (a record feeds several ops' models, and both its own and its consumers' carried bounds)."""
        x = self.loaded.get((step, name))
        if x is None:
            raw = self.get(step, name)
            if raw is None:
                raise MissingInput(f"{step} {name}")
            x = self.loaded[step, name] = np.asarray(raw, dtype=np.float64)
        return x

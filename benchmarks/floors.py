"""What comparing two whole memstates cannot go below, measured on the memstates themselves, for the
benchmarks to print the comparator's time against.

- `read_seconds`: one read of every record of both sides (the pages already in the cache, as the
  comparator finds them after the runs): the floor of any comparison of every record.
- `sums_seconds`: each side's sums (every matmul of the forward and backward pass) recomputed once in
  float64 from that side's own recorded inputs: the floor of any noise model that, as memstate's does,
  checks each op against its inputs. memstate's model does more per sum (the sum of squared products
  for its sigma, the count of nonzero products, the partial sums in index order for the first layer,
  and the carried bound of its inputs), so it stands well above this floor by design (docs/bisect.md
  has the measured ratio).
"""

from __future__ import annotations

import time

import numpy as np

from harness.judge.noise.base import Inputs
from harness.spec.config import Config
from harness.spec.records import LOAD, graph
from harness.store.memstate import Memstate


def read_seconds(*sides: Memstate) -> float:
    """One pass over every record of each side, summed so that every page is read."""
    start = time.perf_counter()
    for side in sides:
        for unit in side.units:
            for name in side.names(unit):
                x = side.get(unit, name)
                if x is not None and x.dtype.kind == "f":
                    float(np.sum(x))
            side.release(unit)
    return time.perf_counter() - start


def sums_seconds(*sides: Memstate) -> float:
    """Every matmul of every step of each side, in float64, from that side's recorded inputs."""
    start = time.perf_counter()
    for side in sides:
        specs = graph(Config.from_dict(side.config)).items()
        for unit in side.units:
            if unit == LOAD:
                continue
            inp = Inputs(side.get, int(unit), side.first_step)
            for _, spec in specs:
                if spec.op == "matmul":
                    _ = inp.cur(spec.inputs[0]) @ inp.prev(spec.previous[0]).T  # (m, width)
                elif spec.op == "grad_weight":
                    _ = inp.cur(spec.inputs[0]).T @ inp.cur(spec.inputs[1])  # (width, fan_in)
                elif spec.op == "grad_activation":
                    _ = inp.cur(spec.inputs[0]) @ inp.prev(spec.previous[0])  # (m, fan_in)
            side.release(unit)
    return time.perf_counter() - start

"""What a run keeps of each step: every tensor (full), or per-record summaries plus checkpoints.

`train` mode is what `harness.train` runs: summaries of `loss/value` only (its progress bar) and,
of the steps in `full_steps` and the checkpoints, only the state (parameters and optimizer buffers).

A long run cannot keep every tensor of every step (at H=800, W1 alone is 2.5 MB a record). In
`summary` mode the writer keeps, for every record of every step, a row of cheap statistics
(`SUMMARY_FIELDS`), and in full only: the loaded parameters, the steps listed in `full_steps`, and
every `checkpoint_every` steps the parameters and velocities after the step (what a replay starts
from). `harness.compare.bisect` screens the summaries, then replays the window that parts in full.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from harness.errors import InputError
from harness.spec.records import LOAD, is_state

FULL, SUMMARY, TRAIN = "full", "summary", "train"
TRAIN_SUMMARIES = ("loss/value",)  # what a train-mode run summarises: the progress bar's loss
# one summary row per record per step, float64: see docs/memstate.md
SUMMARY_FIELDS = ("step", "record", "size", "sumsq", "wsum", "nonfinite",
                  "s_min", "s_q25", "s_q50", "s_q75", "s_max")
SAMPLE = 255  # elements in the strided sample the quantiles come from
PERIOD = 1021  # the period of wsum's weights
GEMV_FROM = 1 << 18  # elements from which wsum is summed as rows of PERIOD (weighted_sum)
_RAMP: dict[str, np.ndarray] = {}
_WNORM: dict[int, float] = {}


class Plan(NamedTuple):
    """What one step keeps and summarises (Capture.plan)."""

    keep_all: bool  # every record in full
    keep_state: bool  # the state records (parameters, optimizer buffers) in full
    summarize: bool | tuple[str, ...]  # every record (True), none (False), or those named

    def decide(self, name: str, state: bool) -> tuple[bool, bool]:
        """(kept in full, summarised) of record `name`; `state`: is_state(name), which the writer works out
        once a name."""
        which = self.summarize
        return self.keep_all or (self.keep_state and state), which is True or (which is not False and name in which)


@dataclass(frozen=True)
class Capture:
    """How much of each step a memstate keeps; the default keeps everything."""

    mode: str = FULL
    full_steps: tuple[tuple[int, int], ...] = ()  # inclusive step ranges kept in full in summary mode
    checkpoint_every: int = 0  # summary mode: the state after every K-th step (K-1, 2K-1, ...) in full

    def __post_init__(self) -> None:
        if self.mode not in (FULL, SUMMARY, TRAIN):
            raise InputError(f"capture field 'mode': expected full, summary or train, got {self.mode!r}")
        if not isinstance(self.checkpoint_every, int) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise InputError(f"capture field 'checkpoint_every': expected a non-negative integer, "
                             f"got {self.checkpoint_every!r}")
        for r in self.full_steps:
            if len(r) != 2 or not all(isinstance(x, int) and x >= 0 for x in r) or r[0] > r[1]:
                raise InputError(f"capture field 'full_steps': expected [first, last] step ranges, got {r!r}")

    def plan(self, step: Any) -> Plan:
        """What `step` keeps and summarises; the writer asks once a step, not once a record."""
        if self.mode == FULL or step == LOAD:
            return Plan(True, True, False)
        if any(lo <= step <= hi for lo, hi in self.full_steps):
            keep_all, keep_state = self.mode == SUMMARY, True  # train mode keeps only the state of its full steps
        else:
            keep_all = False
            keep_state = bool(self.checkpoint_every) and (step + 1) % self.checkpoint_every == 0
        return Plan(keep_all, keep_state, self.mode == SUMMARY or TRAIN_SUMMARIES)

    def keeps(self, step: Any, name: str) -> bool:
        """Whether (step, name) is kept as a full tensor."""
        return self.plan(step).decide(name, is_state(name))[0]

    def summarizes(self, step: Any, name: str) -> bool:
        """Whether (step, name) gets a summary row."""
        return self.plan(step).decide(name, is_state(name))[1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "full_steps": [list(r) for r in self.full_steps]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "capture") -> Capture:
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"mode", "full_steps", "checkpoint_every"}:
            raise InputError(f"{source}: expected an object with mode, full_steps, checkpoint_every; got {data!r:.80}")
        ranges = data.get("full_steps") or []
        if not isinstance(ranges, list) or not all(isinstance(r, list) for r in ranges):
            raise InputError(f"{source}: field 'full_steps' must be a list of [first, last] ranges")
        return cls(data.get("mode", FULL), tuple(tuple(r) for r in ranges), data.get("checkpoint_every", 0))


def ramp(n: int, dtype: np.dtype) -> np.ndarray:
    """The weights of `wsum`: 1, 2, ..., 1021, 1, 2, ... (position-sensitive, exact in float32)."""
    key = dtype.str
    have = _RAMP.get(key)
    if have is None or have.size < n:
        have = _RAMP[key] = (np.arange(max(n, 1 << 16)) % PERIOD + 1).astype(dtype)
    return have[:n]


def ramp_norm(n: int) -> float:
    """The norm of the first n weights of `wsum`: what bounds |wsum| by Cauchy-Schwarz."""
    norm = _WNORM.get(n)
    if norm is None:
        norm = _WNORM[n] = float(np.linalg.norm(ramp(n, np.dtype(np.float64))))
    return norm


def weighted_sum(x: np.ndarray) -> float:
    """`wsum` of a flat record: one dot product with the ramp; from GEMV_FROM elements on, whose ramp no
    longer stays in cache beside them, a matrix-vector product of the record as rows of PERIOD with the
    ramp's first period, the rows' sums added in float64 (one read of the record: 73 us against 173 us
    at 800 x 784)."""
    n = x.size
    if n < GEMV_FROM or x.dtype not in (np.float32, np.float64):
        return float(np.vdot(x, ramp(n, x.dtype)))
    rows, tail = divmod(n, PERIOD)
    w = ramp(PERIOD, x.dtype)  # (PERIOD,)
    by_row = x[:rows * PERIOD].reshape(rows, PERIOD) @ w  # (rows,)
    return float(np.sum(by_row, dtype=np.float64)) + float(np.vdot(x[rows * PERIOD:], w[:tail]))


def summarize(array: np.ndarray) -> list[float]:
    """The statistics of one record after `step` and `record` (see SUMMARY_FIELDS): two dot products
    over every element (BLAS, one pass each) and quantiles of a strided sample, so that a step's
    summaries cost a small fraction of the step."""
    x = np.ascontiguousarray(array).reshape(-1)  # a view for the arrays implementations hand over
    n = x.size
    if n == 0:
        return [0.0] * (len(SUMMARY_FIELDS) - 2)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    # np.vdot is np.dot's BLAS call, bit for bit, without the floating-point warnings (np.errstate costs 2 us)
    sumsq, wsum = float(np.vdot(x, x)), weighted_sum(x)
    nonfinite = 0.0 if math.isfinite(sumsq) and math.isfinite(wsum) else float(np.count_nonzero(~np.isfinite(x)))
    sample = x[::max(1, n // SAMPLE)].astype(np.float64)  # (<= 2*SAMPLE,)
    sample.sort()
    k = sample.size - 1
    return [float(n), sumsq, wsum, nonfinite, *sample[[0, k // 4, k // 2, 3 * k // 4, k]].tolist()]

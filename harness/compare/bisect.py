"""Find the first origin of a long run without keeping every tensor of every step.

1. *Summary pass*: both sides run every step in summary capture (capture.py), keeping the state
   after every K-th step as a checkpoint.
2. *Screen*: the first step at which a record's summaries part by more than a step's rounding can
   explain (`screen`): the suspect.
3. *Replay*: both sides run again from their own last checkpoint at or before the suspect, up to
   it, keeping everything; the replay's summaries must equal the pass's step for step (replay is
   exact because every input is data). The full comparator judges that window.
4. An origin there is the answer. If the window only drifts (the sides' rounding has grown past
   what summaries can screen), both sides start again from A's state after the suspect step and
   the pass goes on from there (a resynchronisation), at most `max_resyncs` times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.compare.comparison import Comparison
from harness.compare.stream import choose_tolerance, compare_memstates
from harness.errors import InputError
from harness.judge.noise import UNIT_ROUNDOFF
from harness.run.capture import SUMMARY, Capture, ramp_norm, summarize
from harness.run.job import STATE_FILES, prepare_job
from harness.run.runner import Implementation, run_implementation
from harness.spec.config import Config
from harness.spec.data import Mnist
from harness.spec.params import Params
from harness.spec.network import network
from harness.spec.records import LOAD
from harness.store.memstate import Memstate

SCREEN_ULPS = 2**10  # a summary may move by this many units of rounding of its own size between the sides


@dataclass
class Suspect:
    """The first record whose summaries part, and how."""

    step: int
    name: str
    why: str


@dataclass
class Pass:
    """One summary pass (or resynchronised pass) and the replay that judged its suspect."""

    first_step: int
    a: Path
    b: Path
    suspect: Suspect | None = None
    window: tuple[int, int] | None = None
    replay_a: Path | None = None
    replay_b: Path | None = None
    replay_exact: bool | None = None  # the replay's summaries equal the pass's at every replayed step
    comparison: Comparison | None = None


@dataclass
class BisectResult:
    """Every pass in order; the answer is the last pass's comparison. Truthy when nothing diverged."""

    passes: list[Pass] = field(default_factory=list)
    bytes_written: int = 0  # every memstate file of every pass and replay, both sides
    notes: list[str] = field(default_factory=list)

    @property
    def comparison(self) -> Comparison | None:
        return self.passes[-1].comparison if self.passes else None

    @property
    def verdict(self) -> str:
        c = self.comparison
        if c is not None and c.origins:
            return "diverged"
        return "drift" if any(p.suspect for p in self.passes) else "agree"

    def __bool__(self) -> bool:
        return self.verdict != "diverged"

    def to_dict(self) -> dict[str, Any]:
        """What --json says of the passes: where each screen stopped, the window replayed, and the bytes."""
        return {"verdict": self.verdict, "bytes_written": self.bytes_written, "notes": self.notes,
                "passes": [{"first_step": p.first_step, "a": str(p.a), "b": str(p.b),
                            "suspect": asdict(p.suspect) if p.suspect else None,
                            "window": list(p.window) if p.window else None, "replay_exact": p.replay_exact}
                           for p in self.passes]}


def _stats_bound(row_a: np.ndarray, row_b: np.ndarray, tau: float) -> str | None:
    """Why two summary rows (size, sumsq, wsum, nonfinite, sample min, q25, q50, q75, max) part, or
    None when a step's rounding explains them."""
    if np.array_equal(row_a, row_b):
        return None
    size_a, sq_a, w_a, bad_a = row_a[:4]
    size_b, sq_b, w_b, bad_b = row_b[:4]
    if size_a != size_b:
        return f"{size_a:.0f} elements against {size_b:.0f}"
    if bad_a or bad_b:
        return f"{bad_a:.0f} against {bad_b:.0f} non-finite values"
    na, nb = np.sqrt(sq_a), np.sqrt(sq_b)
    norm = max(na, nb)
    if abs(na - nb) > tau * norm:
        return f"norm {na:.9g} against {nb:.9g}"
    if abs(w_a - w_b) > tau * norm * ramp_norm(int(size_a)):
        return f"position-weighted sum {w_a:.9g} against {w_b:.9g}"
    qa, qb = row_a[4:], row_b[4:]
    spread = max(float(np.max(np.abs(qa))), float(np.max(np.abs(qb))))
    worst = int(np.argmax(np.abs(qa - qb)))
    if abs(qa[worst] - qb[worst]) > tau * spread:
        label = ("sample min", "sample q25", "sample median", "sample q75", "sample max")[worst]
        return f"{label} {qa[worst]:.9g} against {qb[worst]:.9g}"
    return None


def screen(a: Memstate, b: Memstate, tau: float | None = None) -> Suspect | None:
    """The first (step, record) whose summaries part beyond `tau` relative (SCREEN_ULPS units of
    rounding at the comparison dtype), or where one side's summaries end before the other's."""
    ta, tb = a.summary_table(), b.summary_table()
    if ta is None or tb is None:
        raise InputError(f"{a.dir if ta is None else b.dir}: holds no summaries (not a summary-capture run)")
    tau = tau if tau is not None else SCREEN_ULPS * UNIT_ROUNDOFF[choose_tolerance(a, b).dtype]
    (names_a, rows_a), (names_b, rows_b) = ta, tb
    index_b = {(int(r[0]), names_b[int(r[1])]): r for r in rows_b}
    last_b = int(rows_b[-1, 0]) if len(rows_b) else -1
    for r in rows_a:
        step, name = int(r[0]), names_a[int(r[1])]
        other = index_b.get((step, name))
        if other is None:
            if step > last_b:
                return Suspect(step, name, f"B's summaries end after step {last_b} ({b.stop_summary()})")
            continue  # a record only A writes: the full comparison of a window says what it is
        why = _stats_bound(r[2:], other[2:], tau)
        if why:
            return Suspect(step, name, why)
    last_a = int(rows_a[-1, 0]) if len(rows_a) else -1
    if last_b > last_a:
        return Suspect(last_a + 1, "-", f"A's summaries end after step {last_a} ({a.stop_summary()})")
    return None


def state_before(ms: Memstate, step: int) -> tuple[Params, dict[str, Params]]:
    """The parameters a step starts from, and the optimizer buffers (velocity, adam_m, adam_v) the
    memstate holds beside them, from its checkpoint: the unit of the step before, or the load unit at
    the memstate's first step."""
    unit = LOAD if step == ms.first_step else step - 1
    names = network(ms.cfg).parameters
    got = {n: ms.get(unit, n) for n in names}
    if any(v is None for v in got.values()):
        raise InputError(f"{ms.dir}: holds no checkpoint of the state before step {step}")
    params = Params.of([np.asarray(got[n], dtype=np.float64) for n in names])
    state = {}
    for kind in STATE_FILES:
        buf = {n: ms.get(unit, f"{n}_{kind}") for n in names}
        if all(v is not None for v in buf.values()):
            state[kind] = Params.of([np.asarray(buf[n], dtype=np.float64) for n in names])
    return params, state


def last_checkpoint(ms: Memstate, step: int) -> int:
    """The latest step at or before `step` whose starting state `ms` holds."""
    first = network(ms.cfg).parameters[0]
    have = [u + 1 for u in ms.units if u != LOAD and u + 1 <= step and ms.get(u, first) is not None]
    return max([ms.first_step, *have])


def replay_matches(pass_ms: Memstate, replay: Memstate) -> bool:
    """Whether every record of the replay summarises exactly as the pass's same step did."""
    table = pass_ms.summary_table()
    if table is None:
        return False
    names, rows = table
    want = {(int(r[0]), names[int(r[1])]): r[2:] for r in rows}
    for step in replay.units:
        if step == LOAD:
            continue
        for name, array in replay.unit(step).items():
            row = want.get((int(step), name))
            if row is None or not np.array_equal(np.asarray(summarize(array)), row):
                return False
        replay.release(step)
    return True


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bisect(impl_a: Implementation, impl_b: Implementation, config: Config, params: Params, mnist: Mnist,
           work: Path, checkpoint_every: int = 100, max_resyncs: int = 3, timeout: float | None = None,
           strict: bool = False) -> BisectResult:
    """Run the summary pass, screen, replay and judge (module docstring); memstates go under `work`."""
    result = BisectResult()
    capture = Capture(SUMMARY, (), checkpoint_every)
    first, start = 0, (params, {})  # both sides start each pass from one state: the params, then A's
    while True:
        job = prepare_job(work / f"job-{first}", config, start[0], mnist, capture, first_step=first, state=start[1])
        run = Pass(first, work / f"pass-{first}-a", work / f"pass-{first}-b")
        for impl, out in ((impl_a, run.a), (impl_b, run.b)):
            run_implementation(impl, job, out, timeout=timeout)
        result.passes.append(run)
        ma, mb = Memstate(run.a), Memstate(run.b)
        run.suspect = screen(ma, mb)
        if run.suspect is None:
            break
        s = min(run.suspect.step, config.steps - 1)
        c = min(last_checkpoint(ma, s), last_checkpoint(mb, s))
        run.window = (c, s)
        replays = []
        for impl, ms, side in ((impl_a, ma, "a"), (impl_b, mb, "b")):
            p, state = state_before(ms, c)
            job = prepare_job(work / f"replay-{c}-{s}-{side}-job", config, p, mnist, Capture(), first_step=c,
                              last_step=s, state=state)
            out = work / f"replay-{c}-{s}-{side}"
            run_implementation(impl, job, out, timeout=timeout)
            replays.append(Memstate(out))
        run.replay_a, run.replay_b = replays[0].dir, replays[1].dir
        for r, impl in zip(replays, (impl_a, impl_b)):
            if r.units and r.units[-1] != LOAD and r.units[-1] < c:
                raise InputError(f"{impl.name} does not replay: asked to start at step {c}, it wrote steps from 0 "
                                 f"(read first_step from job.json; docs/protocol.md)")
        run.replay_exact = replay_matches(ma, replays[0]) and replay_matches(mb, replays[1])
        run.comparison = compare_memstates(replays[0], replays[1], strict=strict)
        if run.comparison.origins or s + 1 >= config.steps or len(result.passes) > max_resyncs:
            if not run.comparison.origins and s + 1 < config.steps:
                result.notes.append(f"gave up after {max_resyncs} resynchronisations; steps after {s} not screened")
            break
        # drift only: both sides go on from A's state after the suspect step
        first = s + 1
        start = state_before(replays[0], first)
        result.notes.append(f"steps {c}..{s} only drift (no origin); both sides resume from A's state after "
                            f"step {s}")
    result.bytes_written = sum(_size(p) for r in result.passes for p in (r.a, r.b, r.replay_a, r.replay_b) if p)
    return result

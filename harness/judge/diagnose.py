"""What kind of bug an origin looks like: its two tensors (and the buggy side's own inputs, the step before,
the other records of the step) tested against known fingerprints, in a fixed order from the most specific;
the first that fits at every element is the answer, with its evidence, else "no known pattern". Never a
guess: a pattern that does not fit every element it claims is not reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.judge import signatures as sig
from harness.judge.noise import Z_SIGMA, Expected, Inputs, MissingInput, expected
from harness.spec.config import Config
from harness.spec.network import LABELS, network
from harness.spec.records import LOAD, Step, graph

Getter = Callable[[Step, str], "np.ndarray | None"]
KINDS = ("scale", "update_scale", "offset", "layout", "axis", "wrong_operand", "mask", "precision", "sign",
         "partial", "collapsed", "moved_factor", "none")


@dataclass
class Diagnosis:
    """What an origin looks like. Truthy when a known pattern fits."""

    kind: str  # one of KINDS
    detail: str  # "B = A / 64 at every element (64 is the batch size): a mean taken twice?"
    evidence: str  # one line: what was checked and how closely it fits
    checked: int  # elements checked
    factor: float | None = None  # c of a scale or an update scale

    def __bool__(self) -> bool:
        return self.kind != "none"


@dataclass
class Origin:
    """One origin with what diagnosing it may read: both sides' values, the tolerance per element, and each
    side's other records (`get_ref`, `get_bug`); `bug` is the side whose op is not its own inputs' op."""

    step: Step
    name: str
    ref: np.ndarray  # float64
    bug: np.ndarray  # float64, same shape as ref unless the difference is a shape
    tol: np.ndarray  # |ref - bug| allowed per element for "equal"
    cfg: Config | None
    get_ref: Getter
    get_bug: Getter
    u: float
    first: int = 0  # a replay's first step


def quantities(cfg: Config | None, m: int) -> list[tuple[float, str, str]]:
    """Factors a port gets wrong, with their names and the usual cause."""
    out = [(m, f"{m} is the batch size", "not divided by the batch size?"),
           (1 / m, f"1/{m}: the batch size", "a mean taken twice, or divided by m once more?"),
           (2.0, "2", "a factor 2 twice, or a sum counted twice?"), (0.5, "1/2", "a factor 2 missing?"),
           (255 / 256, "255/256", "pixels divided by 256 instead of 255?"),
           (256 / 255, "256/255", "pixels divided by 255 once more?"),
           (10.0, "10 is the class count", "a mean over the batch only, not over the classes?"),
           (0.1, "1/10: the class count", "divided by the class count once more?"),
           (m / (m + 1), f"{m}/{m + 1}", "divided by m + 1 instead of m?"),
           ((m + 1) / m, f"{m + 1}/{m}", "divided by m instead of m + 1?")]
    if cfg is not None:
        out += [(cfg.lr, f"{cfg.lr:g} is the learning rate", "the learning rate applied twice?"),
                (1 / cfg.lr, f"1/{cfg.lr:g}: the learning rate", "the learning rate missing?"),
                (float(cfg.hidden), f"{cfg.hidden} is H", "summed over the hidden units where a mean was meant?")]
        if cfg.optimizer == "momentum":  # the other form of momentum: v = momentum v - lr g, w += v
            out.append((-cfg.lr, f"-{cfg.lr:g}: minus the learning rate", "the velocity kept as momentum x v - lr x g "
                        "with w += v, where the spec keeps momentum x v + g with w -= lr x v?"))
        for p in sorted(set(cfg.dropout) - {0.0}):  # inverted dropout's scale, missing or applied twice
            out += [(1 - p, f"1 - {p:g}: the dropout keep rate", "inverted dropout's 1/(1 - p) scale missing?"),
                    (1 / (1 - p), f"1/(1 - {p:g}): the dropout scale", "the dropout scale applied twice?"),
                    ((1 - p) / p, f"(1 - {p:g})/{p:g}: 1/p over 1/(1 - p)", "the dropout scale taken as 1/p, the drop "
                     "rate where the keep rate was meant?"),
                    (p / (1 - p), f"{p:g}/(1 - {p:g}): 1/(1 - p) over 1/p", "the dropout scale taken as 1/(1 - p) "
                     "where the reference takes 1/p?")]
    return out


def named(c: float, cfg: Config | None, m: int) -> tuple[str, str] | None:
    """What c is, and the usual cause; every quantity it equals is named (at lr = 0.1 a factor 1/10 is the class
    count or the learning rate), since which one a port got wrong is not for the factor to say."""
    found = [(what, why) for value, what, why in quantities(cfg, m) if abs(c / value - 1) < 1e-3]
    if not found:
        return None
    return "; or ".join(w for w, _ in found), " Or ".join(y for _, y in found)


def _batch(o: Origin) -> int:
    y = o.get_bug(o.step, LABELS) if o.step != LOAD else None
    return int(np.shape(y)[0]) if y is not None and np.ndim(y) else (o.cfg.batch_size if o.cfg else 0) or 1


def _scale(o: Origin, unnamed: bool) -> Diagnosis | None:
    """B = c x A; a c that is no quantity of the run only when `unnamed` (tried after the patterns that name a
    record: a decay of 5e-5 x W is also B = A / 1.00005 to the bound, and the record says more)."""
    c = sig.scale(o.ref, o.bug, o.tol)
    if c is None:
        return None
    m = _batch(o)
    if abs(c + 1) < 1e-3:
        return Diagnosis("sign", "{bug} = -{ref} at every element: a sign flipped (gradient ascent?)",
                         f"{o.ref.size} elements within the bound of -{{ref}}", o.ref.size)
    name = named(c, o.cfg, m)
    if name is None and (o.ref.size == 1 or not unnamed):
        return None  # any two numbers are a scale of each other: that says nothing
    shown = f"{{ref}} / {1 / c:.6g}" if abs(c) < 1 else f"{c:.6g} x {{ref}}"
    tail = f" ({name[0]}): {name[1]}" if name else " (not a quantity of the run: a wrong constant?)"
    return Diagnosis("scale", f"{{bug}} = {shown} at every element{tail}",
                     f"all {o.ref.size} elements within the bound of c x {{ref}}, c = {c:.8g}", o.ref.size, c)


def _update(o: Origin, spec_op: str) -> Diagnosis | None:
    """For a parameter: the step it took, B's against A's."""
    if spec_op != "update" or o.step == LOAD or o.cfg is None:
        return None
    try:
        before_ref = Inputs(o.get_ref, int(o.step), o.first).prev(o.name)
        before_bug = Inputs(o.get_bug, int(o.step), o.first).prev(o.name)
    except MissingInput:
        return None
    d_ref, d_bug = o.ref - before_ref, o.bug - before_bug
    # A's step is known to A's rounding of the parameter, which c scales too (at c = 100, Adam's corrections
    # swapped, 100 times the record's own bound); a fit that B's step would pass as 0 says nothing
    c = sig.ratio_of(d_ref, d_bug)
    spread = 2 * o.u * (np.abs(o.ref) + np.abs(before_ref))
    if c is not None and np.isfinite(c) and c != 0 and abs(c - 1) >= 1e-12 \
            and sig.fits(d_bug, c * d_ref, o.tol + abs(c) * spread) \
            and not sig.fits(d_bug, np.zeros_like(d_bug), o.tol + abs(c) * spread):
        if abs(c + 1) < 1e-3:
            return Diagnosis("sign", "{bug}'s update is -1.00x {ref}'s: the parameters climb the gradient (a sign "
                             "flipped)", f"all {o.ref.size} elements: {{bug}} - before = -({{ref}} - before)", o.ref.size)
        return Diagnosis("update_scale", f"{{bug}}'s update is {c:.4g}x {{ref}}'s: the learning rate (or its schedule, "
                         f"a bias correction) differs, or the gradient is clipped by its norm?", f"all {o.ref.size} elements of the step taken, c = {c:.8g}",
                         o.ref.size, c)
    k = sig.ratio_of(before_ref, d_bug - d_ref)
    if k is not None and o.cfg.weight_decay and abs(k / (o.cfg.lr_at(int(o.step)) * o.cfg.weight_decay) - 1) < 1e-2 \
            and sig.fits(d_bug - d_ref, k * before_ref, o.tol):
        return Diagnosis("update_scale", "{bug}'s update lacks the weight-decay term lr x weight_decay x W",
                         f"{{bug}} - {{ref}} = {k:.4g} x the parameter before the step, at every element", o.ref.size)
    return None


def _records(o: Origin, get: Getter, step: Step, shape: tuple[int, ...],
             first: tuple[str, ...] = ()) -> list[tuple[str, np.ndarray]]:
    """The records of the spec at `step` on one side with this shape (or broadcasting to it), `first` first;
    the origin's own record only at another step."""
    out = []
    names = list(dict.fromkeys([*first, *(graph(o.cfg) if o.cfg else {})]))
    for name in names:
        v = get(step, name)
        if v is not None and np.ndim(v) and np.shape(v) in (shape, shape[-1:]) and (name != o.name or step != o.step):
            out.append((name, np.asarray(v, dtype=np.float64)))
    return out


def _gradient(o: Origin, spec) -> list[tuple[str, np.ndarray]]:
    """For an optimizer buffer: g = gradient + weight_decay x parameter, the term it adds each step."""
    if spec is None or spec.op not in ("velocity", "adam_m") or o.step == LOAD:
        return []
    param = spec.previous[-1]
    try:
        inp = Inputs(o.get_ref, int(o.step), o.first)
        g = inp.cur(spec.inputs[0]) + o.cfg.weight_decay * inp.prev(param)
    except MissingInput:
        return []
    return [(f"g = {spec.inputs[0]} + weight_decay x {param}", g)]


def _offset_by_record(o: Origin) -> Diagnosis | None:
    """B = A + k x R for a record R of the step (or a parameter or buffer of the step before)."""
    if o.step == LOAD or o.cfg is None:
        return None
    d = o.bug - o.ref
    previous = int(o.step) - 1 if int(o.step) > o.first else LOAD
    spec = graph(o.cfg).get(o.name)
    # what the op reads from the step before are the likeliest terms, the parameter (weight decay) first
    own = tuple(sorted(spec.previous, key=lambda n: n not in network(o.cfg).parameters)) if spec is not None else ()
    pools = [(" of the step before", _records(o, o.get_ref, previous, o.ref.shape, own)[:len(own)]),
             ("", _gradient(o, spec) + _records(o, o.get_ref, o.step, o.ref.shape)),
             (" of the step before", _records(o, o.get_ref, previous, o.ref.shape))]
    for when, pool in pools:
        for rname, r in pool:
            rr = np.broadcast_to(r, d.shape)
            k = sig.ratio_of(rr, d)
            if k is None or abs(k) < 1e-7 or not sig.fits(d, k * rr, o.tol):
                continue
            named = _named_factor(k, rname, when, o.cfg)
            text, shown = None, k
            if named is not None and sig.fits(d, named[0] * rr, o.tol):  # the named constant fits as well
                shown, text = named
            detail = (f"{{bug}} = {{ref}} {'+' if shown > 0 else '-'} {abs(shown):.4g} x {rname}{when}"
                      + (f": {text}" if text else ""))
            return Diagnosis("offset", detail, f"{{bug}} - {{ref}} = k x {rname}{when} at all {d.size} elements, "
                             f"k = {k:.6g}", d.size)
    return None


def _named_factor(k: float, rname: str, when: str, cfg) -> tuple[float, str] | None:
    """The constant a fitted factor k stands for (within 1e-3 of it, relatively) and what it means: -1, 1
    and -2 (a term missing, added twice, subtracted), -weight_decay, -momentum for the gradient term. The
    detail prints that constant where it fits too, so a fit's last digits (the sides' rounding) never
    show as 0.0004998 for a decay of 0.0005; the evidence keeps the fitted k."""
    named = [(-1.0, f"{rname}{when} missing from {{bug}}"), (1.0, f"{rname}{when} added twice"),
             (-2.0, f"{rname}{when} subtracted instead of added")]
    if cfg.weight_decay:
        named.append((-cfg.weight_decay, "the weight-decay term missing"))
    if rname.startswith("g =") and cfg.momentum:
        named.append((-cfg.momentum, "the gradient dampened by (1 - momentum)?"))
    return next(((c, text) for c, text in named if abs(k / c - 1) < 1e-3), None)


def _model(o: Origin, subst: dict[tuple[Step, str], tuple[Step, str]], fake: dict[str, np.ndarray],
           side: Getter | None = None) -> Expected | None:
    """The bug side's op (or `side`'s) applied to its own inputs with some replaced: `subst` maps (step, name) to
    another record, `fake` gives an input's replacement values outright."""
    own = side or o.get_bug

    def get(step: Step, name: str) -> np.ndarray | None:
        if name in fake:  # an input of this step, or a parameter as the step began
            return fake[name]
        return own(*subst.get((step, name), (step, name)))
    try:
        with np.errstate(all="ignore"):
            return expected(o.name, o.cfg, Inputs(get, int(o.step), o.first), o.u)
    except (MissingInput, KeyError, IndexError, ValueError):
        return None


def _wrong_operand(o: Origin) -> Diagnosis | None:
    """B is the op applied to another record than the graph says, or B is another record, or the step before's."""
    if o.step == LOAD or o.cfg is None:
        return None
    spec = graph(o.cfg).get(o.name)
    step = int(o.step)
    previous = step - 1 if step > o.first else LOAD
    before = o.get_ref(previous, o.name) if spec is not None else None
    if before is not None and np.shape(before) == o.bug.shape and sig.fits(o.bug, np.asarray(before, np.float64), o.tol):
        return Diagnosis("wrong_operand", f"{{bug}} holds {{ref}}'s {o.name} of the step before (a stale value: "
                         f"updated late, or taken from the previous batch?)", f"all {o.bug.size} elements equal it",
                         o.bug.size)
    for rname, r in _records(o, o.get_bug, o.step, o.bug.shape):
        theirs = o.get_ref(o.step, rname)
        if theirs is not None and np.shape(theirs) == o.ref.shape and sig.fits(o.ref, np.asarray(theirs, np.float64),
                                                                               o.tol):
            continue  # equal on the reference side too (a bias of 0 makes Z = M): that says nothing
        if r.shape == o.bug.shape and sig.fits(o.bug, r, o.tol):
            return Diagnosis("wrong_operand", f"{{bug}} equals its own {rname} of this step (the wrong variable "
                             f"recorded or passed on?)", f"all {o.bug.size} elements equal it", o.bug.size)
        if r.shape != o.bug.shape or sig.fits(r, np.ones_like(r), 0 * r):
            continue
        if sig.fits(o.bug, o.ref * r, o.tol):
            return Diagnosis("wrong_operand", f"{{bug}} = {{ref}} x {rname} at every element (a derivative multiplied "
                             f"by the value instead of by its slope?)", f"all {o.bug.size} elements", o.bug.size)
        found = _times_record_scaled(o, rname, r)
        if found:
            return found
    if spec is None or not spec.op:
        return None
    # (kind, what the op was applied to, records substituted, inputs replaced outright), tried in order
    trials: list[tuple[str, str, dict, dict]] = []
    for slot in spec.previous:  # a square weight used as W where the graph has W^T (or the reverse)
        have = o.get_bug(previous, slot)
        if have is not None and np.ndim(have) == 2 and np.shape(have)[0] == np.shape(have)[1] > 1:
            trials.append(("layout", f"{slot} transposed (the square weight's rows and columns swapped)", {},
                           {slot: np.asarray(have, dtype=np.float64).T}))
    for slot in spec.inputs:
        have = o.get_bug(step, slot)
        if have is None:
            continue
        shape = np.shape(have)
        names = [n for n, v in _records(o, o.get_bug, step, shape) if np.shape(v) == shape and n != slot]
        names += [o.name] if np.shape(o.get_bug(step, o.name)) == shape and slot != o.name else []
        trials += [("wrong_operand", f"{n} where the graph has {slot}", {(step, slot): (step, n)}, {}) for n in names]
        if np.ndim(have) >= 1 and shape[0] > 1:
            trials += [("wrong_operand", f"{slot} with its rows {what}", {}, {slot: f(np.asarray(have))})
                       for what, f in (("reversed", lambda a: a[::-1]), ("shifted by 1", lambda a: np.roll(a, 1, 0)))]
    for slot in spec.previous:
        if o.get_bug(step, slot) is not None:  # the parameter after this step's update, where the graph has it before
            trials.append(("wrong_operand", f"{slot} as updated by this step, where the graph has it before",
                           {(previous, slot): (step, slot)}, {}))
    if len(spec.inputs) == 1 and spec.op in ("activation", "sigmoid", "softmax"):  # the op applied twice
        once = _model(o, {}, {})
        if once is not None and once.value is not None:
            trials.append(("wrong_operand", "its own result: the op applied twice", {}, {spec.inputs[0]: once.value}))
    if spec.op == "grad_preactivation":
        found = _slope(o, spec.inputs)
        if found:
            return found
    for kind, what, subst, fake in trials:
        model = _model(o, subst, fake)
        if model is None or model.value is None or np.shape(model.value) != o.bug.shape:
            continue
        own = _own_rounding(model, o)
        if sig.fits(o.bug, model.value, own) and not (subst and _fits_reference_too(o, subst)):
            return Diagnosis(kind, f"{{bug}} is the op applied to {what}",
                             f"all {o.bug.size} elements within the op's own rounding of it "
                             f"({sig.worst(o.bug, model.value, own):.2g}x at worst)", o.bug.size)
    return None


def _times_record_scaled(o: Origin, rname: str, r: np.ndarray) -> Diagnosis | None:
    """B = c x A x R with c a quantity of the run: another op's factor applied here (dropout's mask and its
    1/(1 - p) applied to the matmul, before the bias)."""
    c = sig.ratio_of(o.ref * r, o.bug)
    name = named(c, o.cfg, _batch(o)) if c is not None and np.isfinite(c) and c != 0 else None
    if name is None or not sig.fits(o.bug, c * o.ref * r, o.tol):
        return None
    return Diagnosis("wrong_operand", f"{{bug}} = {{ref}} x {rname} x {c:.4g} at every element ({name[0]}): {rname} "
                     f"and that factor applied here, where the graph has neither?",
                     f"all {o.bug.size} elements within the bound of c x {{ref}} x {rname}, c = {c:.8g}", o.bug.size, c)


def _fits_reference_too(o: Origin, subst: dict[tuple[Step, str], tuple[Step, str]]) -> bool:
    """The same records substituted on the reference side give the reference: the substitution changes nothing
    (relu applied to its own output, a bias of 0), so it cannot tell the sides apart and says nothing."""
    model = _model(o, subst, {}, o.get_ref)
    if model is None or model.value is None or np.shape(model.value) != o.ref.shape:
        return False
    return sig.fits(o.ref, model.value, _own_rounding(model, o))


def _own_rounding(model: Expected, o: Origin) -> np.ndarray:
    """How far a side's value may lie from the op's model of it: the op's own rounding on both sides, plus the
    record's tolerance."""
    return Z_SIGMA * np.sqrt(2) * np.asarray(model.sigma) + 2 * np.asarray(model.fixed) + o.tol


SLOPES = {"1 - a": lambda a, z: 1 - a, "1 - a*a (tanh's)": lambda a, z: 1 - a * a,
          "a (1 - a) (sigmoid's)": lambda a, z: a * (1 - a), "1 (no slope)": lambda a, z: np.ones_like(a),
          "z > 0 (relu's)": lambda a, z: (z > 0).astype(np.float64), "z >= 0": lambda a, z: (z >= 0).astype(np.float64)}


def _slope(o: Origin, inputs: tuple[str, ...]) -> Diagnosis | None:
    """dZ = dA x f'(Z) with another activation's derivative, or a mis-written one."""
    step = int(o.step)
    da, z, a = (o.get_bug(step, n) for n in inputs)
    if da is None or z is None or a is None:
        return None
    da, z, a = (np.asarray(v, dtype=np.float64) for v in (da, z, a))
    for what, slope in SLOPES.items():
        if sig.fits(o.bug, da * slope(a, z), o.tol):
            return Diagnosis("wrong_operand", f"{{bug}} = dA x ({what}): the derivative of the activation "
                             f"written wrong", f"all {o.bug.size} elements equal dA x ({what})", o.bug.size)
    return None


def diagnose(o: Origin, op: str = "") -> Diagnosis:
    """The first pattern that fits; see the module docstring for the order."""
    if o.ref.shape != o.bug.shape:
        return _shape(o)
    tests: list[Callable[[], Diagnosis | None]] = [
        lambda: _update(o, op),
        lambda: _pattern("mask", sig.zeros(o.ref, o.bug), o),
        lambda: _scale(o, unnamed=False),
        lambda: _pattern("sign", sig.complement(o.ref, o.bug, o.tol), o),
        lambda: _pattern("axis", sig.axis(o.ref, o.bug) if op == "softmax" else None, o),
        lambda: _pattern("layout", sig.layout(o.ref, o.bug, o.tol), o),
        lambda: _pattern("precision", sig.precision(o.ref, o.bug, o.tol, wide=o.u < 2.0 ** -30), o),
        lambda: _wrong_operand(o),
        lambda: _offset_by_record(o),
        lambda: _scale(o, unnamed=True),
        lambda: _pattern("offset", sig.offset(o.ref, o.bug, o.tol), o),
        lambda: _pattern("mask", sig.mask(o.ref, o.bug, o.tol), o),
        lambda: _pattern("partial", sig.partial(o.ref, o.bug, o.tol), o),
    ]
    for test in tests:
        found = test()
        if found:
            return found
    return Diagnosis("none", "no known pattern", "", o.ref.size)


def _shape(o: Origin) -> Diagnosis:
    """Shapes that differ: the same values transposed or reshaped, or a reduction collapsed to one number."""
    ref, bug = o.ref, o.bug
    tol = 4 * o.u * np.abs(ref)
    if ref.ndim == 2 and bug.shape == ref.shape[::-1] and sig.fits(bug.T, ref, tol):
        return Diagnosis("layout", "{bug} holds {ref} transposed (samples or units kept as columns?)",
                         f"all {ref.size} elements equal once transposed", ref.size)
    if ref.size == bug.size and sig.fits(bug.reshape(ref.shape), ref, tol):
        return Diagnosis("layout", f"{{bug}} holds {{ref}}'s values in {{ref}}'s order with the shape {bug.shape}: "
                         f"reshaped, not transposed", f"all {ref.size} elements equal once reshaped", ref.size)
    found = sig.collapsed(ref, bug) or sig.collapsed(bug, ref)
    return Diagnosis("collapsed", *found, ref.size) if found else Diagnosis("none", "no known pattern", "", 0)


def _pattern(kind: str, found: sig.Found, o: Origin) -> Diagnosis | None:
    return Diagnosis(kind, found[0], found[1], o.ref.size) if found else None


"""`python -m harness.compare A B`: run or load two sides, compare them, say where they part.

A and B are implementation directories (both are run on the same job), memstate
directories, or JSON-lines memstate files. Exit codes: 0 agree or drift, 1 diverged (or drift
with --strict), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .comparator import Comparison, RecordDiff, choose_tolerance, compare_memstates
from .config import Config, add_config_arguments, config_from_arguments, explicit_fields
from .data import load_mnist
from .errors import InputError
from .job import Job, prepare_job
from .jsonl import convert_jsonl
from .legacy import convert_legacy, looks_legacy
from .memstate import MANIFEST, Memstate
from .params import initial_params, load_params
from .records import step_label
from .runner import Implementation, is_implementation, load_implementation, run_implementation


@dataclass
class SideInput:
    """One argument of the command line, resolved."""

    path: Path
    impl: Implementation | None = None
    memstate: Memstate | None = None
    jsonl: Path | None = None
    legacy: Path | None = None

    @property
    def name(self) -> str:
        if self.impl:
            return self.impl.name
        if self.memstate:
            return self.memstate.name
        return self.path.stem


def resolve(arg: str) -> SideInput:
    path = Path(arg)
    if path.is_dir() and is_implementation(path):
        return SideInput(path, impl=load_implementation(path))
    if path.is_dir() and (path / MANIFEST).is_file():
        return SideInput(path, memstate=Memstate(path))
    if path.is_file():
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                data = None
            if looks_legacy(data):
                return SideInput(path, legacy=path)
        return SideInput(path, jsonl=path)
    if not path.exists():
        raise InputError(f"{arg}: no such file or directory")
    raise InputError(f"{arg}: neither an implementation directory (memstate-impl.json), "
                     f"a memstate directory (manifest.json) nor a JSON-lines memstate file")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "side"


def build_job(args: argparse.Namespace, sides: list[SideInput], out: Path, log) -> Job:
    """The one job both sides run: config from the options (or a memstate side), params, batches."""
    config = config_from_arguments(args)
    explicit = explicit_fields(args)
    given = next((s.memstate for s in sides if s.memstate), None)
    if given is not None:
        base = Config.from_dict(given.config, source=str(given.dir / MANIFEST))
        config = base.replace(**{k: getattr(config, k) for k in explicit})
        log(f"config taken from {given.dir} (options on the command line override it)")
    if args.params:
        params = load_params(args.params)
        if params.hidden != config.hidden:
            if "hidden" in explicit:
                raise InputError(f"{args.params}: parameters have H={params.hidden} but --hidden is {config.hidden}")
            config = config.replace(hidden=params.hidden)
            log(f"hidden size {params.hidden} taken from {args.params}")
    else:
        params = initial_params(config)
    return prepare_job(out / "job", config, params, load_mnist(args.data))


def describe_record(r: RecordDiff, names: tuple[str, str]) -> list[str]:
    a, b = names
    lines = []
    if r.kind in ("values", "labels"):
        idx = list(r.worst_index) if r.worst_index is not None else []
        bound = "the noise bound" if r.judged_by == "noise" else "the tolerance"
        lines.append(f"  worst element {idx}: {a}={r.worst_a!r} {b}={r.worst_b!r} "
                     f"|{a}-{b}|={r.max_abs:.3g} rel={r.max_rel:.3g} ulp={r.max_ulp:.0f} "
                     f"({r.worst_ratio:.3g}x {bound})")
        lines.append(f"  {r.n_over} of {r.size} elements beyond {bound}")
        if r.role == "origin" and r.n_unexplained:
            where = list(r.unexplained_index or ())
            lines.append(f"  origin: {r.n_unexplained} elements not explained by the inputs' differences "
                         f"(worst {where}: {r.explained_ratio:.3g}x the op's own rounding)")
            if r.inconsistent in (a, b):
                other = b if r.inconsistent == a else a
                lines.append(f"  {r.inconsistent}'s value is not the op applied to {r.inconsistent}'s own inputs; "
                             f"{other}'s is")
            elif r.inconsistent:
                lines.append("  neither side's value is the op applied to its own inputs as the spec defines it")
        elif r.role == "origin" and r.judged_by == "graph":
            lines.append("  origin by the graph alone: its inputs are not recorded, and none recorded diverged")
        elif r.role == "propagated":
            lines.append(f"  propagated: the inputs' differences explain it ({r.explained_ratio:.3g}x the op's own "
                         f"rounding at worst)" if r.judged_by != "graph" else "  propagated: an input diverged before it")
        nonfinite = [f"{a} {r.nan_a} NaN {r.inf_a} Inf" if r.nan_a or r.inf_a else "",
                     f"{b} {r.nan_b} NaN {r.inf_b} Inf" if r.nan_b or r.inf_b else ""]
        if any(nonfinite):
            lines.append("  non-finite: " + "; ".join(x for x in nonfinite if x))
    elif r.kind == "shape":
        lines.append(f"  shape {a} {list(r.shape_a or ())} vs {b} {list(r.shape_b or ())}")
    if r.note:
        lines.append(f"  {r.note}")
    return lines


def format_text(c: Comparison, limit: int = 8) -> str:
    names = (c.a.label, c.b.label)
    cfg = c.a.manifest.get("config", {})
    lines = [f"memstate: {c.a.label} = {c.a.name} ({c.a.path})", f"          {c.b.label} = {c.b.name} ({c.b.path})"]
    if cfg:
        lines.append("config: " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    lines.append(f"tolerance: {c.tolerance.describe()}")
    for path, x, y in c.manifest_diff:
        lines.append(f"differs: {path}: {names[0]}={x!r} {names[1]}={y!r}")
    for note in c.notes:
        lines.append(f"note: {note}")
    n_steps = len({r.step for r in c.records})
    lines.append(f"compared {len(c.records)} records over {n_steps} units (load + steps): "
                 f"{len(c.records) - len(c.divergences)} agree, {len(c.divergences)} diverge")
    first = c.first
    if first is None:
        lines.append("verdict: AGREE (every record within its noise bound)")
        return "\n".join(lines)
    if c.verdict == "drift":
        lines.append(f"verdict: DRIFT: {len(c.divergences)} record(s) differ by more than a step's rounding, first at "
                     f"{first.where}; each is explained by differences upstream (no origin)")
        lines.append("  drift passes" + (" only without --strict: exit 1 (--strict)" if c.strict else
                                          "; use --strict to make it fail"))
        lines.extend(describe_record(first, names))
        return "\n".join(lines)
    origins = c.origins
    lines.append(f"verdict: DIVERGED at {first.where} ({first.kind}): the first origin")
    lines.extend(describe_record(first, names))
    if len(origins) > 1:
        lines.append(f"{len(origins)} origins in all (where the op itself differs), first ones:")
        for r in origins[:limit]:
            lines.append(f"  {step_label(r.step)} {r.name} ({r.kind})")
    propagated = [r for r in c.divergences if not r.is_origin]
    if propagated:
        lines.append(f"{len(propagated)} more diverging record(s) only pass differences on, first ones:")
        for r in propagated[:limit]:
            extra = f"{r.n_over}/{r.size} over, worst {r.worst_ratio:.3g}x" if r.kind == "values" else r.note
            lines.append(f"  {step_label(r.step)} {r.name} {extra}")
    return "\n".join(lines)


def exit_code(c: Comparison) -> int:
    return 0 if c else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="implementation directory, memstate directory, .jsonl memstate, "
                   "or a legacy one-step .json dump")
    p.add_argument("b", metavar="B", help="the other side")
    p.add_argument("--data", metavar="DIR", help="directory with the four MNIST files (default: bundled subset)")
    p.add_argument("--params", metavar="FILE", help="parameter JSON (memstate or legacy layout); default: from the seed")
    p.add_argument("--out", metavar="DIR", help="where job and memstates go (default runs/TIME-A-vs-B)")
    p.add_argument("--json", metavar="FILE", help="also write the full result as JSON; '-' puts it alone on "
                   "stdout and the text summary on stderr")
    p.add_argument("--strict", action="store_true", help="drift (divergences with no origin) exits 1 too")
    p.add_argument("--tolerance", choices=("noise", "fixed"), help="noise: the noise model (default); fixed: "
                   "rtol/atol per dtype")
    p.add_argument("--rtol", type=float, help="fixed mode's relative tolerance (implies --tolerance fixed)")
    p.add_argument("--atol", type=float, help="fixed mode's absolute tolerance, times the record's largest "
                   "magnitude (implies --tolerance fixed)")
    p.add_argument("--timeout", type=float, help="seconds before an implementation is killed (default 600)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_config_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        sides = [resolve(args.a), resolve(args.b)]
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{stamp}-{_slug(sides[0].name)}-vs-{_slug(sides[1].name)}"
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out}: already holds a run; refusing to overwrite it (choose another --out)")
        job = build_job(args, sides, out, log) if any(s.impl for s in sides) else None
        states = []
        for label, side in zip("AB", sides):
            target = out / f"{label.lower()}-{_slug(side.name)}"
            if side.impl is not None:
                assert job is not None
                log(f"running {label} = {side.impl.name} ({side.path}) ...")
                result = run_implementation(side.impl, job, target, timeout=args.timeout)
                log(f"  {result.status} in {result.seconds:.1f} s" + (f": {result.error}" if result.error else ""))
                states.append(Memstate(result.memstate))
            elif side.legacy is not None:
                loss = job.config.loss if job else (next((s.memstate.config.get("loss") for s in sides if s.memstate),
                                                         None) or "cross_entropy")
                states.append(convert_legacy(side.legacy, target, loss=loss))
            elif side.jsonl is not None:
                converted = convert_jsonl(side.jsonl, target)
                if not converted.units:  # nothing readable at all: bad input, not a run that stopped
                    raise InputError((converted.manifest.get("stopped") or {}).get("error")
                                     or f"{side.jsonl}: holds no records")
                states.append(converted)
            else:
                states.append(side.memstate)
        tol = choose_tolerance(states[0], states[1], args.rtol, args.atol, args.tolerance)
        comparison = compare_memstates(states[0], states[1], tol, strict=args.strict)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every finished step is kept", file=sys.stderr)
        return 130
    to_stdout = args.json == "-"
    print(format_text(comparison), file=sys.stderr if to_stdout else sys.stdout)
    if args.json:
        text = json.dumps(comparison.to_dict(), indent=1, default=str)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text)
    return exit_code(comparison)


if __name__ == "__main__":
    sys.exit(main())

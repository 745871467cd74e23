"""`python -m harness.compare A B`: run or load two sides, compare them, say where they part.

A and B are implementation directories (both are run on the same job), memstate
directories, or JSON-lines memstate files. Exit codes: 0 agree or drift, 1 diverged (or drift
with --strict), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.compare.bisect import BisectResult, bisect
from harness.compare.stated import job_with_precision, state_precision
from harness.compare.heap import keep_freed_memory
from harness.compare.stream import choose_tolerance, compare_memstates
from harness.errors import InputError, OutputError, printable
from harness.report.text import format_text
from harness.report.html import write_report
from harness.run.job import Job, prepare_job
from harness.run.job import resolve as resolve_config
from harness.run.outputs import (
    check_file_target,
    check_output_paths,
    claim_run_directory,
    release_run_directory,
)
from harness.run.processes import interrupt_code, interrupt_name, terminations_interrupt
from harness.run.runner import (
    Implementation,
    is_implementation,
    load_implementation,
    run_implementation,
)
from harness.spec.config import (
    Config,
    add_config_arguments,
    config_from_arguments,
    explicit_fields,
    non_negative_number,
    positive_integer,
    positive_number,
    widths_text,
)
from harness.spec.data import Mnist, load_mnist
from harness.spec.params import Params, initial_params, load_params
from harness.spec.precision import MODES
from harness.spec.records import LOAD
from harness.store.jsonl import convert_jsonl
from harness.store.legacy import convert_legacy, looks_legacy
from harness.store.format import MANIFEST, write_atomic
from harness.store.memstate import Memstate


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


def slug(text: str) -> str:
    """A name made safe for a file or directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "side"


def build_job(args: argparse.Namespace, sides: list[SideInput], out: Path, log) -> Job:
    """The one job both sides run: config from the options (or a memstate side), params, batches."""
    mnist = load_mnist(args.data)
    config, params = job_inputs(args, sides, log, mnist)
    return prepare_job(out / "job", config, params, mnist)


def job_inputs(args: argparse.Namespace, sides: list[SideInput], log,
               mnist: Mnist | None = None) -> tuple[Config, Params]:
    """The config (from the options, or a memstate side) and the initial parameters."""
    config = config_from_arguments(args)
    explicit = explicit_fields(args)
    given = next((s.memstate for s in sides if s.memstate), None)
    if given is not None:
        base = Config.from_dict(given.config, source=str(given.dir / MANIFEST))
        config = base.replace(**{k: getattr(config, k) for k in explicit})
        log(f"config taken from {given.dir} (options on the command line override it)")
    if args.params:
        params = load_params(args.params)
        if params.widths != config.widths:
            widths = widths_text(params.widths)
            if {"hidden", "layers"} & explicit:
                raise InputError(f"{args.params}: parameters have hidden widths {widths} but the config says "
                                 f"{widths_text(config.widths)}")
            config = config.replace(layers=params.widths)
            log(f"hidden widths {widths} taken from {args.params}")
    else:
        params = initial_params(resolve_config(config, mnist) if mnist is not None else config)  # the data's inputs
    return config, params


def run_bisect(args: argparse.Namespace, sides: list[SideInput], out: Path, log) -> tuple[BisectResult, list[str]]:
    """--bisect: the summary pass, the screen and the replay (harness/bisect.py), and what to print."""
    if not all(s.impl for s in sides):
        raise InputError("--bisect runs both sides: give two implementation directories")
    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be a positive number of steps, got {args.checkpoint_every}")
    mnist = load_mnist(args.data)
    config, params = job_inputs(args, sides, log, mnist)
    log(f"bisect: summary pass of {config.steps} steps, a checkpoint every {args.checkpoint_every} ...")
    res = bisect(sides[0].impl, sides[1].impl, config, params, mnist, out,
                 args.checkpoint_every, timeout=args.timeout, strict=args.strict)
    lines = []
    for p in res.passes:
        start = f"from step {p.first_step} (both sides from A's state) " if p.first_step else ""
        if p.suspect is None:
            lines.append(f"bisect: summaries {start}agree at every step to {config.steps - 1}")
            continue
        lines.append(f"bisect: summaries {start}first part at step {p.suspect.step}, {p.suspect.name}: {p.suspect.why}")
        if p.window:
            exact = "yes" if p.replay_exact else "NO (an implementation is not deterministic)"
            lines.append(f"bisect: replayed steps {p.window[0]}..{p.window[1]} in full from each side's checkpoint; "
                         f"the replay reproduces the summary pass exactly: {exact}")
    lines += [f"bisect: {n}" for n in res.notes]
    full = full_capture_estimate(res, config.steps)
    lines.append(f"bisect: wrote {res.bytes_written / 1e6:.1f} MB in all" + (
        f"; full capture of both sides would write about {full / 1e6:.0f} MB "
        f"({100 * res.bytes_written / full:.2f}%)" if full else ""))
    return res, lines


def full_capture_estimate(res: BisectResult, steps: int) -> int:
    """Bytes a full capture of every step of both sides would write, from the replayed steps' sizes."""
    sizes = [f.stat().st_size for p in res.passes for d in (p.replay_a, p.replay_b) if d
             for f in d.glob("step-*.safetensors")]
    return int(sum(sizes) / len(sizes) * steps * 2) if sizes else 0


def _print(*parts: object, file=None) -> None:
    """print, with every control character that came from a file escaped (a name holding a newline and
    an ANSI escape cannot forge or hide a line); the newlines between parts stay newlines."""
    text = " ".join(str(p) for p in parts)
    print("\n".join(printable(line) for line in text.split("\n")) if "\n" in text else printable(text),
          file=file or sys.stdout, flush=file is sys.stderr)




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
    p.add_argument("--html", metavar="FILE", help="where the HTML report goes (default: reports/TIME-A-vs-B.html, "
                   "or under $MEMSTATE_REPORTS)")
    p.add_argument("--no-html", action="store_true", help="write no HTML report")
    p.add_argument("--strict", action="store_true", help="drift (divergences with no origin) exits 1 too")
    p.add_argument("--tolerance", choices=("noise", "fixed"), help="noise: the noise model (default); fixed: "
                   "rtol/atol per dtype")
    p.add_argument("--rtol", type=non_negative_number, help="fixed mode's relative tolerance (implies --tolerance fixed)")
    p.add_argument("--atol", type=non_negative_number, help="fixed mode's absolute tolerance, times the record's largest "
                   "magnitude (implies --tolerance fixed)")
    p.add_argument("--timeout", type=positive_number, help="seconds before an implementation is killed (default 600)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    for label in "ab":
        p.add_argument(f"--precision-{label}", choices=MODES, metavar="MODE", help=(
            f"{label.upper()}'s precision: {', '.join(MODES)} (tf32, bfloat16, float16: matmul operands rounded, "
            f"float32 accumulation; ...-storage: every tensor kept in that format); an implementation is asked for "
            f"it in its job, a side that does not declare it is judged so"))
    p.add_argument("--first", action="store_true", help="stop at the first origin (later records not compared)")
    p.add_argument("--bisect", action="store_true", help="long runs: run both sides keeping per-step summaries "
                   "and checkpoints, then replay in full only the window where they part (docs/bisect.md)")
    p.add_argument("--checkpoint-every", type=positive_integer, default=100, metavar="K",
                   help="--bisect: keep the state every K steps (default 100)")
    add_config_arguments(p)
    return p


def report_path(args: argparse.Namespace, stamp: str, sides: list[SideInput]) -> Path | None:
    """Where the HTML report goes, its directory made now so that an unwritable one fails before any run."""
    if args.no_html:
        return None
    path = Path(args.html) if args.html else (Path(os.environ.get("MEMSTATE_REPORTS") or "reports")
                                              / f"{stamp}-{slug(sides[0].name)}-vs-{slug(sides[1].name)}.html")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path.parent}: cannot create the report directory: {e.strerror or e}") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path.parent}: the report directory is not writable")
    return path


def reproduce(argv: list[str]) -> str:
    """The command line again, runnable from any directory (it starts with `cd` to this one); without
    --out, whose directory now holds this run and would be refused."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            args.append(arg)
    return shlex.join(["cd", os.getcwd()]) + " && " + shlex.join(["python", "-m", "harness.compare", *args])


def kept(out: Path, sides: list[SideInput]) -> str:
    """Where an interrupted or failed run left its memstates, and how to compare them later."""
    made = [p for p in sorted(out.glob("[ab]-*")) if p.is_dir() and (p / MANIFEST).is_file()]
    if len(made) == 2:
        return f"; compare what they hold with: python -m harness.compare {made[0]} {made[1]}"
    return f" in {made[0]}" if made else ""


def main(argv: list[str] | None = None) -> int:
    with terminations_interrupt():  # SIGTERM and SIGHUP close the memstates as Ctrl-C does
        return _main(sys.argv[1:] if argv is None else [str(x) for x in argv])


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    keep_freed_memory()  # this process is the comparator's own: its float64 temporaries reuse the heap
    log = (lambda msg: None) if args.quiet else (lambda msg: _print(printable(msg), file=sys.stderr))
    sides: list[SideInput] = []
    out = Path(args.out or "runs")
    claimed: bool | None = None  # whether this command made the run directory it claimed (None: claimed none)
    try:
        sides = [resolve(args.a), resolve(args.b)]
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{stamp}-{slug(sides[0].name)}-vs-{slug(sides[1].name)}"
        html = report_path(args, stamp, sides)
        inputs = [s.path for s in sides] + [Path(p) for p in (args.params, args.config, args.data) if p]
        check_output_paths({"--html": html, "--json": args.json}, inputs)
        if args.json and args.json != "-":
            check_file_target(args.json, "--json")
        if args.bisect or any(s.memstate is None for s in sides):  # something will be written under --out
            check_output_paths({"--out": out}, inputs)
            claimed = claim_run_directory(out)
        pre: list[str] = []
        res = None
        if args.bisect:
            res, pre = run_bisect(args, sides, out, log)
            last = res.passes[-1]
            if res.comparison is None:  # the summaries agree: nothing was replayed, so there is no report
                _print("\n".join(printable(line) for line in pre), file=sys.stderr if args.json == "-" else sys.stdout)
                _print(f"verdict: {'DRIFT' if res.verdict == 'drift' else 'AGREE'} (no origin in {res.passes[0].a.parent}; "
                      f"the summaries of every screened step agree)", file=sys.stderr if args.json == "-" else sys.stdout)
                code = 1 if args.strict and res.verdict == "drift" else 0
                if args.json:
                    code = max(code, write_json(args.json, {
                        "verdict": res.verdict, "passed": code == 0, "exit_code": code, "strict": args.strict,
                        "first": None, "origins": [], "report": None, "bisect": res.to_dict()}))
                return code
            assert last.replay_a is not None and last.replay_b is not None
            sides = [SideInput(last.replay_a, memstate=Memstate(last.replay_a)),
                     SideInput(last.replay_b, memstate=Memstate(last.replay_b))]
        job = build_job(args, sides, out, log) if any(s.impl for s in sides) else None
        stated = {label: getattr(args, f"precision_{label.lower()}") for label in "AB"}
        if args.bisect and any(stated.values()):
            raise InputError("--precision-a/--precision-b do not work with --bisect yet: compare a window "
                             "(--steps) instead")
        states = []
        for label, side in zip("AB", sides):
            target = out / f"{label.lower()}-{slug(side.name)}"
            if side.impl is not None:
                assert job is not None
                log(f"running {label} = {side.impl.name} ({side.path}) ...")
                own = job_with_precision(job, out / f"job-{label.lower()}", stated[label]) if stated[label] else job
                result = run_implementation(side.impl, own, target, timeout=args.timeout)
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
        said = [state_precision(ms, label, stated[label]) for label, ms in zip("AB", states) if stated[label]]
        tol = choose_tolerance(states[0], states[1], args.rtol, args.atol, args.tolerance)
        comparison = compare_memstates(states[0], states[1], tol, strict=args.strict, stop_at_origin=args.first)
        comparison.notes[:0] = [n for n in said if n]
    except InputError as e:
        if claimed is not None:
            release_run_directory(out, claimed)
        _print(f"error: {printable(e)}{kept(out, sides) if isinstance(e, OutputError) else ''}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a vanished directory: say which file, keep what was written
        _print(f"error: {printable(e.filename or out)}: {printable(e.strerror or e)}; every finished step is kept"
              f"{kept(out, sides) if sides else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = "" if interrupt_name(e) == "Ctrl-C" else f" ({interrupt_name(e)})"
        _print(f"interrupted{how}; every finished step is kept{kept(out, sides) if sides else ''}", file=sys.stderr)
        return interrupt_code(e)
    to_stdout = args.json == "-"
    text_out = sys.stderr if to_stdout else sys.stdout
    if pre:
        _print("\n".join(printable(line) for line in pre), file=text_out)
    _print(format_text(comparison), file=text_out)
    code = comparison.exit_code
    for label, ms in zip("AB", states):
        if ms.damaged:  # compared up to the damage; the input is still bad (exit 2)
            n = len([u for u in ms.units if u != LOAD])
            covers = f"the {n} step(s) before it" if n else "only what was loaded before it"
            _print(f"error: {label}'s memstate is damaged: {printable(ms.damaged)}; the comparison above covers {covers}",
                  file=sys.stderr)
    written = None
    if html is not None:
        try:
            written = write_report(comparison, states[0], states[1], html, reproduce(argv))
            _print(f"report: {html}", file=text_out)
        except InputError as e:
            _print(f"error: {printable(e)}", file=sys.stderr)
            code = 2
        except Exception as e:  # noqa: BLE001 - a report that cannot be drawn must not hide the verdict above
            _print(f"error: {html}: the report could not be drawn ({type(e).__name__}: {e}); the comparison above "
                  f"stands", file=sys.stderr)
            code = 2
    if args.json:
        result = {**comparison.to_dict(), "report": str(written) if written is not None else None}
        if res is not None:
            result["bisect"] = res.to_dict()
        code = max(code, write_json(args.json, result))
    return code


def write_json(target: str, result: dict) -> int:
    """--json: the result to stdout ("-") or to a file, written whole or not at all; 2 if it cannot be."""
    text = json.dumps(result, indent=1, default=str)
    if target == "-":
        print(text)  # JSON: every control character is already escaped
        return 0
    try:
        write_atomic(Path(target), text.encode())
    except OSError as e:
        _print(f"error: {target}: cannot write the JSON result: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

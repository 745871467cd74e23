"""Golden memstates: small reference runs on fixed seeds, kept in the repository, that every
implementation is checked against, and the code that writes them reproducibly.

A golden is an ordinary memstate directory whose manifest holds no timestamps, durations or
absolute paths, so that writing it again from the same implementation and versions gives the
same bytes. The project's own goldens are made by `impls/pure_python` (IEEE doubles rounded to
float32 per op, no BLAS: the same bytes on any machine with the same Python) and indexed in
fixtures/golden/GOLDEN.json with what made them.

    python -m harness.golden refresh      # rewrite fixtures/golden
    python -m harness.golden check        # rewrite into a temporary directory and compare bytes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.compare.comparison import Comparison
from harness.compare.stream import compare_memstates
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.errors import InputError, printable
from harness.store.format import MANIFEST, unit_file, write_atomic
from harness.store.memstate import Memstate
from harness.run.runner import load_implementation, run_config

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "fixtures" / "golden"
INDEX = "GOLDEN.json"
PRODUCER = ROOT / "impls" / "pure_python"
COMMAND = "python -m harness.golden refresh"
SMALL = {"hidden": 8, "batch_size": 4, "steps": 3}
CASES: dict[str, Config] = {  # name -> config: small, and together covering every option
    "relu-softmax-sgd-seed0": Config(**SMALL, seed=0),
    "tanh-mse-momentum-seed1": Config(**SMALL, seed=1, activation="tanh", loss="mse", optimizer="momentum",
                                      weight_decay=0.01),
    "sigmoid-float64-seed2": Config(**SMALL, seed=2, activation="sigmoid", dtype="float64", lr=0.5),
    "deep-dropout-adam-seed3": Config(**{**SMALL, "layers": (8, 6)}, seed=3, dropout=(0.25,), optimizer="adam",
                                      lr=0.01, loss="mse", squared_error="half_sum", batch_reduction="sum"),
}
UNSTABLE = ("created", "finished", "wall_seconds")  # manifest fields that differ run to run


def stable_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without timestamps, durations or absolute paths (the data source by its folder name)."""
    out = {k: v for k, v in manifest.items() if k not in UNSTABLE}
    out["implementation"] = {k: v for k, v in manifest.get("implementation", {}).items() if k != "path"}
    if isinstance(out.get("data"), str):
        out["data"] = Path(out["data"]).name
    return out


def write_golden(ms: Memstate, dest: str | Path) -> Path:
    """Copy a complete memstate to `dest` as a golden (step files byte for byte, a stable manifest),
    replacing what was there only once the new one is whole."""
    dest = Path(dest)
    if ms.status != "complete":
        raise InputError(f"{ms.dir}: only a complete run can become a golden ({ms.stop_summary()})")
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for u in ms.units:
        shutil.copyfile(ms.dir / unit_file(u), tmp / unit_file(u))
    write_atomic(tmp / MANIFEST, (json.dumps(stable_manifest(ms.manifest), indent=1, sort_keys=True) + "\n").encode())
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_goldens(out: str | Path = GOLDEN_DIR, producer: str | Path = PRODUCER) -> dict[str, Any]:
    """Run `producer` on every case on the bundled data and write the goldens and their index."""
    out = Path(out)
    impl = load_implementation(producer)
    mnist = load_mnist()
    index: dict[str, Any] = {"format": "memstate-golden/1", "command": COMMAND,
                             "producer": {"implementation": impl.name, "memstate": __version__,
                                          "python": platform.python_version(), "machine": platform.machine()},
                             "data": "fixtures/mnist (bundled subset)", "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in CASES.items():
            result = run_config(impl.dir, cfg, Path(tmp) / name, mnist)
            if not result:
                raise InputError(f"{producer}: failed on golden case {name}: {result.error}")
            run = Memstate(result.memstate)
            dest = write_golden(run, out / name)
            index["cases"][name] = {"config": cfg.to_dict(), "params_sha256": run.manifest["params_sha256"],
                                    "files": {f.name: sha256(f) for f in sorted(dest.iterdir())}}
    write_atomic(out / INDEX, (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())
    return index


def golden_config(name: str, directory: str | Path = GOLDEN_DIR) -> Config:
    """The config a golden was made with, from its manifest."""
    path = Path(directory) / name
    return Config.from_dict(Memstate(path).config, source=str(path / MANIFEST))


@dataclass
class GoldenCheck:
    """One implementation run on one golden case and compared with it. Truthy when it passes."""

    case: str
    comparison: Comparison

    def __bool__(self) -> bool:
        return bool(self.comparison)


def check_against_golden(impl_dir: str | Path, case: str, work: str | Path, directory: str | Path = GOLDEN_DIR,
                         strict: bool = False) -> GoldenCheck:
    """Run an implementation on a golden's config and seed (bundled data) and compare: golden is A."""
    golden = Memstate(Path(directory) / case)
    result = run_config(impl_dir, golden_config(case, directory), work, load_mnist())
    return GoldenCheck(case, compare_memstates(golden, Memstate(result.memstate), strict=strict))


def differing_files(a: Path, b: Path) -> list[str]:
    """Files of two golden trees that differ in bytes, or exist on one side only."""
    names = sorted({str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
                   | {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()})
    return [n for n in names if not ((a / n).is_file() and (b / n).is_file()
                                     and (a / n).read_bytes() == (b / n).read_bytes())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.golden", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("refresh", "check"))
    p.add_argument("--out", default=str(GOLDEN_DIR), help="the goldens' directory (default fixtures/golden)")
    args = p.parse_args(argv)
    try:
        if args.action == "refresh":
            index = make_goldens(args.out)
            print(f"wrote {len(index['cases'])} goldens to {args.out} with {index['producer']}")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            make_goldens(tmp)
            differ = differing_files(Path(args.out), Path(tmp))
    except InputError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    for name in differ:
        print(f"differs: {name}")
    print("goldens reproduce byte for byte" if not differ else f"{len(differ)} files differ from a fresh run")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

"""The memstate pytest plugin, registered through the `pytest11` entry point: installing the
package makes it available in any project.

    def test_my_port_matches_golden(memstate):
        run = memstate.run("ports/my-mlp", hidden=16, batch_size=8, steps=3, seed=0)
        memstate.assert_golden(run, "relu-h16-seed0")   # fails naming the first origin

    @pytest.mark.memstate_impls("impls/numpy", "ports/my-mlp")
    def test_each(memstate, memstate_impl): ...          # once per implementation directory

Options: `--memstate-update-goldens` (write the goldens instead of checking them),
`--memstate-impl NAME` (run only these implementations of a `memstate_impls` marker;
repeatable), `--memstate-reports DIR` (where failing comparisons' HTML reports go). The ini
option `memstate_goldens` names the goldens' directory (default tests/golden).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.compare.comparison import Comparison
from harness.compare.stream import compare_memstates
from harness.compare.cli import slug
from harness.spec.config import Config
from harness.spec.data import load_mnist
from harness.report.text import describe_record
from harness.golden import write_golden
from harness.store.memstate import Memstate
from harness.spec.params import load_params
from harness.report.html import write_report
from harness.run.runner import run_config


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memstate")
    group.addoption("--memstate-update-goldens", action="store_true",
                    help="write every golden that a test asserts against instead of checking it")
    group.addoption("--memstate-impl", action="append", default=[], metavar="NAME",
                    help="run only these implementations (directory name or path) of memstate_impls markers")
    group.addoption("--memstate-reports", metavar="DIR", help="where HTML reports of failing comparisons go "
                    "(default: the test's temporary directory)")
    parser.addini("memstate_goldens", "directory of golden memstates, relative to the rootdir", default="tests/golden")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "memstate_impls(*dirs): run the test once per implementation directory "
                            "(the memstate_impl fixture); --memstate-impl narrows the list")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "memstate_impl" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("memstate_impls")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: the memstate_impl fixture needs "
                                f"@pytest.mark.memstate_impls('path/to/impl', ...)")
    root = metafunc.config.rootpath
    dirs = [Path(d) if Path(d).is_absolute() else root / d for d in marker.args]
    chosen = metafunc.config.getoption("memstate_impl")
    if chosen:
        dirs = [d for d in dirs if d.name in chosen or any(Path(c).resolve() == d.resolve() for c in chosen)]
    metafunc.parametrize("memstate_impl", dirs, ids=[d.name for d in dirs])


@dataclass
class MemstateHelper:
    """What the `memstate` fixture gives a test: run implementations, compare, check goldens."""

    tmp: Path
    root: Path  # relative implementation paths are taken from here (pytest's rootdir)
    goldens: Path
    reports: Path
    update: bool = False
    runs: int = 0

    def run(self, impl: str | Path, *, data: str | Path | None = None, params: str | Path | None = None,
            timeout: float | None = None, **config: object) -> Memstate:
        """Run an implementation directory on a config (fields as keywords) and its seed's
        parameters (or `params`), on the bundled MNIST subset (or `data`). A crash is no exception
        here: the memstate says where it stopped, and a comparison reports it."""
        self.runs += 1
        path = Path(impl) if Path(impl).is_absolute() else self.root / impl
        result = run_config(path, Config(**config), self.tmp / f"memstate-{self.runs}-{path.name}",  # type: ignore[arg-type]
                            load_mnist(data), load_params(params) if params else None, timeout)
        return Memstate(result.memstate)

    def golden(self, name: str) -> Memstate:
        return Memstate(self.goldens / name)

    def compare(self, a: Memstate, b: Memstate, *, strict: bool = False) -> Comparison:
        return compare_memstates(a, b, strict=strict)

    def assert_agrees(self, a: Memstate, b: Memstate, *, strict: bool = False) -> Comparison:
        """Fails unless the two agree (or drift, unless `strict`), naming the first origin and
        writing the HTML report; skips, with the reason, where a side refused the config (unsupported)."""
        __tracebackhide__ = True
        c = self.compare(a, b, strict=strict)
        if c.refused is not None:  # a port that does not run this config: said, never passed
            pytest.skip(f"memstate: {c.refused.label} ({c.refused.name}) {c.refused.stop_summary}")
        if not c:
            raise AssertionError(self.explain(c, a, b))
        return c

    def assert_golden(self, run: Memstate, name: str, *, strict: bool = False) -> Comparison | None:
        """Compare a run with the golden `name` (golden is A); with --memstate-update-goldens,
        write the run as that golden instead."""
        __tracebackhide__ = True
        path = self.goldens / name
        if not name or Path(name).is_absolute() or ".." in Path(name).parts \
                or self.goldens.resolve() not in (self.goldens / name).resolve().parents:
            raise ValueError(f"memstate: golden name {name!r} must be a name inside {self.goldens} (no '..', "
                             f"not absolute)")
        if run.status == "unsupported":
            pytest.skip(f"memstate: {run.name} {run.stop_summary()}")
        if self.update:
            write_golden(run, path)
            return None
        if not path.is_dir():
            raise AssertionError(f"memstate: no golden {name!r} at {path}; run pytest --memstate-update-goldens "
                                   f"to write it")
        return self.assert_agrees(self.golden(name), run, strict=strict)

    def explain(self, c: Comparison, a: Memstate, b: Memstate) -> str:
        """The failure message: verdict and first origin on the first line (JUnit's message), then
        the worst element, notes and the report's path."""
        first = c.first
        head = f"memstate: {c.verdict.upper()}"
        if c.refused is not None:
            head += f": {c.refused.label} {c.refused.stop_summary}"
        elif first is not None:
            head += f" at {first.where} ({first.kind}): " + (
                "the first origin" if first.is_origin else
                f"drift with {len(c.suspects)} suspect(s), possible rounding (--strict)" if c.suspects else
                "drift (--strict)")
        lines = [head + f"; A = {c.a.name} ({c.a.path}), B = {c.b.name} ({c.b.path})"]
        if first is not None:
            lines += [line.strip() for line in describe_record(first, (c.a.label, c.b.label))]
        if c.suspects:
            lines.append(f"{len(c.suspects)} suspect(s): " + "; ".join(r.where for r in c.suspects[:5])
                         + (" ..." if len(c.suspects) > 5 else ""))
        if len(c.origins) > 1:
            lines.append(f"{len(c.origins)} origins in all: " + "; ".join(r.where for r in c.origins[:5])
                         + (" ..." if len(c.origins) > 5 else ""))
        lines += [f"note: {n}" for n in c.notes]
        self.reports.mkdir(parents=True, exist_ok=True)
        report = self.reports / f"{slug(c.a.name)}-vs-{slug(c.b.name)}-{self.runs}.html"
        try:
            write_report(c, a, b, report)
            lines.append(f"report: {report}")
        except Exception as e:  # noqa: BLE001 - the verdict above matters more than the page
            lines.append(f"report: not written ({type(e).__name__}: {e})")
        return "\n".join(lines)


@pytest.fixture
def memstate(request: pytest.FixtureRequest, tmp_path: Path) -> MemstateHelper:
    """Run implementations, compare memstates, check goldens; see the module docstring."""
    cfg = request.config
    goldens = Path(cfg.getini("memstate_goldens"))
    reports = cfg.getoption("memstate_reports")
    return MemstateHelper(tmp=tmp_path, root=cfg.rootpath, goldens=goldens if goldens.is_absolute() else cfg.rootpath / goldens,
                          reports=Path(reports) if reports else tmp_path / "reports",
                          update=cfg.getoption("memstate_update_goldens"))

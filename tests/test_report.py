"""The HTML report: what it says, that it escapes what it is given, and that a real browser shows it
offline with no console errors (headless Chromium from the system, driven by Playwright)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import IMPLS, ROOT

from harness.catalogue import BUGS
from harness.compare.stream import RecordArrays, compare_memstates
from harness.spec.config import Config
from harness.evaluate import Evaluator
from harness.store.memstate import Memstate
from harness.spec.records import LOAD, expected_order
from harness.report.grid import causal_chain, grid_units
from harness.report.html import render_report, write_report
from harness.report.plots import heatmaps, histogram, tiles, worst_table

CFG = Config(hidden=32, batch_size=16, steps=3)
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_ERROR = "<img src=x onerror=alert(2)>"
SCREENSHOTS = Path(os.environ.get("MEMSTATE_SCREENSHOTS", ROOT / "reports" / "screenshots"))


class Page(HTMLParser):
    """The parts of a page the tests look at: tags with their attributes, text, and text by id."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.by_id: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in ("img", "br", "meta", "input"):
            self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        for _, ident in self._open:
            if ident:
                self.by_id.setdefault(ident, []).append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def of(self, ident: str) -> str:
        return "".join(self.by_id.get(ident, []))


@pytest.fixture(scope="module")
def origin_report(runs, tmp_path_factory) -> tuple[Path, str]:
    a, b = runs.run("numpy", CFG), runs.run("examples/softmax_global_sum", CFG)
    c = compare_memstates(a, b)
    path = write_report(c, a, b, tmp_path_factory.mktemp("report") / "origin.html", "python -m harness.compare X Y")
    return path, path.read_text()


def test_origin_report_names_the_origin_and_links_it(origin_report):
    _, text = origin_report
    page = Page(text)
    assert page.of("verdict").startswith("DIVERGED at step 0, layer output, op softmax (values): the first origin.")
    # the grid: the origin's cell is red and links to its row, which says origin; the forward pass before it agrees
    cells = {a["href"]: a for a in page.find("a") if (a.get("href") or "").startswith("#r-")}
    assert "#r-0-output-softmax" in cells
    origin_cells = [t for t, a in page.tags if t == "td" and a.get("class") == "origin"]
    assert len(origin_cells) == CFG.steps  # the bug is in every step's softmax
    assert page.find("tr", id="r-0-output-softmax", **{"class": "origin"})
    for name in ("hidden-matmul", "hidden-activation", "output-bias_add"):
        row = page.find("tr", id=f"r-0-{name}")
        assert row and row[0]["class"] in ("exact", "noise"), name
    assert page.of("focus").startswith("First origin: step 0, output/softmax")
    assert "B's value is not the op applied to B's own inputs; A's is" in page.of("focus")
    # the chain runs on from the softmax to the loss and the updated parameters of step 0
    chain = page.of("chain")
    for name in ("loss/value", "output/grad_logits", "hidden/weight", "output/bias"):
        assert name in chain
    assert "hidden/matmul" not in chain
    assert "python -m harness.compare X Y" in "".join(page.text)


def test_report_is_self_contained_and_small(origin_report):
    path, text = origin_report
    page = Page(text)
    assert not page.find("script")
    csp = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")
    sources = [a.get("src") or "" for t, a in page.tags if "src" in a] + [a.get("href") or "" for _, a in page.tags
                                                                          if "href" in a]
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), sources
    images = page.find("img")
    assert [i["alt"] for i in images] == ["worst ratio per step", "output/softmax",
                                          f"histogram of the differences: 0 of {16 * 10} elements are equal; 0 non-finite"]
    for img in images:
        png = base64.b64decode((img["src"] or "").split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert path.stat().st_size < 5_000_000


def test_hidden_weights_are_tiled_per_unit(mnist, tmp_path):
    """An origin in the hidden weights' gradient (a planted bug) shows it as 28x28 tiles too; the
    softmax origin above has none."""
    case = next(c for c in BUGS if c.name == "grad-w1-scaled-1e-4")
    ev = Evaluator(tmp_path, mnist, keep=True)
    c = ev.compare(case, steps=1)
    first = c.first
    assert first is not None and (first.step, first.name) == (0, "hidden/grad_weight")
    a, b = Memstate(c.a.path), Memstate(c.b.path)
    page = Page(render_report(c, a, b))
    tiled = "hidden/weight" in first.name or first.name in ("hidden/grad_weight", "input/x")
    assert bool([a for a in page.find("img") if "28x28 tile" in (a["alt"] or "")]) == tiled


def test_agreeing_report_is_short_and_plain(runs):
    a = runs.run("numpy", CFG)
    c = compare_memstates(a, a)
    text = render_report(c, a, a)
    page = Page(text)
    n = len(c.records)
    assert page.of("verdict") == (f"AGREE: every one of the {n} records (the load and 3 steps) is within its noise "
                                  f"bound. All {n} are equal bit for bit.")
    for section in ("grid", "chain", "errors", "focus", "records"):
        assert section not in page.by_id
    assert not page.find("img")
    assert len(text) < 15_000


def test_tiles_put_each_pixel_in_its_place():
    x = np.arange(5 * 784, dtype=np.float64).reshape(5, 784)  # (units, pixels)
    t = tiles(x)
    cols = 4  # ceil(sqrt(2 * 5))
    for k in range(5):
        r, c = divmod(k, cols)
        for p in (0, 27, 28, 300, 783):
            assert t[r * 29 + p // 28, c * 29 + p % 28] == x[k, p]
    assert np.isnan(t[28, :]).all() and np.isnan(t[:, 28]).all()  # the gaps between tiles
    assert t.shape == (2 * 29 - 1, 4 * 29 - 1)
    assert np.isnan(t[29:, 29:]).all()  # no tile after the last unit


def test_causal_chain_follows_the_dataflow():
    cfg = Config(steps=3)
    present = set(expected_order(cfg))
    levels = causal_chain(cfg, (0, "output/softmax"), present)
    assert levels[0] == [(0, "output/softmax")]
    assert set(levels[1]) == {(0, "loss/value"), (0, "output/grad_logits")}
    reached = {k for lv in levels for k in lv}
    assert (0, "hidden/matmul") not in reached and all(s == 0 for s, _ in reached)
    # an origin in the update reaches the next step's forward pass and loss
    reached = {k for lv in causal_chain(cfg, (0, "hidden/weight"), present) for k in lv}
    assert {(1, "hidden/matmul"), (1, "loss/value"), (1, "hidden/weight")} <= reached
    assert not any(s == 2 for s, _ in reached)
    # a loaded parameter feeds step 0
    reached = {k for lv in causal_chain(cfg, (LOAD, "output/bias"), present) for k in lv}
    assert {(0, "output/bias_add"), (0, "output/softmax"), (0, "output/bias")} <= reached


def hostile_pair(root: Path) -> tuple[Path, Path]:
    """A: numpy under a name that is a script tag. B: numpy that dies at step 2 with HTML in its error."""
    a = root / "hostile-name"
    shutil.copytree(IMPLS / "numpy", a)
    (a / "memstate-impl.json").write_text(json.dumps({"name": HOSTILE_NAME, "entry": "mlp.py:run"}))
    b = root / "hostile-error"
    b.mkdir()
    (b / "memstate-impl.json").write_text(json.dumps({"name": "dies", "entry": "impl.py:run"}))
    (b / "impl.py").write_text(textwrap.dedent(f"""
        import importlib.util

        spec = importlib.util.spec_from_file_location("numpy_mlp", {str(IMPLS / "numpy" / "mlp.py")!r})
        mlp = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mlp)


        class Dying:
            def __init__(self, record):
                self.record = record

            def describe(self, *args, **kwargs):
                self.record.describe(*args, **kwargs)

            def __call__(self, step, *args, **kwargs):
                if step == 2:
                    raise RuntimeError({HOSTILE_ERROR!r})
                self.record(step, *args, **kwargs)


        def run(job_dir, record):
            mlp.run(job_dir, Dying(record))
    """))
    return a, b


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("hostile")
    a, b = hostile_pair(root)
    html = root / "hostile.html"
    r = subprocess.run([sys.executable, "-m", "harness.compare", a, b, "--hidden", "16", "--batch-size", "8",
                        "--steps", "4", "--out", root / "run", "--html", html], capture_output=True, text=True,
                       cwd=ROOT, timeout=300, check=False)
    assert r.returncode == 1, r.stdout + r.stderr  # B stopped: a divergence, reported, not raised
    assert f"report: {html}" in r.stdout
    return html, html.read_text()


def test_strings_from_manifests_and_errors_are_escaped(hostile_report):
    _, text = hostile_report
    page = Page(text)
    assert not page.find("script") and not [a for _, a in page.tags if "onerror" in a]
    shown = "".join(page.text)
    assert HOSTILE_NAME in shown and HOSTILE_ERROR in shown  # shown as text, literally
    assert page.of("verdict").startswith(f"DIVERGED at step 2, input/x (stopped): B stopped after step 1: "
                                         f"RuntimeError: {HOSTILE_ERROR}")


# --- in a real browser -----------------------------------------------------------------------------


def chromium() -> str:
    """The system's Chromium, or a skip (a failure where MEMSTATE_REQUIRE_BROWSER is set, as in CI)."""
    found = os.environ.get("MEMSTATE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")) if p),
        None)
    why = "" if found else "no Chromium found (install Debian's chromium, or set MEMSTATE_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "playwright is not installed (pip install -e '.[test]')"
    if why:
        if os.environ.get("MEMSTATE_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def open_offline(browser, path: Path, javascript: bool = True):
    """Load the page from its file URL with the network cut; returns (page, events) where events lists
    console errors, page errors, dialogs and every request that was not for a file."""
    context = browser.new_context(offline=True, java_script_enabled=javascript, viewport={"width": 1280, "height": 900})
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "requests": []}
    page = context.new_page()
    page.on("console", lambda m: events["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: events["pageerror"].append(str(e)))
    page.on("dialog", lambda d: (events["dialog"].append(d.message), d.dismiss()))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else events["requests"].append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, events


def test_report_in_chromium_offline(browser, origin_report):
    path, _ = origin_report
    page, events = open_offline(browser, path)
    assert events == {"console": [], "pageerror": [], "dialog": [], "requests": []}
    verdict = page.locator("#verdict")
    assert verdict.is_visible()
    assert verdict.inner_text().startswith("DIVERGED at step 0, layer output, op softmax")
    focus = page.locator("#focus h2")
    assert focus.is_visible() and focus.inner_text() == "First origin: step 0, output/softmax"
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 3 and min(widths) > 100  # every plot decoded
    page.locator('a[href="#r-0-output-softmax"]').first.click()  # the grid cell leads to the record's row
    assert page.url.endswith("#r-0-output-softmax")
    assert page.locator("#r-0-output-softmax").is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "origin-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    page.context.close()


def test_report_reads_without_javascript(browser, origin_report):
    path, _ = origin_report
    page, events = open_offline(browser, path, javascript=False)
    assert page.locator("#verdict").inner_text().startswith("DIVERGED at step 0")
    assert page.locator("#grid td.origin").count() == CFG.steps
    assert events["console"] == [] and events["requests"] == []
    page.context.close()


def test_hostile_strings_run_nothing_in_chromium(browser, hostile_report):
    path, _ = hostile_report
    page, events = open_offline(browser, path)
    assert events["dialog"] == [] and events["pageerror"] == [] and events["console"] == []
    assert page.locator("script").count() == 0 and page.locator("[onerror]").count() == 0
    body = page.locator("body").inner_text()
    assert HOSTILE_NAME in body and HOSTILE_ERROR in body
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "hostile-report.png"), full_page=True)
    page.context.close()


def test_long_runs_show_the_start_and_the_steps_around_the_divergence():
    units = [LOAD, *range(100)]
    shown = grid_units(units, 70, limit=60)
    assert shown[:20] == units[:20] and shown[20] is None
    assert shown[21:] == list(range(60, 100))  # 40 steps from 10 before the divergence
    assert grid_units(units[:30], 5) == units[:30]
    early = grid_units(units, 3, limit=60)
    assert early == [*units[:60], None]  # a divergence near the start: one contiguous run, no gap inside


def test_unwritable_report_directory_fails_before_anything_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = subprocess.run([sys.executable, "-m", "harness.compare", IMPLS / "numpy", IMPLS / "numpy", "--out",
                        tmp_path / "run", "--html", blocker / "report.html"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {blocker}: cannot create the report directory")
    assert not (tmp_path / "run").exists()  # refused before the job was made or a side was run


def test_non_finite_values_are_drawn_not_raised():
    """NaN and Inf on one side (a blown-up port) still give heatmaps, a histogram and a worst-element table."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 784))  # (units, pixels)
    b = a.copy()
    b[3, 100], b[5, :10], b[0, 0] = np.nan, np.inf, -np.inf
    arr = RecordArrays(a, b, np.full(a.shape, 1e-6), None, np.where(np.isfinite(b), 0.0, np.inf))
    for tiled in (False, True):
        assert heatmaps(arr, "hidden/weight", ("A", "B"), tiled).startswith('<img src="data:image/png;base64,')
    assert "12 non-finite" in histogram(arr, ("A", "B"))
    table = Page(worst_table(arr, ("A", "B")))
    first_row = [t for t in table.text if t.strip()][8:16]
    assert first_row[0] in ("[0, 0]", "[3, 100]", "[5, 0]") and first_row[5] == "inf"


def test_a_stopped_side_is_shown_in_its_own_words_and_the_commands_run_from_anywhere(hostile_report):
    _, text = hostile_report
    page = Page(text)
    stopped = page.of("stopped")
    assert stopped.startswith("Where a side stoppedB = dies: stopped after step 1: ") and "RuntimeError" in stopped
    assert HOSTILE_ERROR in stopped  # the port's own words, escaped (the page has no such tag)
    assert not any(t == "img" and a.get("src") == "x" for t, a in page.tags)
    commands = [t for t in page.text if "python -m harness.compare " in t]  # Reproduce, and compare again
    assert len(commands) == 2 and commands[0].startswith("cd /") and commands[1].startswith("python -m harness.compare /")
    assert not any("--out" in t for t in commands)  # its directory holds this run: a rerun would be refused


def test_a_shape_origin_has_no_ratio_in_its_tooltip_or_plot(runs, tmp_path):
    from harness.store.writer import MemstateWriter
    a = runs.run("numpy", CFG)
    writer = MemstateWriter(tmp_path / "b", {k: v for k, v in a.manifest.items()
                                             if k in ("implementation", "config", "dtype", "params_sha256")})
    for u in a.units:
        for n, x in a.unit(u).items():
            writer(u, n, np.array(x).T.copy() if (u, n) == (1, "hidden/matmul") else np.array(x))
    writer.close("complete")
    b = Memstate(tmp_path / "b")
    c = compare_memstates(a, b)
    assert (c.first.step, c.first.name, c.first.kind) == (1, "hidden/matmul", "shape")
    text = render_report(c, a, b)
    assert 'title="step 1 hidden/matmul: origin (shape)"' in text and "shapex" not in text
    assert "step 1, hidden/matmul differs in shape, which has no ratio: the dotted line marks its step" in text

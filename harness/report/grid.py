"""The grid of steps by records (every cell linked to its record's row) and the causal chain from the first
origin through the dataflow graph."""

from __future__ import annotations

from harness.compare.comparison import Comparison
from harness.judge.record import RecordDiff
from harness.report.cells import (
    CELL_MARK,
    COLOURS,
    anchor,
    category,
    cell_colour,
    esc,
    ratio_phrase,
    status_text,
)
from harness.spec.config import Config
from harness.spec.network import LOSS, network
from harness.spec.records import LOAD, Step, step_label, step_records

MAX_GRID_ROWS = 60  # steps shown in the grid; longer runs show the start and the steps around the first divergence


def key_records(cfg: Config | None) -> tuple[str, ...]:
    """The records a chain or a plot always names: the loss and every parameter."""
    return (LOSS, *network(cfg or Config()).parameters)


def grid_units(units: list[Step], focus: Step | None, limit: int = MAX_GRID_ROWS) -> list[Step | None]:
    """The units the grid shows, None where a run of steps is left out: all when they fit, else
    the first third of `limit` and the rest around `focus` (the first divergence)."""
    if len(units) <= limit:
        return list(units)
    head = limit // 3
    at = units.index(focus) if focus in units else head
    lo = max(head, at - limit // 6)
    hi = min(len(units), lo + limit - head)
    lo = max(head, hi - (limit - head))
    shown: list[Step | None] = list(units[:head])
    if lo > head:
        shown.append(None)
    shown += units[lo:hi]
    if hi < len(units):
        shown.append(None)
    return shown


def render_grid(c: Comparison, cells: dict[tuple[Step, str], RecordDiff], units: list[Step | None],
                names: list[str]) -> str:
    head = "".join(f'<th class="rec"><span>{esc(n)}</span></th>' for n in names)
    rows = []
    for u in units:
        if u is None:
            rows.append(f'<tr class="gap"><th>&hellip;</th><td colspan="{len(names)}">steps not shown</td></tr>')
            continue
        tds = []
        for n in names:
            r = cells.get((u, n))
            if r is None:
                tds.append('<td class="none"></td>')
                continue
            cat = category(r)
            title = f"{step_label(u)} {n}: {status_text(r)}{ratio_phrase(r)}"
            tds.append(f'<td class="{cat}" style="background:{cell_colour(r)}"><a href="#{esc(anchor(u, n))}" '
                       f'title="{esc(title)}">{CELL_MARK[cat]}</a></td>')
        rows.append(f"<tr><th>{esc(step_label(u))}</th>{''.join(tds)}</tr>")
    legend = " ".join(f'<span class="key" style="background:{col}">{esc(label)}</span>' for label, col in (
        ("equal bit for bit", "#f2f2f2"), ("within noise", "hsl(130 50% 80%)"),
        ("consistent (c): bound vacuous, each side its op of its own inputs", COLOURS["consistent"]),
        ("not judged (-)", COLOURS["unjudged"]),
        ("propagated (p), darker by decades past its bound", "hsl(32 95% 60%)"),
        ("suspect (s): beyond random rounding, within what some order of summation can round", COLOURS["suspect"]),
        ("origin (O)", "hsl(0 80% 45%)")))
    return (f'<section id="grid"><h2>Steps by records</h2><p class="legend">{legend}</p>'
            f'<div class="scroll"><table class="grid"><thead><tr><th>step</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def causal_chain(cfg: Config, start: tuple[Step, str], present: set[tuple[Step, str]]) -> list[list[tuple[Step, str]]]:
    """Records downstream of `start` through the dataflow graph, grouped by distance from it.
    Within the start's step; when the loss is not downstream there (an origin in the update),
    on through the next step to its loss and updated parameters."""
    specs = step_records(cfg)
    same = {s.name: [t.name for t in specs if s.name in t.inputs] for s in specs}
    later = {s.name: [t.name for t in specs if s.name in t.previous] for s in specs}

    def after(step: Step) -> Step:
        return 0 if step == LOAD else int(step) + 1

    def walk(steps: set[Step]) -> list[list[tuple[Step, str]]]:
        levels, seen, level = [], {start}, [start]
        while level:
            levels.append(level)
            nxt: list[tuple[Step, str]] = []
            for step, name in level:
                succ = [(step, m) for m in same.get(name, [])] + [(after(step), m) for m in later.get(name, [])]
                for k in succ:
                    if k[0] in steps and k in present and k not in seen:
                        seen.add(k)
                        nxt.append(k)
            level = nxt
        return levels

    levels = walk({start[0]})
    if not any(k == (start[0], "loss/value") for lv in levels for k in lv):
        levels = walk({start[0], after(start[0])})
    return levels


def render_chain(c: Comparison, cfg: Config | None, focus: RecordDiff, cells: dict[tuple[Step, str], RecordDiff]) -> str:
    if cfg is None:
        return ""
    levels = causal_chain(cfg, (focus.step, focus.name), set(cells))
    downstream = [k for lv in levels[1:] for k in lv]
    if not downstream:
        return ""
    diverged = [k for k in downstream if not cells[k]]
    cols = []
    for lv in levels:
        boxes = []
        for step, name in lv:
            r = cells[(step, name)]
            boxes.append(f'<a class="node {category(r)}" style="background:{cell_colour(r)}" '
                         f'href="#{esc(anchor(step, name))}"><b>{esc(name)}</b><br>{esc(step_label(step))}: '
                         f'{esc(status_text(r) + ratio_phrase(r))}</a>')
        cols.append(f'<div class="level">{"".join(boxes)}</div>')
    arrow = '<div class="arrow">&rarr;</div>'
    ends = [k for k in downstream if k[1] in key_records(cfg)]
    end_text = "; ".join(f"{step_label(s)} {n} {status_text(cells[(s, n)])}{ratio_phrase(cells[(s, n)])}"
                         for s, n in ends)
    return (f'<section id="chain"><h2>Causal chain from {esc(focus.where)}</h2>'
            f"<p>{len(downstream)} records are computed from it downstream; {len(diverged)} of them diverge. "
            f"{esc(end_text)}.</p><div class=\"chain\">{arrow.join(cols)}</div></section>")

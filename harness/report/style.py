"""The report's stylesheet, inline in the page (no request leaves it)."""

from __future__ import annotations

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.1em}
.verdict.agree{background:#e3f6e5;border:1px solid #6c6}
.verdict.drift{background:#fff3dc;border:1px solid #e90}
.verdict.diverged{background:#fde4e4;border:1px solid #d33}
.verdict.unsupported{background:#ececec;border:1px solid #888}
.diagnosis{padding:.5em 1em;border-left:4px solid #d33;background:#fafafa}
.scroll{overflow:auto;max-height:75vh}
table{border-collapse:collapse} td,th{padding:2px 6px;text-align:left;vertical-align:top}
table.grid td{width:18px;height:16px;padding:0;border:1px solid #fff;text-align:center;font-size:11px}
table.grid td a{display:block;color:#000;text-decoration:none;height:100%}
table.grid td.origin a{color:#fff;font-weight:bold}
table.grid th.rec{height:11em;vertical-align:bottom;padding:0}
table.grid th.rec span{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:11px}
table.grid tr.gap td{color:#888;font-style:italic}
table.grid th{font-size:11px;white-space:nowrap}
.key{padding:1px 6px;margin-right:6px;border-radius:3px;font-size:12px}
table.records td,table.manifests td,table.manifests th,table.worst td{border-bottom:1px solid #eee;font-size:12px}
table.records tr.origin td:nth-child(3){color:#b00;font-weight:bold}
table.records tr.propagated td:nth-child(3){color:#b60}
table.records tr:target{outline:3px solid #36c}
table.manifests tr.differs{background:#fff3b0}
.chain{display:flex;align-items:center;overflow-x:auto;gap:4px}
.level{display:flex;flex-direction:column;gap:4px}
.node{display:block;padding:3px 6px;border-radius:4px;font-size:11px;color:#000;text-decoration:none;white-space:nowrap}
.node.origin{color:#fff}
.arrow{font-size:20px;color:#888}
img{max-width:100%}
footer{margin-top:2em;color:#888;font-size:12px}
"""

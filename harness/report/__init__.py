"""What a comparison says: the text under the verdict and the HTML report."""

from harness.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]

"""thyro.report: the study report (self-contained HTML and a Markdown summary)."""

from thyro.report.build import build_report

__all__ = ["build_report"]

"""The equity report: Markdown, self-contained HTML with inline plots, and a results.json."""

from aetheris.report.build import ReportData, build_report

__all__ = ["ReportData", "build_report"]

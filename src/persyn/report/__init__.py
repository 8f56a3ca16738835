"""The run report: `page` writes report/index.html and the run's figures, `comparison` draws the
student comparison section, `figures` holds the drawing helpers both share (so neither imports the
other's privates).

    from persyn.report import ReportData, LedgerRow, write_report
"""

from __future__ import annotations

from persyn.util.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, {".page": ["LedgerRow", "ReportData", "headline", "write_report"]}
)

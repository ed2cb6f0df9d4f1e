"""Reports: honest tables (mean ± std with n, confidence intervals, tests against the best),
learning curves, overfitting diagnostics, and figures, for a study or a single run.

>>> from trainlab.analysis import collect_study, write_report
>>> from trainlab.experiments import open_store, resolve_storage_url
>>> data = collect_study(open_store(resolve_storage_url(None)), "lr-study")
>>> write_report(data, Path("reports/lr-study"), fmt="html").main

Modules: ``stats`` (summaries, Welch tests, Holm correction, Spearman), ``diagnostics``
(overfitting rules), ``plots`` (pure plot data + thin matplotlib drawing), ``gallery``
(most confident mistakes), ``tables`` (the results table), ``document`` (Markdown/HTML),
``collect`` (runs from the store and run folders), ``report`` (the report itself).
"""

from trainlab.analysis.collect import RunData, StudyData, collect_run, collect_study
from trainlab.analysis.report import ReportFiles, build_report, write_report
from trainlab.analysis.tables import ResultTable, build_table

__all__ = [
    "ReportFiles",
    "ResultTable",
    "RunData",
    "StudyData",
    "build_report",
    "build_table",
    "collect_run",
    "collect_study",
    "write_report",
]

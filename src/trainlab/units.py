"""How metric values are shown, in one place: shares (accuracy, balanced accuracy, macro F1)
in percent with two decimals, losses with four — in the terminal, the tables and the figures
alike. Files (CSV, JSON) keep the plain numbers."""

from __future__ import annotations


def is_fraction(metric: str) -> bool:
    """Whether ``metric`` (``val.accuracy``, ``test.macro_f1``, ``top5_accuracy``, ``val.loss``)
    is a share of images in [0, 1]: accuracies and F1 scores, not losses."""
    return metric.endswith(("accuracy", "f1"))


def decimals_and_percent(metric: str) -> tuple[int, bool]:
    """How ``metric`` is shown: two decimals in percent for a share, four for a loss."""
    return (2, True) if is_fraction(metric) else (4, False)


def format_metric(value: float, metric: str) -> str:
    """One value of ``metric``: ``97.12%`` for a share (as the papers print them), ``0.0912``
    for a loss."""
    digits, percent = decimals_and_percent(metric)
    return f"{100 * value:.{digits}f}%" if percent else f"{value:.{digits}f}"

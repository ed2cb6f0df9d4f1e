"""How metric values are shown, in one place: shares (accuracy, balanced accuracy, macro F1)
in percent with two decimals, losses with four — in the terminal, the tables and the figures
alike. Files (CSV, JSON) keep the plain numbers."""

from __future__ import annotations


def is_fraction(metric: str) -> bool:
    """Whether ``metric`` (``val.accuracy``, ``test.macro_f1``, ``top5_accuracy``, ``val.loss``)
    is a share of images in [0, 1]: accuracies and F1 scores, not losses."""
    return metric.endswith(("accuracy", "f1"))


def format_metric(value: float, metric: str) -> str:
    """One value of ``metric``: ``97.12%`` for a share (as the papers print them), ``0.0912``
    for a loss."""
    return f"{100 * value:.2f}%" if is_fraction(metric) else f"{value:.4f}"

"""What counts as an improvement of a monitored metric: one rule for the best epoch, early
stopping and reduce-on-plateau, so they can never disagree."""

from __future__ import annotations

import math
from typing import Literal


def is_improvement(
    value: float, best: float | None, mode: Literal["min", "max"], min_delta: float = 0.0
) -> bool:
    """True when ``value`` beats ``best`` by more than ``min_delta``; NaN/inf never improve."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta

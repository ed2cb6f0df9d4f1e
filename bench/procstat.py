"""CPU accounting shared by the benchmarks (Linux /proc; None elsewhere). Standard library only,
so the load generator stays a light process."""

from __future__ import annotations

import os
from pathlib import Path


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (Linux), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

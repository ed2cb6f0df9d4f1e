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


def own_seconds() -> float:
    """CPU seconds of this process and its finished children (the joined worker processes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def others_cores(busy: float | None, own: float, seconds: float) -> float:
    """Cores other processes kept busy over ``seconds`` since ``busy = machine_busy_seconds()``
    and ``own = own_seconds()`` were read: a benchmark taken beside other work measures little."""
    busy_after = machine_busy_seconds()
    if busy is None or busy_after is None or seconds <= 0:
        return 0.0
    return max(0.0, (busy_after - busy - (own_seconds() - own)) / seconds)

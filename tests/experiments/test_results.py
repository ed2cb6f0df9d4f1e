"""Counting a study's runs by state, as `trainlab studies` and the end of a sweep show them."""

from __future__ import annotations

from types import SimpleNamespace

from trainlab.experiments.results import count_states


def row(state: str, status: str, retried: bool = False) -> SimpleNamespace:
    return SimpleNamespace(state=state, status=status, retried=retried)


def test_interrupted_and_lost_runs_are_not_counted_as_failed():
    rows = [
        row("COMPLETE", "completed"),
        row("COMPLETE", "early_stopped"),
        row("PRUNED", "pruned"),
        row("RUNNING", "running"),
        row("WAITING", "waiting"),
        row("FAIL", "interrupted"),  # Ctrl-C: the same command resumes it
        row("FAIL", "lost"),  # its worker died and nobody has continued it yet
        row("FAIL", "lost", retried=True),  # a lost attempt whose retry continues it
        row("FAIL", "error"),
        row("FAIL", "diverged"),
    ]
    assert count_states(rows) == {"completed": 2, "pruned": 1, "running": 1, "waiting": 1,
                                  "interrupted": 2, "failed": 2, "retried": 1}  # fmt: skip

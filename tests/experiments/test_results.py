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


def ranked_row(number, lr, state="COMPLETE", value=None, retried=False) -> SimpleNamespace:
    return SimpleNamespace(number=number, overrides={"optim.lr": lr}, state=state, value=value,
                           retried=retried, run_dir=None, test={"accuracy": value})  # fmt: skip


def test_a_configuration_shows_how_many_of_its_runs_completed():
    from trainlab.cli_studies import mean_std
    from trainlab.experiments.results import rank_rows

    rows = [
        ranked_row(0, 0.1, value=0.95),  # one survivor of three: must not pass for n=3
        ranked_row(1, 0.1, "FAIL"),
        ranked_row(2, 0.1, "FAIL", retried=True),  # a lost attempt and ...
        ranked_row(3, 0.1, "RUNNING"),  # ... its retry count once
        ranked_row(4, 0.01, value=0.90),
        ranked_row(5, 0.01, value=0.92),
    ]
    spec = SimpleNamespace(direction="maximize")
    best, other = rank_rows(spec, rows)
    assert (best.overrides, best.n, best.planned) == ({"optim.lr": 0.1}, 1, 3)
    assert (other.n, other.planned) == (2, 2)
    assert mean_std("val.accuracy", best.mean, best.std, best.n, best.planned) == (
        "95.00% (n=1 of 3)"
    )
    assert mean_std("val.accuracy", other.mean, other.std, other.n, other.planned) == (
        "91.00 ± 1.41% (n=2)"
    )
    assert mean_std("val.loss", other.mean, other.std, other.n) == "0.9100 ± 0.0141 (n=2)"

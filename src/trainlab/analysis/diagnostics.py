"""Overfitting diagnostics: fixed, documented rules applied to a run's per-epoch history.

Every verdict comes from the rules in ``RULES`` (shown in the report's appendix) and every
finding quotes the numbers it was decided on, so a reader can check it against the curves.
A history is a list of rows as in ``history.csv`` (``epoch``, ``train_loss``,
``train_accuracy``, ``val_loss``, ``val_accuracy``, ...); None counts as a non-finite value,
because study storage writes NaN and inf as null.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal[
    "overfitting", "underfitting", "still improving", "good fit", "diverged", "too short"
]

MIN_EPOCHS = 3  # fewer usable epochs than this: "too short"
RISE_TOLERANCE = 0.02  # val loss counts as risen when above min × (1 + 2%) ...
RISE_FLOOR = 1e-3  # ... and above min + 0.001 (tiny losses would make 2% mere noise)
PATIENCE = 2  # the last 2 usable epochs must all be risen
UNDERFIT_LOSS_RATIO = 0.5  # final train loss above half the first epoch's: training stalled
UNDERFIT_ACCURACY_MARGIN = 0.01  # ... and train accuracy less than 1 point above val accuracy
FLAT_LOSS_RATIO = 0.9  # an underfitting run whose train loss fell less than 10%: maybe stuck
DISAGREE_SPREAD = 0.2  # seeds whose best val accuracies span over 20 points: the mean misleads
LARGE_GAP = 0.05  # a train − val accuracy gap above 5 points is pointed out in the finding

MEAN_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")

RULES = f"""\
The diagnostics apply fixed rules to the per-epoch history (for a configuration: to the mean
curve over its seeds). Train loss and accuracy are averaged over each epoch while the model
trains, with augmentation and dropout active; validation is measured after the epoch. Under
heavy augmentation train accuracy below val accuracy is therefore normal on its own.

- **Usable epoch**: an epoch whose train loss and val loss are both finite numbers. Epochs
  without a validation result are skipped; "consecutive" means consecutive usable epochs.
- **Best epoch**: the usable epoch with the lowest val loss (the first one on ties).
- **Gaps** (at the last usable epoch): loss gap = val loss − train loss, accuracy gap =
  train accuracy − val accuracy. With label smoothing ε > 0 (the default is 0.1) the train loss
  is taken against smoothed targets and cannot fall below a floor (about 0.5 for ε = 0.1 over
  10 classes), while val loss is plain cross-entropy: the loss gap is then biased low, negative
  by design, and the report marks it. No verdict below uses the loss gap; compare it only
  between runs with the same smoothing, and read the accuracy gap for over- or underfitting.
- **Early stopped**: the run's status is `early_stopped`.
- **Still improving**: the best epoch is the last usable epoch (and there are at least two), so
  more epochs may help.
- **Overfitting onset**: the best epoch *m*, provided the run has at least {PATIENCE} usable
  epochs after *m*, the last {PATIENCE} of them all have val loss above
  max(min × (1 + {RISE_TOLERANCE:.0%}), min + {RISE_FLOOR:g}), and the train loss at the last
  usable epoch is lower than at *m* (val loss rises while train loss keeps falling).

The verdict is the first rule that holds, in this order:

1. **diverged**: the status is `diverged`, or some epoch's train loss is not finite.
2. **too short**: fewer than {MIN_EPOCHS} usable epochs.
3. **overfitting**: an overfitting onset exists.
4. **still improving**: as defined above (checked before underfitting: while val loss is still
   falling, the first advice is to train longer). If early stopping ended the run anyway (it
   watched another metric, or a min_delta), the finding says how to let it go on.
5. **underfitting**: val loss has stopped falling, yet the final train loss is still above
   {UNDERFIT_LOSS_RATIO:g} × the first epoch's train loss (training did not even halve it)
   *and* train accuracy is not more than {UNDERFIT_ACCURACY_MARGIN * 100:g} point above val
   accuracy (no generalisation gap: the model does not fit its training data better than
   unseen data; with augmentation on, train accuracy below val accuracy is normal). When the
   train loss fell by less than {1 - FLAT_LOSS_RATIO:.0%}, the finding adds that at chance-level
   accuracy the learning rate may be too high as well as too low (the history alone cannot tell
   a run stuck at chance from one that learned all it could in its first epoch). Under label
   smoothing the smoothed train loss has a floor, so "did not halve" can also mean it reached
   that floor: the accuracy condition is then what the verdict rests on.
6. **good fit**: none of the above. If val loss did rise without train loss falling, the finding
   says so (more likely an unstable learning rate than overfitting); an accuracy gap above
   {LARGE_GAP * 100:g} points is pointed out too.

Several seeds: the rules run on the per-epoch mean over the seeds, over the epochs that every
run reached (so each point averages the same runs); an epoch where any run has a non-finite
value has a non-finite mean. Diverged if any run diverged, early stopped if any run stopped
early. When the seeds' best val accuracies span more than {DISAGREE_SPREAD * 100:g} points (some
seeds learned, others did not), the finding says so: the mean curve then describes none of them.
"""


@dataclass(frozen=True)
class Diagnosis:
    """What the rules say about one run (or the mean curve of a configuration)."""

    epochs: int  # history rows (epochs run)
    best_val_loss_epoch: int | None  # epoch (1-based, as in history) with the lowest val loss
    overfit_onset: int | None  # the best epoch, when the overfitting rule holds
    gap_loss: float | None  # val_loss - train_loss at the last usable epoch
    gap_accuracy: float | None  # train_accuracy - val_accuracy at the last usable epoch
    early_stopped: bool
    still_improving: bool  # val loss reached its minimum in the last epoch (more may help)
    verdict: Verdict
    finding: str  # one plain-language sentence with the numbers behind the verdict


@dataclass(frozen=True)
class UsableEpoch:
    """A usable history row: train and val loss are finite."""

    epoch: int
    train_loss: float
    val_loss: float
    train_accuracy: float | None
    val_accuracy: float | None


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _epoch_number(row: Mapping[str, Any], index: int) -> int:
    number = _finite(row.get("epoch"))
    return int(number) if number is not None else index + 1


def usable_epochs(history: Sequence[Mapping[str, Any]]) -> list[UsableEpoch]:
    """The rows with a finite train and val loss, in order."""
    epochs = []
    for index, row in enumerate(history):
        train_loss, val_loss = _finite(row.get("train_loss")), _finite(row.get("val_loss"))
        if train_loss is not None and val_loss is not None:
            accuracies = _finite(row.get("train_accuracy")), _finite(row.get("val_accuracy"))
            epochs.append(UsableEpoch(_epoch_number(row, index), train_loss, val_loss, *accuracies))
    return epochs


def diverged_epoch(history: Sequence[Mapping[str, Any]]) -> int | None:
    """The first epoch whose train loss is recorded but not finite (NaN, inf or null)."""
    for index, row in enumerate(history):
        if "train_loss" in row and _finite(row["train_loss"]) is None:
            return _epoch_number(row, index)
    return None


def overfit_onset(epochs: Sequence[UsableEpoch]) -> int | None:
    """The best epoch if val loss then stays risen for the last PATIENCE epochs while train
    loss ends lower than at the best epoch (see ``RULES``); otherwise None."""
    if not epochs:
        return None
    best_index = _best_index(epochs)
    best, last = epochs[best_index], epochs[-1]
    if len(epochs) - best_index - 1 < PATIENCE:
        return None
    risen = all(e.val_loss > rise_threshold(best.val_loss) for e in epochs[-PATIENCE:])
    return best.epoch if risen and last.train_loss < best.train_loss else None


def rise_threshold(min_val_loss: float) -> float:
    """Val loss above this counts as risen from its minimum."""
    return min_val_loss + max(RISE_TOLERANCE * abs(min_val_loss), RISE_FLOOR)


def _best_index(epochs: Sequence[UsableEpoch]) -> int:
    return min(range(len(epochs)), key=lambda i: epochs[i].val_loss)  # first on ties


def _accuracy_gap(epoch: UsableEpoch) -> float | None:
    if epoch.train_accuracy is None or epoch.val_accuracy is None:
        return None
    return epoch.train_accuracy - epoch.val_accuracy


def is_underfitting(history: Sequence[Mapping[str, Any]], epochs: Sequence[UsableEpoch]) -> bool:
    """Train loss not even halved since the first epoch and no train − val accuracy gap."""
    first = first_train_loss(history)
    gap = _accuracy_gap(epochs[-1]) if epochs else None
    if first is None or gap is None:
        return False
    stalled = epochs[-1].train_loss > UNDERFIT_LOSS_RATIO * first[1]
    return stalled and round(gap, 9) < UNDERFIT_ACCURACY_MARGIN


def first_train_loss(history: Sequence[Mapping[str, Any]]) -> tuple[int, float] | None:
    """The first epoch with a finite train loss, and that loss."""
    for index, row in enumerate(history):
        loss = _finite(row.get("train_loss"))
        if loss is not None:
            return _epoch_number(row, index), loss
    return None


def diagnose(
    history: Sequence[Mapping[str, Any]],
    *,
    status: str | None = None,
    stop_reason: str | None = None,
) -> Diagnosis:
    """Apply the rules in ``RULES`` to one run's history (rows as in ``history.csv``).

    ``status`` and ``stop_reason`` come from ``summary.json``: ``early_stopped`` and
    ``diverged`` are taken from the status, the reason is quoted for a diverged run.
    """
    return _diagnose(history, status, stop_reason, runs=1)


def _diagnose(
    history: Sequence[Mapping[str, Any]], status: str | None, stop_reason: str | None, runs: int
) -> Diagnosis:
    """``diagnose`` for one run, or for the mean curve of ``runs`` runs (wording only)."""
    epochs = usable_epochs(history)
    best = epochs[_best_index(epochs)] if epochs else None
    last = epochs[-1] if epochs else None
    broke_at = diverged_epoch(history)
    diverged = status == "diverged" or broke_at is not None
    facts = _Facts(
        runs=runs,
        last_epoch=_epoch_number(history[-1], len(history) - 1) if history else 0,
        epochs=epochs,
        best=best,
        onset=overfit_onset(epochs),
        early_stopped=status == "early_stopped",
        still_improving=not diverged and len(epochs) >= 2 and best is last,
    )
    verdict = _verdict(facts, diverged, is_underfitting(history, epochs))
    return Diagnosis(
        epochs=len(history),
        best_val_loss_epoch=best.epoch if best else None,
        overfit_onset=facts.onset,
        gap_loss=last.val_loss - last.train_loss if last else None,
        gap_accuracy=_accuracy_gap(last) if last else None,
        early_stopped=facts.early_stopped,
        still_improving=facts.still_improving,
        verdict=verdict,
        finding=_finding(verdict, facts, history, broke_at, stop_reason if diverged else None),
    )


@dataclass(frozen=True)
class _Facts:
    """What the verdict and the finding are decided on."""

    runs: int  # 1, or the number of runs behind a mean curve
    last_epoch: int
    epochs: Sequence[UsableEpoch]
    best: UsableEpoch | None
    onset: int | None
    early_stopped: bool
    still_improving: bool


def _verdict(facts: _Facts, diverged: bool, underfitting: bool) -> Verdict:
    if diverged:
        return "diverged"
    if len(facts.epochs) < MIN_EPOCHS:
        return "too short"
    if facts.onset is not None:
        return "overfitting"
    if facts.still_improving:  # first advice while val loss still falls: train longer
        return "still improving"
    return "underfitting" if underfitting else "good fit"


# ----------------------------------------------------------------------------- findings


def _num(value: float) -> str:
    return f"{value:.3g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _points(value: float) -> str:
    return f"{100 * value:.1f} points"


def _finding(
    verdict: Verdict,
    facts: _Facts,
    history: Sequence[Mapping[str, Any]],
    broke_at: int | None,
    reason: str | None,
) -> str:
    if verdict == "diverged":
        return _diverged_finding(facts, broke_at, reason)
    if verdict == "too short":
        return _too_short_finding(facts)
    if verdict == "overfitting":
        return _overfitting_finding(facts)
    if verdict == "underfitting":
        return _underfitting_finding(facts, first_train_loss(history) or (0, math.nan))
    if verdict == "still improving":
        return _still_improving_finding(facts)
    return _good_fit_finding(facts)


def _early_stop_clause(facts: _Facts) -> str:
    return f"; {_early_stop_text(facts)}" if facts.early_stopped else ""


def _early_stop_text(facts: _Facts) -> str:
    if facts.runs > 1:
        return "early stopping ended at least one of the runs"
    return f"early stopping ended the run at epoch {facts.last_epoch}"


def _accuracy_gap_above(gap: float | None, threshold: float) -> bool:
    """Compared at 1e-9 resolution: a 0.95 − 0.90 gap is 5 points, not 5.0000000000000044."""
    return gap is not None and round(gap, 9) > threshold


def _gap_clause(facts: _Facts) -> str:
    gap = _accuracy_gap(facts.epochs[-1])
    if gap is None or not _accuracy_gap_above(gap, LARGE_GAP):
        return ""
    return (
        f"; the train − val accuracy gap is large ({_points(gap)}), "
        "so more data or regularisation may help"
    )


def _diverged_finding(facts: _Facts, broke_at: int | None, reason: str | None) -> str:
    where = f" at epoch {broke_at}" if broke_at is not None else ""
    if facts.runs > 1:
        where += " in at least one run"
    why = f" ({reason})" if reason else ""
    kept = ""
    if facts.best is not None:
        best = facts.best
        kept = f"; the lowest finite val loss was {_num(best.val_loss)} at epoch {best.epoch}"
    return (
        f"train loss stopped being finite{where}{why}: diverged; lower the learning rate, "
        f"add warmup or gradient clipping{kept}."
    )


def _too_short_finding(facts: _Facts) -> str:
    count = len(facts.epochs)
    seen = ""
    if facts.epochs:
        last = facts.epochs[-1]
        seen = f" (val loss {_num(last.val_loss)} at epoch {last.epoch})"
    return (
        f"only {count} epoch{'' if count == 1 else 's'} with a finite train and val loss{seen}, "
        f"at least {MIN_EPOCHS} are needed to judge the fit: too short; train for more epochs."
    )


def _overfitting_finding(facts: _Facts) -> str:
    best, last = facts.best, facts.epochs[-1]
    assert best is not None
    stop = (
        _early_stop_text(facts)
        if facts.early_stopped
        else f"early stopping would have ended the run soon after epoch {best.epoch}; the "
        "weights kept are the best epoch's by the monitored metric either way"
    )
    return (
        f"val loss bottoms out at epoch {best.epoch} ({_num(best.val_loss)}) and rises to "
        f"{_num(last.val_loss)} by epoch {last.epoch} while train loss keeps falling to "
        f"{_num(last.train_loss)}: overfitting; try stronger augmentation, more regularisation "
        f"or fewer epochs ({stop})."
    )


def _underfitting_finding(facts: _Facts, first: tuple[int, float]) -> str:
    last = facts.epochs[-1]
    assert last.train_accuracy is not None and last.val_accuracy is not None
    first_epoch, first_loss = first
    more = "; val loss is still falling, so train longer first" if facts.still_improving else ""
    advice = "try a larger model, a higher learning rate, less regularisation or more epochs"
    if last.train_loss > FLAT_LOSS_RATIO * first_loss:
        # A loss that never moves is as often a learning rate too high for the optimizer (the
        # units die in the first steps, e.g. Adam at 1e-2) as one too low.
        advice = ("the train loss barely moved: if accuracy is near chance the model is not "
                  "learning, and the learning rate may be too high (units die in the first "
                  "steps) as well as too low — try it 10× lower and 10× higher; otherwise try a "
                  "larger model, less regularisation or more epochs")  # fmt: skip
    return (
        f"train loss only falls from {_num(first_loss)} at epoch {first_epoch} to "
        f"{_num(last.train_loss)} at epoch {last.epoch} and train accuracy "
        f"({_pct(last.train_accuracy)}) is not more than {UNDERFIT_ACCURACY_MARGIN * 100:g} point "
        f"above val accuracy ({_pct(last.val_accuracy)}): underfitting; {advice}{more}"
        f"{_early_stop_clause(facts)}."
    )


def _still_improving_finding(facts: _Facts) -> str:
    first, last = facts.epochs[0], facts.epochs[-1]
    return (
        f"val loss is still falling at the last epoch ({_num(last.val_loss)} at epoch "
        f"{last.epoch}, down from {_num(first.val_loss)} at epoch {first.epoch}): still "
        f"improving; more epochs will likely help{_gap_clause(facts)}"
        f"{_stopped_while_improving_clause(facts)}."
    )


def _stopped_while_improving_clause(facts: _Facts) -> str:
    """Early stopping and a falling val loss look contradictory; say why they are not, and what
    to change, since "more epochs" alone would be stopped at the same place again."""
    if not facts.early_stopped:
        return ""
    let_it_go_on = "to let it go on, raise early_stopping.patience or lower its min_delta"
    if facts.runs > 1:  # the mean curve may still fall although the run that stopped had not
        return f"; {_early_stop_text(facts)}: {let_it_go_on}"
    return (
        f"; {_early_stop_text(facts)} although val loss was still falling (it watches another "
        f"metric, or needs gains above its min_delta): {let_it_go_on}, or watch val.loss "
        "(monitor; a study's --metric)"
    )


def _good_fit_finding(facts: _Facts) -> str:
    best, last = facts.best, facts.epochs[-1]
    assert best is not None
    if all(e.val_loss > rise_threshold(best.val_loss) for e in facts.epochs[-PATIENCE:]):
        return (
            f"val loss rises from {_num(best.val_loss)} at epoch {best.epoch} to "
            f"{_num(last.val_loss)} at epoch {last.epoch} but train loss does not fall "
            f"meanwhile ({_num(best.train_loss)} → {_num(last.train_loss)}), so this is not "
            f"overfitting: good fit by the rules; an unstable learning rate is more likely"
            f"{_early_stop_clause(facts)}."
        )
    gap = _accuracy_gap(last)
    gap_text = f" and {_points(gap)} in accuracy" if gap is not None else ""
    return (
        f"val loss levels off (lowest {_num(best.val_loss)} at epoch {best.epoch}, "
        f"{_num(last.val_loss)} at epoch {last.epoch}) with a final gap of "
        f"{_num(last.val_loss - last.train_loss)} in loss{gap_text}: good fit"
        f"{_gap_clause(facts)}{_early_stop_clause(facts)}."
    )


# ----------------------------------------------------------------------------- several seeds


def mean_history(histories: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
    """Per-epoch mean over runs, over the epochs every run reached (so every point averages the
    same runs). A value that is missing or not finite in any run makes that mean NaN."""
    runs = [list(history) for history in histories]
    if not runs or any(not run for run in runs):
        return []
    by_epoch = [{_epoch_number(row, i): row for i, row in enumerate(run)} for run in runs]
    common = sorted(set.intersection(*(set(rows) for rows in by_epoch)))
    mean = []
    for epoch in common:
        row = {key: _mean_or_nan([rows[epoch].get(key) for rows in by_epoch]) for key in MEAN_KEYS}
        mean.append({"epoch": float(epoch), **row})
    return mean


def _mean_or_nan(values: Sequence[Any]) -> float:
    finite = [v for v in map(_finite, values) if v is not None]
    if len(finite) < len(values):
        return math.nan
    return math.fsum(finite) / len(finite)


def diagnose_mean(
    histories: Sequence[Sequence[Mapping[str, Any]]],
    *,
    early_stopped: bool = False,
    diverged: bool = False,
) -> Diagnosis:
    """The rules applied to the mean curve over seeds (see ``mean_history``).

    ``early_stopped``/``diverged``: whether any of the runs stopped early or diverged (from their
    statuses). A run whose history shows a non-finite train loss counts as diverged anyway.
    The finding says how many runs, and up to which epoch, the mean covers.
    """
    mean = mean_history(histories)
    status = "diverged" if diverged else "early_stopped" if early_stopped else None
    runs = len(histories)
    found = _diagnose(mean, status, None, runs=max(runs, 1))
    if runs <= 1:
        return found
    longest = max(len(history) for history in histories)
    upto = ""
    if mean and len(mean) < longest:
        upto = f", up to epoch {int(mean[-1]['epoch'])}, the last that all reached"
    finding = f"mean of {runs} runs{upto}: {found.finding}{_disagreement(histories)}"
    return dataclasses.replace(found, finding=finding)


def _disagreement(histories: Sequence[Sequence[Mapping[str, Any]]]) -> str:
    """A sentence when the seeds' best val accuracies are too far apart for a mean to speak
    for them (one seed at 99%, another stuck at chance)."""
    bests = []
    for history in histories:
        accuracies = [
            v for v in (_finite(row.get("val_accuracy")) for row in history) if v is not None
        ]
        if accuracies:
            bests.append(max(accuracies))
    if len(bests) < 2 or max(bests) - min(bests) <= DISAGREE_SPREAD:
        return ""
    return (
        f" The runs disagree: their best val accuracies range from {_pct(min(bests))} to "
        f"{_pct(max(bests))}, so this mean describes none of them; read each run's curve."
    )

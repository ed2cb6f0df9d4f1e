"""The overfitting rules on synthetic histories with known answers."""

from __future__ import annotations

import math

import pytest

from trainlab.analysis import diagnostics
from trainlab.analysis.diagnostics import RULES, diagnose, diagnose_mean, mean_history
from trainlab.runs.record import history_to_csv, read_history

NAN = math.nan


def history(train_loss, val_loss, train_acc=None, val_acc=None):
    """Rows as in history.csv; accuracies default to a healthy 3-point gap."""
    n = len(train_loss)
    train_acc = train_acc or [0.90] * n
    val_acc = val_acc or [0.87] * n
    return [
        {
            "epoch": epoch,
            "train_loss": train_loss[epoch - 1],
            "train_accuracy": train_acc[epoch - 1],
            "val_loss": val_loss[epoch - 1],
            "val_accuracy": val_acc[epoch - 1],
            "val_balanced_accuracy": val_acc[epoch - 1],
            "val_macro_f1": val_acc[epoch - 1],
            "lr": 0.1,
            "seconds": 1.0,
            "elapsed": float(epoch),
        }
        for epoch in range(1, n + 1)
    ]


# 20 epochs: val loss bottoms out at epoch 7 (0.081), train loss falls to 0.012.
OVERFIT_TRAIN = [0.9, 0.5, 0.3, 0.2, 0.15, 0.12, 0.1, 0.09, 0.08, 0.07,
                 0.06, 0.05, 0.045, 0.04, 0.035, 0.03, 0.025, 0.02, 0.015, 0.012]  # fmt: skip
OVERFIT_VAL = [0.8, 0.4, 0.25, 0.15, 0.11, 0.09, 0.081, 0.083, 0.085, 0.088,
               0.09, 0.093, 0.095, 0.1, 0.1, 0.105, 0.11, 0.11, 0.115, 0.12]  # fmt: skip
OVERFIT = history(OVERFIT_TRAIN, OVERFIT_VAL, [0.7 + 0.015 * i for i in range(20)], [0.97] * 20)


def test_overfitting_onset_gaps_and_finding():
    found = diagnose(OVERFIT)
    assert found.verdict == "overfitting"
    assert (found.epochs, found.best_val_loss_epoch, found.overfit_onset) == (20, 7, 7)
    assert found.gap_loss == pytest.approx(0.12 - 0.012)
    assert found.gap_accuracy == pytest.approx(0.7 + 0.015 * 19 - 0.97)
    assert not found.early_stopped and not found.still_improving
    assert found.finding == (
        "val loss bottoms out at epoch 7 (0.081) and rises to 0.12 by epoch 20 while train loss "
        "keeps falling to 0.012: overfitting; try stronger augmentation, more regularisation or "
        "fewer epochs (early stopping would have ended the run soon after epoch 7; the weights "
        "kept are the best epoch's by the monitored metric either way)."
    )


def test_overfitting_with_early_stopping_says_so():
    # Early stopping with patience 5 ends the same run at epoch 12.
    found = diagnose(OVERFIT[:12], status="early_stopped", stop_reason="val.loss did not improve")
    assert found.verdict == "overfitting" and found.overfit_onset == 7
    assert found.early_stopped and found.epochs == 12
    assert "rises to 0.093 by epoch 12" in found.finding
    assert "(early stopping ended the run at epoch 12)" in found.finding


def test_onset_needs_patience_epochs_risen_at_the_end():
    # Only the last epoch is above the 2% band: one risen epoch is not enough (patience 2).
    val = [1.0, 0.6, 0.5, 0.505, 0.508, 0.6]
    one = diagnose(history([1.0, 0.6, 0.4, 0.3, 0.25, 0.2], val))
    assert one.overfit_onset is None and one.verdict == "good fit"
    # Two risen epochs at the end: overfitting from the minimum (epoch 3).
    val = [1.0, 0.6, 0.5, 0.505, 0.52, 0.6]
    two = diagnose(history([1.0, 0.6, 0.4, 0.3, 0.25, 0.2], val))
    assert two.overfit_onset == 3 and two.verdict == "overfitting"


def test_a_bump_that_comes_back_is_not_overfitting():
    val = [1.0, 0.6, 0.5, 0.6, 0.65, 0.505, 0.506]  # back within 2% of the minimum
    found = diagnose(history([1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.18], val))
    assert found.overfit_onset is None
    assert found.verdict == "good fit"
    assert found.finding.startswith("val loss levels off (lowest 0.5 at epoch 3, 0.506 at epoch 7)")


def test_rise_tolerance_relative_and_absolute_floor():
    assert diagnostics.rise_threshold(0.5) == pytest.approx(0.51)  # 2% of 0.5
    assert diagnostics.rise_threshold(0.01) == pytest.approx(0.011)  # floor 0.001 > 2% of 0.01
    # Tiny losses: 0.0105 is 5% above 0.01 but within the 0.001 floor, so not risen.
    found = diagnose(history([0.5, 0.1, 0.05, 0.02, 0.01], [0.2, 0.05, 0.01, 0.0105, 0.0108]))
    assert found.overfit_onset is None


def test_val_rise_without_falling_train_loss_is_not_overfitting():
    found = diagnose(history([1.0, 0.5, 0.5, 0.55], [1.0, 0.5, 0.6, 0.65]))
    assert found.overfit_onset is None and found.verdict == "good fit"
    assert "train loss does not fall meanwhile (0.5 → 0.55)" in found.finding
    assert "unstable learning rate" in found.finding


def test_underfitting():
    train = [2.3, 2.0, 1.9, 1.85, 1.84, 1.84]
    val = [2.1, 1.95, 1.9, 1.89, 1.885, 1.886]
    acc_train = [0.25, 0.33, 0.35, 0.36, 0.365, 0.37]
    acc_val = [0.33, 0.36, 0.37, 0.375, 0.38, 0.38]
    found = diagnose(history(train, val, acc_train, acc_val))
    assert found.verdict == "underfitting" and found.overfit_onset is None
    assert found.best_val_loss_epoch == 5 and not found.still_improving
    assert found.gap_accuracy == pytest.approx(-0.01)
    assert found.finding == (
        "train loss only falls from 2.3 at epoch 1 to 1.84 at epoch 6 and train accuracy (37.0%) "
        "is not more than 1 point above val accuracy (38.0%): underfitting; try a larger model, a "
        "higher learning rate, less regularisation or more epochs."
    )


def test_a_flat_train_loss_is_not_learning_and_the_lr_may_be_too_high():
    # Adam at 1e-2 on MNIST in some seeds: stuck at chance from the first epoch on.
    train = [2.31, 2.302, 2.302, 2.301, 2.302]
    val = [2.303, 2.301, 2.302, 2.302, 2.303]
    found = diagnose(history(train, val, [0.11] * 5, [0.113] * 5), status="early_stopped")
    assert found.verdict == "underfitting"
    assert (
        "if accuracy is near chance the model is not learning, and the learning rate may be "
        "too high"
    ) in found.finding
    assert "10× lower and 10× higher" in found.finding


def test_a_flat_loss_is_not_declared_stuck_as_a_plateau_may_look_the_same():
    # Learned everything in epoch 1, then sits at label smoothing's loss floor: train accuracy
    # under augmentation trails val accuracy, so the underfitting rule holds, but it learned.
    # The history cannot tell this from a run stuck at chance: the advice is conditional.
    train = [0.58, 0.56, 0.555, 0.55, 0.55]
    val = [0.54, 0.53, 0.531, 0.532, 0.533]
    found = diagnose(history(train, val, [0.96] * 5, [0.975, 0.979, 0.98, 0.98, 0.98]))
    assert found.verdict == "underfitting"
    assert "not learning at all" not in found.finding
    assert "if accuracy is near chance" in found.finding and "larger model" in found.finding


def test_still_falling_comes_before_underfitting():
    # Under augmentation train accuracy trails val accuracy; while val loss still falls the
    # verdict is "train longer", not "underfitting".
    found = diagnose(history([2.3, 2.0, 1.8], [2.1, 1.9, 1.7], [0.3, 0.35, 0.4], [0.35, 0.4, 0.42]))
    assert found.verdict == "still improving" and found.still_improving


def test_underfitting_needs_both_conditions():
    # Train loss did not halve, but train accuracy is 5 points above val: a gap, not underfitting.
    gap = diagnose(history([1.0, 0.8, 0.7, 0.6], [1.0, 0.8, 0.7, 0.6], [0.8] * 4, [0.75] * 4))
    assert gap.verdict == "still improving"
    # Exactly 1 point above val accuracy is not "less than 1 point": no underfitting either.
    edge = diagnose(history([1.0, 0.8, 0.7, 0.6], [1.0, 0.8, 0.7, 0.6], [0.81] * 4, [0.8] * 4))
    assert edge.verdict == "still improving"
    # Train loss more than halved: the model fits its data, whatever the accuracies.
    fits = diagnose(history([1.0, 0.5, 0.45, 0.4], [1.0, 0.8, 0.7, 0.6], [0.8] * 4, [0.85] * 4))
    assert fits.verdict == "still improving"


def test_still_improving():
    found = diagnose(history([1.0, 0.6, 0.4, 0.3], [0.9, 0.6, 0.5, 0.45]))
    assert found.verdict == "still improving" and found.still_improving
    assert found.best_val_loss_epoch == 4 and found.overfit_onset is None
    assert found.finding == (
        "val loss is still falling at the last epoch (0.45 at epoch 4, down from 0.9 at "
        "epoch 1): still improving; more epochs will likely help."
    )


def test_early_stopped_while_val_loss_still_falls_says_how_to_go_on():
    # Early stopping on val.accuracy can end a run whose val loss still falls: the advice to
    # train longer must say how, or the next run stops at the same place.
    found = diagnose(history([1.0, 0.6, 0.4, 0.3], [0.9, 0.6, 0.5, 0.45]), status="early_stopped")
    assert found.verdict == "still improving" and found.early_stopped
    assert found.finding.endswith(
        "more epochs will likely help; early stopping ended the run at epoch 4 although val loss "
        "was still falling (it watches another metric, or needs gains above its min_delta): to "
        "let it go on, raise early_stopping.patience or lower its min_delta, or watch val.loss "
        "(monitor; a study's --metric)."
    )
    # Over seeds the mean may still fall while the run that stopped had levelled off: no
    # claim about why it stopped, only how to train longer.
    levelled, falling = (
        history([1.0, 0.6, 0.4], [0.9, 0.6, 0.6]),
        history([1, 0.6, 0.4], [0.9, 0.6, 0.4]),
    )
    mean = diagnose_mean([levelled, falling, falling], early_stopped=True)
    assert mean.verdict == "still improving"
    assert mean.finding.endswith(
        "early stopping ended at least one of the runs: to let it go on, raise "
        "early_stopping.patience or lower its min_delta."
    )


def test_a_tie_with_the_minimum_is_a_plateau_not_still_improving():
    found = diagnose(history([1.0, 0.6, 0.4, 0.3], [0.9, 0.6, 0.5, 0.5]))
    assert found.best_val_loss_epoch == 3 and not found.still_improving
    assert found.verdict == "good fit"


def test_good_fit_and_large_gap_note():
    found = diagnose(history([1.0, 0.5, 0.3, 0.25], [1.0, 0.5, 0.4, 0.405]))
    assert found.verdict == "good fit" and found.gap_loss == pytest.approx(0.155)
    assert found.finding == (
        "val loss levels off (lowest 0.4 at epoch 3, 0.405 at epoch 4) with a final gap of 0.155 "
        "in loss and 3.0 points in accuracy: good fit."
    )
    wide = diagnose(history([1.0, 0.5, 0.3, 0.25], [1.0, 0.5, 0.4, 0.405], [0.99] * 4, [0.8] * 4))
    assert wide.verdict == "good fit"
    assert "the train − val accuracy gap is large (19.0 points)" in wide.finding
    # Exactly 5 points is not "above 5 points" (floating point must not decide it).
    edge = diagnose(history([1.0, 0.5, 0.3, 0.25], [1.0, 0.5, 0.4, 0.405], [0.95] * 4, [0.9] * 4))
    assert "large" not in edge.finding


def test_diverged_by_nan_train_loss():
    rows = history([1.0, 0.5, 0.4, NAN], [0.9, 0.5, 0.45, NAN])
    found = diagnose(rows, status="diverged", stop_reason="loss became nan at step 1234")
    assert found.verdict == "diverged" and not found.still_improving
    assert found.best_val_loss_epoch == 3 and found.epochs == 4
    assert found.gap_loss == pytest.approx(0.05)  # at the last usable epoch (3)
    assert found.finding == (
        "train loss stopped being finite at epoch 4 (loss became nan at step 1234): diverged; "
        "lower the learning rate, add warmup or gradient clipping; the lowest finite val loss "
        "was 0.45 at epoch 3."
    )


def test_diverged_without_status_and_with_null_values():
    # Study storage writes NaN as null: a None train loss is a non-finite one.
    rows = history([1.0, 0.5, 0.4, 0.3], [0.9, 0.5, 0.45, 0.4])
    rows[3] = {**rows[3], "train_loss": None, "val_loss": None}
    found = diagnose(rows)
    assert found.verdict == "diverged" and "at epoch 4:" in found.finding
    # The status alone is enough; the reason is quoted.
    by_status = diagnose(OVERFIT[:5], status="diverged", stop_reason="loss became inf at step 9")
    assert by_status.verdict == "diverged" and "(loss became inf at step 9)" in by_status.finding
    # Diverged beats overfitting; the onset is still reported.
    late = diagnose([*OVERFIT, {**OVERFIT[-1], "epoch": 21, "train_loss": math.inf}])
    assert late.verdict == "diverged" and late.overfit_onset == 7


def test_too_short():
    found = diagnose(history([1.0, 0.5], [0.9, 0.41]))
    assert found.verdict == "too short" and found.epochs == 2
    assert found.best_val_loss_epoch == 2 and found.still_improving
    assert found.finding == (
        "only 2 epochs with a finite train and val loss (val loss 0.41 at epoch 2), at least 3 "
        "are needed to judge the fit: too short; train for more epochs."
    )
    empty = diagnose([])
    assert (empty.verdict, empty.epochs, empty.best_val_loss_epoch) == ("too short", 0, None)
    assert (empty.gap_loss, empty.gap_accuracy) == (None, None)
    assert empty.finding.startswith("only 0 epochs")


def test_nan_validation_rows_are_skipped():
    rows = [dict(row) for row in OVERFIT]
    for index in (2, 8, 9):  # epochs 3, 9, 10 without validation results
        rows[index].update(val_loss=NAN, val_accuracy=NAN)
    found = diagnose(rows)
    assert found.verdict == "overfitting" and found.overfit_onset == 7
    assert found.epochs == 20 and found.best_val_loss_epoch == 7
    # NaN at the very end: the gaps and the last-epoch rules use the last usable epoch.
    rows[-1].update(val_loss=NAN, val_accuracy=NAN)
    tail = diagnose(rows)
    assert tail.overfit_onset == 7
    assert tail.gap_loss == pytest.approx(0.115 - 0.015)
    assert "rises to 0.115 by epoch 19" in tail.finding
    # Too few usable epochs left: too short, not a crash.
    sparse = history([1.0, 0.5, 0.4, 0.3], [0.9, NAN, NAN, 0.4])
    assert diagnose(sparse).verdict == "too short"


def test_history_read_back_from_csv(tmp_path):
    (tmp_path / "history.csv").write_text(history_to_csv(OVERFIT), encoding="utf-8")
    rows = read_history(tmp_path)  # every value a float, epoch included
    assert isinstance(rows[0]["epoch"], float)
    found = diagnose(rows)
    assert (found.verdict, found.overfit_onset, found.best_val_loss_epoch) == ("overfitting", 7, 7)


def test_early_stopped_good_fit_mentions_it():
    found = diagnose(history([1.0, 0.5, 0.3, 0.25], [1.0, 0.5, 0.4, 0.405]), status="early_stopped")
    assert found.early_stopped and found.verdict == "good fit"
    assert found.finding.endswith("; early stopping ended the run at epoch 4.")


# ----------------------------------------------------------------------------- several seeds


def test_mean_history_over_common_epochs():
    a = history([1.0, 0.6, 0.4], [0.9, 0.5, 0.45])
    b = history([0.8, 0.4], [0.7, 0.3])
    mean = mean_history([a, b])
    assert [row["epoch"] for row in mean] == [1.0, 2.0]
    assert mean[1]["train_loss"] == pytest.approx(0.5)
    assert mean[1]["val_loss"] == pytest.approx(0.4)
    assert mean[0]["val_accuracy"] == pytest.approx(0.87)
    b[0]["val_loss"] = NAN  # a missing value in one run: that epoch's mean is missing
    assert math.isnan(mean_history([a, b])[0]["val_loss"])
    assert mean_history([]) == [] and mean_history([a, []]) == []


def test_diagnose_mean_overfitting_over_seeds():
    shifted = history([v * 1.1 for v in OVERFIT_TRAIN], [v * 1.05 for v in OVERFIT_VAL])
    found = diagnose_mean([OVERFIT, shifted, OVERFIT])
    assert found.verdict == "overfitting" and found.overfit_onset == 7 and found.epochs == 20
    assert found.finding.startswith("mean of 3 runs: val loss bottoms out at epoch 7")


def test_diagnose_mean_truncates_to_the_shortest_run_and_says_so():
    found = diagnose_mean([OVERFIT, OVERFIT[:12]], early_stopped=True)
    assert found.epochs == 12 and found.early_stopped
    assert found.verdict == "overfitting" and found.overfit_onset == 7
    assert found.finding.startswith("mean of 2 runs, up to epoch 12, the last that all reached:")
    assert "(early stopping ended at least one of the runs)" in found.finding


def test_diagnose_mean_one_diverged_run_makes_the_mean_diverged():
    broken = history([1.0, 0.5, NAN], [0.9, 0.5, NAN])
    found = diagnose_mean([OVERFIT, broken])
    assert found.verdict == "diverged"
    assert "at epoch 3 in at least one run" in found.finding
    flagged = diagnose_mean([OVERFIT, OVERFIT], diverged=True)
    assert flagged.verdict == "diverged"


def test_diagnose_mean_says_when_the_seeds_disagree():
    stuck = history([2.31, 2.30, 2.30], [2.30, 2.30, 2.30], [0.11] * 3, [0.112] * 3)
    learned = history([0.3, 0.1, 0.05], [0.1, 0.06, 0.05], [0.9, 0.97, 0.98], [0.97, 0.98, 0.985])
    found = diagnose_mean([learned, stuck, learned])
    assert found.finding.endswith(
        " The runs disagree: their best val accuracies range from 11.2% to 98.5%, so this mean "
        "describes none of them; read each run's curve."
    )
    assert "disagree" not in diagnose_mean([OVERFIT, OVERFIT]).finding


def test_diagnose_mean_of_one_run_is_the_run():
    assert diagnose_mean([OVERFIT]) == diagnose(OVERFIT)
    assert diagnose_mean([]).verdict == "too short"


def test_rules_document_every_threshold():
    for text in (
        "2%",
        "0.001",
        "last 2",
        "fewer than 3",
        "0.5 ×",
        "1 point",
        "5 points",
        "by less than 10%",
        "more than 20 points",
    ):
        assert text in RULES
    for verdict in ("diverged", "too short", "overfitting", "underfitting", "still improving",
                    "good fit"):  # fmt: skip
        assert f"**{verdict}**" in RULES

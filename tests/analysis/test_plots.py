"""Plot data is checked exactly; the drawing layer is smoke-tested (a real PNG is written)."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest
from scipy import stats

from trainlab.analysis import plots
from trainlab.analysis.plots import (
    Band,
    confusion_data,
    curve_bands,
    importances,
    learning_curves,
    loss_accuracy_points,
    optimization_history,
    param_effect,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(epoch, **values):
    return {"epoch": float(epoch), **values}


# Two seeds; the second stopped early after epoch 2 and has a NaN (diverged) train loss there.
RUN_A = [
    row(1, train_loss=1.0, val_loss=1.1, train_accuracy=0.5, val_accuracy=0.4),
    row(2, train_loss=0.8, val_loss=0.9, train_accuracy=0.6, val_accuracy=0.55),
    row(3, train_loss=0.6, val_loss=1.0, train_accuracy=0.7, val_accuracy=0.5),
]
RUN_B = [
    row(1, train_loss=1.2, val_loss=1.3, train_accuracy=0.3, val_accuracy=0.35),
    row(2, train_loss=math.nan, val_loss=None, train_accuracy=0.4, val_accuracy=0.45),
]


# --------------------------------------------------------------------------- curve bands


def test_curve_bands_mean_std_over_the_runs_that_reached_each_epoch():
    band = curve_bands([RUN_A, RUN_B], "train_loss")
    std = statistics.stdev([1.0, 1.2])
    assert band.epochs == [1, 2, 3]
    assert band.n_per_epoch == [2, 1, 1]  # NaN ignored at epoch 2, run B ended at 2
    assert band.mean == pytest.approx([1.1, 0.8, 0.6])
    assert band.low == pytest.approx([1.1 - std, 0.8, 0.6])
    assert band.high == pytest.approx([1.1 + std, 0.8, 0.6])


def test_curve_bands_skips_epochs_without_values_and_numbers_rows_without_epoch():
    histories = [[{"val_loss": 2.0}, {"val_loss": None}, {"val_loss": 1.0}]]
    expected = Band([1, 3], [2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [1, 1])
    assert curve_bands(histories, "val_loss") == expected
    assert curve_bands([], "val_loss") == Band([], [], [], [], [])
    assert curve_bands([RUN_A], "no_such_column").epochs == []


def test_learning_curves_bands_and_marks():
    curves = learning_curves([RUN_A, RUN_B], stop_epochs=[None, 2])
    assert curves.n_runs == 2
    assert curves.val_loss == curve_bands([RUN_A, RUN_B], "val_loss")
    assert curves.band("train", "accuracy") == curve_bands([RUN_A, RUN_B], "train_accuracy")
    assert curves.best_epochs == [2, 1]  # lowest val_loss of each run
    assert curves.median_best_epoch == 1.5
    assert curves.early_stop_epochs == [2]


def test_learning_curves_take_recorded_best_epochs_and_check_lengths():
    curves = learning_curves([RUN_A, RUN_B, []], [None, None, None], best_epochs=[3, None, 1])
    assert curves.best_epochs == [3, 1]
    assert curves.median_best_epoch == 2.0
    assert curves.early_stop_epochs == []
    assert learning_curves([[]], [None]).median_best_epoch is None
    with pytest.raises(ValueError, match="stop epochs"):
        learning_curves([RUN_A], [])
    with pytest.raises(ValueError, match="best epochs"):
        learning_curves([RUN_A], [None], best_epochs=[1, 2])


# --------------------------------------------------------------------------- scatter


def test_loss_accuracy_points_and_spearman_match_scipy():
    data = loss_accuracy_points([RUN_A, RUN_B])
    assert data.x == [1.1, 0.9, 1.0, 1.3]  # run B's epoch 2 has no val_loss
    assert data.y == [0.4, 0.55, 0.5, 0.35]
    assert data.run_index == [0, 0, 0, 1]
    assert data.epoch == [1, 2, 3, 1]
    assert data.n == data.correlation.n == 4
    expected = stats.spearmanr(data.x, data.y)
    assert data.correlation.rho == pytest.approx(expected.statistic)
    assert data.correlation.p == pytest.approx(expected.pvalue)


def test_loss_accuracy_points_with_too_few_points_has_no_correlation():
    data = loss_accuracy_points([RUN_B])
    assert data.n == 1
    assert math.isnan(data.correlation.rho)
    assert data.correlation.p is None


# --------------------------------------------------------------------------- confusion


def test_confusion_data_normalises_rows():
    data = confusion_data([[3, 1], [0, 0]], ["cat", "dog"])
    assert data.counts == [[3, 1], [0, 0]]
    assert data.row_normalized == [[0.75, 0.25], [0.0, 0.0]]  # a class without samples: zeros
    assert data.class_names == ["cat", "dog"]
    with pytest.raises(ValueError, match="2x2"):
        confusion_data([[1, 2, 3]], ["cat", "dog"])


# --------------------------------------------------------------------------- parameter effect


def test_param_effect_numeric_levels_sorted_with_t_intervals():
    values = [0.1, 0.001, 0.1, 0.001, 0.01, 0.1]
    metrics = [0.9, 0.5, 0.92, 0.55, 0.8, math.nan]
    data = param_effect(values, metrics)
    assert data.levels == [0.001, 0.01, 0.1]
    assert data.n == [2, 1, 2]  # the NaN run is left out
    assert data.runs == [[0.5, 0.55], [0.8], [0.9, 0.92]]
    assert data.means == pytest.approx([0.525, 0.8, 0.91])
    low, high = stats.t.interval(0.95, 1, loc=0.525, scale=stats.sem([0.5, 0.55]))
    assert data.ci_low[0] == pytest.approx(low)
    assert data.ci_high[0] == pytest.approx(high)
    assert data.ci_low[1] is None and data.ci_high[1] is None  # one run: no interval
    assert data.numeric and data.log_scale  # 0.1 / 0.001 = 100


def test_param_effect_log_scale_only_for_wide_positive_ranges():
    assert not param_effect([0.01, 0.5], [1.0, 2.0]).log_scale
    assert not param_effect([-1.0, 1000.0], [1.0, 2.0]).log_scale
    assert not param_effect([0, 1000], [1.0, 2.0]).log_scale
    assert param_effect([1, 100], [1.0, 2.0]).log_scale


def test_param_effect_categorical_levels_keep_first_appearance_order():
    data = param_effect(["sgd", "adamw", "sgd", [32, 32], True], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert data.levels == ["sgd", "adamw", [32, 32], True]
    assert data.n == [2, 1, 1, 1]
    assert data.means == pytest.approx([0.2, 0.2, 0.4, 0.5])
    assert not data.numeric and not data.log_scale
    assert param_effect([True, False], [1.0, 2.0]).numeric is False
    assert param_effect([True, 1, 1.0], [1.0, 2.0, 4.0]).n == [1, 2]  # True is no number
    with pytest.raises(ValueError):
        param_effect([1], [])


# --------------------------------------------------------------------------- optuna


def test_optimization_history_running_best():
    minimized = optimization_history([0.5, None, 0.7, 0.3, math.nan, 0.4], "minimize")
    assert minimized.trial_numbers == [0, 2, 3, 5]
    assert minimized.values == [0.5, 0.7, 0.3, 0.4]
    assert minimized.best_so_far == [0.5, 0.5, 0.3, 0.3]
    maximized = optimization_history([0.5, 0.7, 0.6], "maximize", trial_numbers=[4, 7, 9])
    assert maximized.trial_numbers == [4, 7, 9]
    assert maximized.best_so_far == [0.5, 0.7, 0.7]
    with pytest.raises(ValueError, match="direction"):
        optimization_history([1.0], "max")  # type: ignore[arg-type]


def _study(trials: int, objective) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=trials)
    return study


def test_importances_rank_the_parameter_that_matters_without_scikit_learn():
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        return x + 0.01 * trial.suggest_float("noise", 0, 1)

    result = importances(_study(30, objective))
    assert list(result) == ["x", "noise"]
    assert sum(result.values()) == pytest.approx(1.0)
    assert result["x"] > 0.9


def test_importances_empty_for_too_few_trials_or_no_parameters():
    assert importances(_study(1, lambda t: t.suggest_float("x", 0, 1))) == {}
    assert importances(_study(3, lambda t: 1.0)) == {}
    failing = _study(0, lambda t: 1.0)
    assert importances(failing) == {}


# --------------------------------------------------------------------------- drawing


def assert_png(path, min_bytes=3000):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > min_bytes
    assert not list(path.parent.glob("*.part"))  # written atomically, nothing left behind


def test_draw_learning_curves_small_multiples(tmp_path):
    curves = learning_curves([RUN_A, RUN_B], [None, 2])
    many = {f"optim.lr={10.0**-i:g} model=mlp": curves for i in range(12)}
    assert_png(plots.draw_learning_curves(many, tmp_path / "many.png"), min_bytes=20_000)
    one = plots.draw_learning_curves({"one": curves}, tmp_path / "one.png", metric="accuracy")
    assert_png(one)
    assert_png(plots.draw_learning_curves({}, tmp_path / "empty.png"), min_bytes=1000)
    with pytest.raises(ValueError, match="metric"):
        plots.draw_learning_curves(many, tmp_path / "x.png", metric="f1")  # type: ignore[arg-type]


def test_draw_other_figures(tmp_path):
    assert_png(plots.draw_scatter(loss_accuracy_points([RUN_A, RUN_B]), tmp_path / "s.png"))
    assert_png(plots.draw_scatter(loss_accuracy_points([]), tmp_path / "s0.png"), 1000)
    matrix = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]
    assert_png(plots.draw_confusion(confusion_data(matrix, ["a", "b", "c"]), tmp_path / "c.png"))
    numeric = param_effect([0.001, 0.1, 0.1, 1.0], [0.5, 0.9, 0.92, 0.4])
    assert_png(plots.draw_param_effect(numeric, tmp_path / "e.png", "optim.lr", "accuracy"))
    categorical = param_effect(["sgd", "adamw", "adamw"], [0.8, 0.9, 0.91])
    assert_png(plots.draw_param_effect(categorical, tmp_path / "e2.png", "optim.name"))
    history = optimization_history([0.5, None, 0.7, 0.3], "minimize")
    assert_png(plots.draw_optimization_history(history, tmp_path / "h.png", "val loss"))
    assert_png(plots.draw_importances({"optim.lr": 0.8, "wd": 0.2}, tmp_path / "i.png"))
    assert_png(plots.draw_importances({}, tmp_path / "i0.png"), 1000)


def test_panel_titles_show_the_keys_that_vary_and_stay_distinct():
    configurations = [
        {"data.dataset": "/tmp/review-report/imb.npz", "optim.lr": "0.01", "model.name": "mlp"},
        {"data.dataset": "/tmp/review-report/imb.npz", "optim.lr": "0.001", "model.name": "mlp"},
        {"data.dataset": "mnist-5k", "optim.lr": "0.01", "model.name": "mlp"},
    ]
    assert plots.panel_titles(configurations) == [
        "dataset=imb.npz, lr=0.01", "dataset=imb.npz, lr=0.001", "dataset=mnist-5k, lr=0.01"]  # fmt: skip
    # Two files of the same name: the folders tell them apart.
    same_name = [{"data.dataset": "/a/x.npz"}, {"data.dataset": "/b/x.npz"}]
    assert plots.panel_titles(same_name) == ["data.dataset=/a/x.npz", "data.dataset=/b/x.npz"]
    long = [{"model.name": "resnet18-" + "w" * 40 + "-a", "optim.name": "adamw", "optim.lr": "0.1"},
            {"model.name": "resnet18-" + "w" * 40 + "-b", "optim.name": "sgd", "optim.lr": "0.1"}]  # fmt: skip
    titles = plots.panel_titles(long)
    assert len(set(titles)) == 2 and all(len(line) <= 40 for t in titles for line in t.split("\n"))
    assert titles[0].split("\n") == ["model.name=resnet18-ww…wwwwwwwwww-a", "optim.name=adamw"]
    assert plots.panel_titles([{}]) == ["base"] and plots.panel_titles([]) == []
    assert plots.panel_titles([{"optim.lr": "0.1"}]) == ["lr=0.1"]  # one panel: all its keys


def test_learning_curve_panels_have_whole_epoch_ticks_and_full_titles():
    curves = learning_curves([RUN_A, RUN_B], [None, 2])
    titles = plots.panel_titles([{"data.dataset": "/tmp/x/imb.npz", "optim.lr": "0.01"},
                                 {"data.dataset": "/tmp/x/imb.npz", "optim.lr": "0.001"}])  # fmt: skip
    figure = plots.learning_curves_figure(dict.fromkeys(titles, curves))
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"{t} (n=2)" for t in titles]
    figure.canvas.draw()
    for ax in panels:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_accuracy_axes_are_in_percent_as_the_tables_and_losses_are_not():
    from matplotlib.ticker import PercentFormatter

    curves = learning_curves([RUN_A, RUN_B], [None, 2])
    accuracy = plots.learning_curves_figure({"a": curves}, "accuracy")
    loss = plots.learning_curves_figure({"a": curves}, "loss")
    assert isinstance(accuracy.axes[0].yaxis.get_major_formatter(), PercentFormatter)
    assert not isinstance(loss.axes[0].yaxis.get_major_formatter(), PercentFormatter)
    accuracy.canvas.draw()
    labels = [t.get_text() for t in accuracy.axes[0].get_yticklabels() if t.get_text()]
    assert labels and all(label.endswith("%") for label in labels)


def test_one_epoch_runs_show_their_points_on_a_whole_epoch_axis():
    one_epoch = {"epoch": 1.0, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5,
                 "val_accuracy": 0.6}  # fmt: skip
    curves = learning_curves([[one_epoch], [one_epoch]], [1, 1])
    figure = plots.learning_curves_figure({"a": curves}, "loss")
    figure.canvas.draw()
    ax = figure.axes[0]
    assert any(line.get_marker() == "o" for line in ax.get_lines())  # a lone point is visible
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1.0]

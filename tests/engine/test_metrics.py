"""Metrics agree with scikit-learn, and streaming agrees with one-shot."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from trainlab.engine.metrics import MetricAccumulator, classification_metrics, confusion_matrix

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def _random_case(seed: int, n: int, k: int, *, missing: int = 0, imbalanced: bool = False):
    """Logits [n, k] and labels [n]; the last ``missing`` classes never occur in the labels."""
    gen = torch.Generator().manual_seed(seed)
    present = k - missing
    if imbalanced:
        weights = torch.tensor([0.6**i for i in range(present)])
        labels = torch.multinomial(weights, n, replacement=True, generator=gen)
    else:
        labels = torch.randint(0, present, (n,), generator=gen)
    logits = torch.randn(n, k, generator=gen)
    # Better than chance, so the metrics are not all near 1/k and some classes are never predicted.
    logits[torch.arange(n), labels] += 1.0
    return logits, labels


CASES = [
    pytest.param(0, 200, 10, 0, False, id="balanced-k10"),
    pytest.param(1, 300, 12, 3, False, id="missing-classes"),
    pytest.param(2, 500, 8, 0, True, id="imbalanced"),
    pytest.param(3, 57, 20, 5, True, id="imbalanced-missing-k20"),
    pytest.param(4, 40, 3, 0, False, id="k3-no-topk"),
    pytest.param(5, 30, 2, 1, False, id="binary-one-class-present"),
]


@pytest.mark.parametrize(("seed", "n", "k", "missing", "imbalanced"), CASES)
def test_matches_sklearn(seed: int, n: int, k: int, missing: int, imbalanced: bool) -> None:
    logits, labels = _random_case(seed, n, k, missing=missing, imbalanced=imbalanced)
    y_true, y_pred = labels.numpy(), logits.argmax(1).numpy()
    all_labels = list(range(k))

    got = classification_metrics(logits, labels, per_class=True, loss=0.25)

    with warnings.catch_warnings():
        # sklearn warns (correctly) about classes predicted but absent from y_true.
        warnings.simplefilter("ignore")
        expected_balanced = skm.balanced_accuracy_score(y_true, y_pred)
    assert got["n"] == n
    assert got["loss"] == 0.25
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert got["balanced_accuracy"] == pytest.approx(expected_balanced)
    assert got["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=all_labels, zero_division=0
    )
    for i in range(k):
        row = got["per_class"][str(i)]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    expected_cm = skm.confusion_matrix(y_true, y_pred, labels=all_labels)
    assert got["confusion_matrix"] == expected_cm.tolist()
    if k > 5:
        expected_top5 = skm.top_k_accuracy_score(y_true, logits.numpy(), k=5, labels=all_labels)
        assert got["top5_accuracy"] == pytest.approx(expected_top5)
    else:
        assert not any(key.startswith("top") for key in got)


def test_cases_really_have_missing_and_unpredicted_classes() -> None:
    # Guards the sklearn comparison above: it must exercise the edge cases it claims to.
    logits, labels = _random_case(1, 300, 12, missing=3)
    assert set(labels.tolist()) == set(range(9))
    assert set(logits.argmax(1).tolist()) - set(range(9)), "some absent class is predicted"


def test_probabilities_give_the_same_metrics_as_logits() -> None:
    logits, labels = _random_case(7, 100, 10)
    assert classification_metrics(logits.softmax(1), labels) == classification_metrics(
        logits, labels
    )


def test_results_are_plain_json() -> None:
    logits, labels = _random_case(8, 64, 10)
    got = classification_metrics(logits, labels, per_class=True, class_names=list("abcdefghij"))
    assert json.loads(json.dumps(got)) == got
    assert list(got["per_class"]) == list("abcdefghij")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy"):
        assert type(got[key]) is float
    assert type(got["n"]) is int
    assert "loss" not in got and "per_class" not in classification_metrics(logits, labels)


def test_top_k_option_names_the_key() -> None:
    logits, labels = _random_case(9, 80, 6)
    got = classification_metrics(logits, labels, top_k=2)
    assert got["top2_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(labels.numpy(), logits.numpy(), k=2)
    )
    assert "top5_accuracy" not in got


def test_perfect_predictions() -> None:
    labels = torch.tensor([0, 1, 2, 2, 1])
    got = classification_metrics(F.one_hot(labels, 4).float(), labels)
    assert got["accuracy"] == got["balanced_accuracy"] == got["macro_f1"] == 1.0


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"\[N, K\]"),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), "labels must be"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0, -1]), r"\[0, 3\)"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "zero samples"),
    ],
)
def test_bad_inputs_raise(logits: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(logits, labels)


def test_class_names_must_fit() -> None:
    logits, labels = _random_case(10, 20, 3)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        classification_metrics(logits, labels, class_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        classification_metrics(logits, labels, class_names=["a", "b", "a"])


def test_confusion_matrix_matches_sklearn_and_checks_range() -> None:
    gen = torch.Generator().manual_seed(11)
    preds = torch.randint(0, 7, (300,), generator=gen)
    labels = torch.randint(0, 6, (300,), generator=gen)
    cm = confusion_matrix(preds, labels, 7)
    assert cm.dtype == torch.int64 and cm.shape == (7, 7)
    assert cm.tolist() == skm.confusion_matrix(labels, preds, labels=range(7)).tolist()
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        confusion_matrix(preds, labels, 6)  # a prediction of 6 must not land in another cell


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_accumulator_equals_one_shot(device: str, batch_size: int) -> None:
    logits, labels = _random_case(12, 301, 10, missing=2, imbalanced=True)
    logits, labels = logits.to(device), labels.to(device)
    accumulator = MetricAccumulator(10)
    for start in range(0, len(labels), batch_size):
        batch_logits, batch_labels = (
            logits[start : start + batch_size],
            labels[start : start + batch_size],
        )
        loss_sum = F.cross_entropy(batch_logits, batch_labels, reduction="sum")
        accumulator.update(batch_logits, batch_labels, loss_sum)
        assert accumulator.confusion_matrix().device == logits.device

    names = [f"class {i}" for i in range(10)]
    loss = F.cross_entropy(logits.double(), labels).item()
    expected = classification_metrics(logits, labels, loss=loss, per_class=True, class_names=names)
    got = accumulator.compute(class_names=names, per_class=True)
    assert got.pop("loss") == pytest.approx(expected.pop("loss"), rel=1e-6)
    assert got == expected
    assert accumulator.n == 301


def test_accumulator_float_loss_and_missing_loss() -> None:
    logits, labels = _random_case(13, 50, 4)
    accumulator = MetricAccumulator(4)
    accumulator.update(logits[:20], labels[:20], 10.0)
    accumulator.update(logits[20:], labels[20:], torch.tensor(5.0))
    assert accumulator.compute()["loss"] == pytest.approx(15.0 / 50)

    partial = MetricAccumulator(4)
    partial.update(logits[:20], labels[:20], 10.0)
    partial.update(logits[20:], labels[20:])
    assert "loss" not in partial.compute(), "a loss over only some batches would mislead"


def test_accumulator_reset_and_errors() -> None:
    logits, labels = _random_case(14, 30, 4)
    accumulator = MetricAccumulator(4)
    with pytest.raises(ValueError, match="no batches"):
        accumulator.compute()
    with pytest.raises(ValueError, match="expected 4 classes"):
        accumulator.update(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    accumulator.update(logits, labels)
    accumulator.reset()
    assert accumulator.n == 0
    accumulator.update(logits[:10], labels[:10])
    assert accumulator.compute() == classification_metrics(logits[:10], labels[:10])
    with pytest.raises(ValueError, match="num_classes"):
        MetricAccumulator(0)
    with pytest.raises(ValueError, match="top_k"):
        MetricAccumulator(3, top_k=0)

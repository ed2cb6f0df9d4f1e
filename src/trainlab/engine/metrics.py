"""Classification metrics computed in torch, one-shot or streamed over batches.

Every metric here is a function of three counts: the confusion matrix, the number of top-k
hits and the number of samples. :class:`MetricAccumulator` keeps only those counts, on the
device of its inputs (one small host sync per batch, for the class-range check that
``torch.bincount`` needs anyway), and :func:`classification_metrics` computes the same counts
from a single batch; both share :func:`metrics_from_counts`, so their numbers agree exactly.

Definitions follow scikit-learn, which the tests compare against:

- ``balanced_accuracy`` is the mean recall over the classes present in the labels;
- ``macro_f1`` is the mean F1 over the classes present in the labels *or* the predictions,
  with F1 = 0 where it is undefined (``zero_division=0``);
- per-class precision/recall/F1 are 0 where undefined.

Results are plain Python ``int``/``float`` so they go straight into JSON.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MetricAccumulator",
    "classification_metrics",
    "confusion_matrix",
    "metrics_from_counts",
]


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Count (true, predicted) pairs: an int64 ``[K, K]`` tensor, rows true, columns predicted.

    Stays on the device of ``labels``. Raises ``ValueError`` for classes outside ``[0, K)``.
    """
    if preds.shape != labels.shape or labels.ndim != 1:
        raise ValueError(
            f"preds and labels must both be [N], got {tuple(preds.shape)} and {tuple(labels.shape)}"
        )
    preds, labels = preds.long(), labels.long()
    if labels.numel():
        # One host sync for both checks; an out-of-range prediction would otherwise be counted
        # silently in the wrong cell.
        bounds = torch.stack([preds.min(), labels.min(), preds.max(), labels.max()]).tolist()
        low, high = min(bounds[:2]), max(bounds[2:])
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"class indices must lie in [0, {num_classes}), got values in [{low}, {high}]"
            )
    flat = labels * num_classes + preds
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_scores(scores: Tensor, labels: Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"logits/probabilities must be [N, K], got {tuple(scores.shape)}")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be [N] with N={scores.shape[0]}, got {tuple(labels.shape)}")


def _top_k_hits(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Number of rows whose label is among the k highest scores, as a 0-dim tensor on device."""
    top = scores.topk(k, dim=1).indices
    return (top == labels.long().unsqueeze(1)).any(dim=1).sum()


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # 0 where the denominator is 0, matching scikit-learn's zero_division=0.
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def metrics_from_counts(
    cm: Tensor,
    *,
    top_k_hits: int | None = None,
    top_k: int = 5,
    loss: float | None = None,
    class_names: list[str] | None = None,
    per_class: bool = False,
) -> dict[str, Any]:
    """Turn a ``[K, K]`` confusion matrix (rows true) into the metrics dictionary.

    ``top_k_hits`` is reported as ``top{k}_accuracy`` when given and ``K > top_k``.
    """
    num_classes = cm.shape[0]
    names = _class_names(class_names, num_classes)
    cm = cm.detach().cpu().to(torch.float64)
    n = int(cm.sum().item())
    if n == 0:
        raise ValueError("cannot compute metrics of zero samples")

    true_positives = cm.diagonal()
    support = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    precision = _safe_div(true_positives, predicted)
    recall = _safe_div(true_positives, support)
    f1 = _safe_div(2 * true_positives, support + predicted)

    present = support > 0  # classes in the labels
    seen = present | (predicted > 0)  # classes in the labels or the predictions
    result: dict[str, Any] = {
        "accuracy": float(true_positives.sum() / n),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[seen].mean()),
    }
    if loss is not None:
        result["loss"] = float(loss)
    if top_k_hits is not None and num_classes > top_k:
        result[f"top{top_k}_accuracy"] = top_k_hits / n
    result["n"] = n
    if per_class:
        result["per_class"] = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        }
        result["confusion_matrix"] = cm.to(torch.int64).tolist()
    return result


def _class_names(class_names: list[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes")
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique (they key the per-class metrics)")
    return names


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")


def classification_metrics(
    logits_or_probs: Tensor,
    labels: Tensor,
    *,
    class_names: list[str] | None = None,
    loss: float | None = None,
    per_class: bool = False,
    top_k: int = 5,
) -> dict[str, Any]:
    """Metrics of one ``[N, K]`` batch of logits or probabilities against ``[N]`` labels.

    Keys: ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``loss`` (when given), ``n``,
    ``top{top_k}_accuracy`` (only when K > top_k), and with ``per_class=True`` also
    ``per_class`` ({name: {precision, recall, f1, support}}) and ``confusion_matrix``
    (list of lists, rows true, columns predicted).
    """
    _check_scores(logits_or_probs, labels)
    _check_top_k(top_k)
    num_classes = logits_or_probs.shape[1]
    cm = confusion_matrix(logits_or_probs.argmax(dim=1), labels, num_classes)
    hits = None
    if num_classes > top_k:
        hits = int(_top_k_hits(logits_or_probs, labels, top_k).item())
    return metrics_from_counts(
        cm, top_k_hits=hits, top_k=top_k, loss=loss, class_names=class_names, per_class=per_class
    )


class MetricAccumulator:
    """Streamed metrics: add batches with :meth:`update`, read the totals with :meth:`compute`.

    Only counts are kept (confusion matrix, top-k hits, loss sum, sample count), on the
    device of the first batch, so evaluating a large split costs O(K²) memory, not O(N·K).

    >>> acc = MetricAccumulator(10)
    >>> for images, labels in batches:                       # doctest: +SKIP
    ...     logits = model(images)
    ...     loss_sum = F.cross_entropy(logits, labels, reduction="sum")
    ...     acc.update(logits, labels, loss_sum)
    >>> acc.compute()["accuracy"]                             # doctest: +SKIP
    """

    def __init__(self, num_classes: int, *, top_k: int = 5) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        _check_top_k(top_k)
        self.num_classes = num_classes
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._cm: Tensor | None = None
        self._hits: Tensor | None = None
        self._loss_sum: Tensor | None = None
        self._loss_batches = 0
        self._batches = 0

    @property
    def n(self) -> int:
        """Number of samples seen (syncs with the device)."""
        return 0 if self._cm is None else int(self._cm.sum().item())

    @torch.no_grad()
    def update(
        self, logits: Tensor, labels: Tensor, loss_sum: Tensor | float | None = None
    ) -> None:
        """Add a batch: ``[N, K]`` logits or probabilities, ``[N]`` labels, and optionally the
        *sum* (not mean) of the per-sample losses of this batch, so the reported loss is the
        exact per-sample mean however the batches are sized."""
        _check_scores(logits, labels)
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got {logits.shape[1]}")
        cm = confusion_matrix(logits.argmax(dim=1), labels, self.num_classes)
        self._cm = cm if self._cm is None else self._cm + cm
        if self.num_classes > self.top_k:
            hits = _top_k_hits(logits, labels, self.top_k)
            self._hits = hits if self._hits is None else self._hits + hits
        if loss_sum is not None:
            # float64: summing thousands of float32 batch losses drifts otherwise. On the device
            # (no sync per batch), except on MPS, which has no float64.
            where = cm.device if cm.device.type != "mps" else torch.device("cpu")
            value = torch.as_tensor(loss_sum).detach().to(where, torch.float64)
            self._loss_sum = value if self._loss_sum is None else self._loss_sum + value
            self._loss_batches += 1
        self._batches += 1

    def confusion_matrix(self) -> Tensor:
        """The accumulated ``[K, K]`` confusion matrix (on the input device)."""
        if self._cm is None:
            raise ValueError("no batches seen yet; call update() first")
        return self._cm

    def compute(
        self, class_names: list[str] | None = None, per_class: bool = False
    ) -> dict[str, Any]:
        """The metrics of every batch so far, as :func:`classification_metrics` would give
        for their concatenation. ``loss`` is present only if every batch gave ``loss_sum``."""
        cm = self.confusion_matrix().cpu()
        n = int(cm.sum().item())
        loss = None
        if self._loss_sum is not None and self._loss_batches == self._batches and n:
            loss = float(self._loss_sum.item()) / n
        hits = None if self._hits is None else int(self._hits.item())
        return metrics_from_counts(
            cm,
            top_k_hits=hits,
            top_k=self.top_k,
            loss=loss,
            class_names=class_names,
            per_class=per_class,
        )

"""Confusion matrices and the segmentation metrics derived from them.

Everything here works on integer label masks: rows of a confusion matrix are ground-truth classes,
columns are predicted classes. Metrics are fractions in [0, 1] (no percent scaling), and every
undefined value (a zero denominator) is reported as ``None`` so the result dict can be written with
``json.dump`` without producing the non-standard ``NaN`` token.
"""

from __future__ import annotations

import math

import numpy as np


def _check_range(name: str, values: np.ndarray, num_classes: int) -> None:
    """Raise a ValueError naming the first value of ``values`` outside [0, num_classes)."""
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        value = values[bad].flat[0]
        raise ValueError(f"{name} value {value} is outside [0, {num_classes})")


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Return the (num_classes, num_classes) int64 confusion matrix of one prediction.

    Rows are ground truth, columns prediction. Pixels whose ground truth equals ``ignore_index`` are
    skipped. Any other out-of-range value (in ``gt`` on counted pixels, or anywhere in ``pred``) is an
    error rather than being dropped, because silently losing pixels would bias the metrics.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} does not match gt shape {gt.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = pred.astype(np.int64, copy=False).ravel()
    gt = gt.astype(np.int64, copy=False).ravel()
    _check_range("pred", pred, num_classes)
    valid = gt != ignore_index
    gt = gt[valid]
    _check_range("gt", gt, num_classes)
    counts = np.bincount(num_classes * gt + pred[valid], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den as float64, NaN where den is 0."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _to_json(values: np.ndarray) -> list[float | None]:
    """Convert a float array to a list of Python floats with NaN replaced by None."""
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def _nanmean(values: np.ndarray) -> float | None:
    """Mean over the non-NaN entries, None when there are none (avoids numpy's empty-slice warning)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def segmentation_metrics(matrix: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Compute per-class IoU / precision / recall, mIoU and pixel accuracy from a confusion matrix.

    IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN). A zero
    denominator (e.g. a class absent from both ground truth and prediction for IoU) gives NaN, which
    is written as ``None`` in the returned dict so it stays valid JSON. ``miou`` is the mean over the
    classes whose IoU is defined, so absent classes do not drag it down. All values are fractions in
    [0, 1] and all containers are plain Python types.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square 2-D, got shape {matrix.shape}")
    num_classes = matrix.shape[0]
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
    tp = np.diag(matrix).astype(np.float64)
    gt_total = matrix.sum(axis=1)
    pred_total = matrix.sum(axis=0)
    iou = _ratio(tp, gt_total + pred_total - tp)
    total = matrix.sum()
    return {
        "iou": _to_json(iou),
        "precision": _to_json(_ratio(tp, pred_total)),
        "recall": _to_json(_ratio(tp, gt_total)),
        "miou": _nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "class_names": list(class_names),
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over a whole split, one (pred, gt) pair at a time.

    Summing per-image matrices and computing metrics once at the end gives dataset-level IoU (the
    standard VOC protocol), which differs from averaging per-image IoUs.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add the counts of one prediction / ground-truth pair."""
        self.matrix += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def metrics(self, class_names: list[str] | None = None) -> dict:
        """Return :func:`segmentation_metrics` of the accumulated matrix."""
        return segmentation_metrics(self.matrix, class_names)

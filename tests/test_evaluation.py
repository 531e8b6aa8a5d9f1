"""Tests for l2g.evaluation: confusion matrices, metrics, pseudo labels and the threshold sweep."""

import json
import math

import numpy as np
import pytest

from l2g.evaluation.confusion import ConfusionMatrix, confusion_matrix, segmentation_metrics
from l2g.evaluation.sweep import ThresholdSweep, default_thresholds, pseudo_label

# Hand example: the 255 pixel (pred 2) is ignored; the 8 valid (gt, pred) pairs are
# (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (2,2) (0,0).
GT = np.array([[0, 0, 1], [1, 2, 2], [255, 2, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 2, 0], [2, 2, 0]], dtype=np.uint8)
EXPECTED = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 2]], dtype=np.int64)


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(PRED, GT, 3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, EXPECTED)
    assert matrix.sum() == 8


def test_ignore_index_is_skipped_and_configurable():
    gt = GT.copy()
    gt[0, 0] = 255
    assert confusion_matrix(PRED, gt, 3)[0, 0] == 1
    gt = np.where(GT == 255, 7, GT)
    np.testing.assert_array_equal(confusion_matrix(PRED, gt, 3, ignore_index=7), EXPECTED)


def test_metrics_by_hand():
    # TP = [2, 2, 2], gt totals = [3, 2, 3], pred totals = [3, 3, 2].
    m = segmentation_metrics(EXPECTED, ["bg", "a", "b"])
    assert m["iou"] == pytest.approx([2 / 4, 2 / 3, 2 / 3])
    assert m["precision"] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert m["recall"] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert m["miou"] == pytest.approx(11 / 18)
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)
    assert m["class_names"] == ["bg", "a", "b"]


def test_absent_class_is_none_and_skipped_by_miou():
    matrix = confusion_matrix(PRED, GT, 4)
    m = segmentation_metrics(matrix)
    assert m["iou"][3] is None and m["precision"][3] is None and m["recall"][3] is None
    assert m["miou"] == pytest.approx(11 / 18)
    assert m["class_names"] == ["0", "1", "2", "3"]
    json.loads(json.dumps(m))


def test_predicted_but_absent_from_gt():
    # Class 1 is predicted once but never in gt: IoU 0, precision 0, recall undefined.
    m = segmentation_metrics(np.array([[1, 1], [0, 0]]))
    assert m["iou"] == [0.5, 0.0]
    assert m["precision"] == [1.0, 0.0]
    assert m["recall"] == [0.5, None]
    assert m["miou"] == 0.25


def test_empty_matrix_gives_none():
    m = segmentation_metrics(np.zeros((2, 2), dtype=np.int64))
    assert m["miou"] is None and m["pixel_accuracy"] is None
    assert m["iou"] == [None, None]


def test_confusion_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        confusion_matrix(np.zeros((2, 3)), np.zeros((3, 3)), 3)
    with pytest.raises(ValueError, match="gt value 5"):
        confusion_matrix(np.zeros((2, 2)), np.array([[0, 5], [1, 255]]), 3)
    with pytest.raises(ValueError, match="pred value 3"):
        confusion_matrix(np.array([[0, 3]]), np.array([[0, 1]]), 3)
    with pytest.raises(ValueError, match="pred value -1"):
        confusion_matrix(np.array([[0, -1]]), np.array([[0, 1]]), 3)
    with pytest.raises(ValueError, match="class names"):
        segmentation_metrics(EXPECTED, ["a"])


def test_accumulator_sums_images():
    acc = ConfusionMatrix(3)
    acc.update(PRED, GT)
    acc.update(PRED, GT)
    np.testing.assert_array_equal(acc.matrix, 2 * EXPECTED)
    assert acc.metrics()["miou"] == pytest.approx(11 / 18)


def test_pseudo_label_tie_goes_to_background():
    maps = np.array([[[0.3, 0.5, 0.2]], [[0.1, 0.5, 0.4]]], dtype=np.float32)
    labels = np.array([4, 9])
    out = pseudo_label(maps, labels, 0.3)
    # Pixel 0: score 0.3 == t -> background. Pixel 1: both maps tie at 0.5 -> first map (4).
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 4, 9]])
    np.testing.assert_array_equal(pseudo_label(maps, labels, 0.5), [[0, 0, 0]])
    np.testing.assert_array_equal(pseudo_label(maps, labels, 0.0), [[4, 4, 9]])


def test_pseudo_label_without_maps_is_background():
    out = pseudo_label(np.zeros((0, 2, 3), dtype=np.float32), np.zeros(0, dtype=np.int64), 0.2)
    assert out.shape == (2, 3) and out.dtype == np.uint8 and not out.any()


def test_sweep_by_hand():
    sweep = ThresholdSweep(2, [0.5, 0.1])
    sweep.update(np.array([[[0.2, 0.5, 0.8]]], dtype=np.float32), np.array([1]), np.array([[1, 1, 0]]))
    # t = 0.5 -> pred [0, 0, 1]; t = 0.1 -> pred [1, 1, 1].
    np.testing.assert_array_equal(sweep.matrices(), [[[0, 1], [2, 0]], [[0, 1], [0, 2]]])
    res = sweep.results()
    assert res["thresholds"] == [0.5, 0.1]
    assert res["miou"] == pytest.approx([0.0, (0 + 2 / 3) / 2])
    assert res["best"]["threshold"] == 0.1


def _random_image(rng, num_classes):
    h, w = rng.integers(1, 12, size=2)
    k = int(rng.integers(0, 4))
    labels = rng.choice(np.arange(1, num_classes), size=k, replace=False)
    # Scores on a 0.05 grid so many of them sit exactly on thresholds and tie between maps.
    maps = (rng.integers(0, 21, size=(k, h, w)) * 0.05).astype(np.float32)
    gt = rng.integers(0, num_classes, size=(h, w)).astype(np.uint8)
    gt[rng.random((h, w)) < 0.1] = 255
    return maps, labels, gt


THRESHOLDS = [0.3, 0.05, 0.55, 0.3, 0.0, 1.0, 0.2, 0.45, 0.125, 0.6, 0.95, 0.5, 0.35]


def test_sweep_matches_slow_pseudo_labels():
    rng = np.random.default_rng(0)
    num_classes = 6
    images = [_random_image(rng, num_classes) for _ in range(40)]
    sweep = ThresholdSweep(num_classes, THRESHOLDS)
    for maps, labels, gt in images:
        sweep.update(maps, labels, gt)
    mats = sweep.matrices()
    assert mats.shape == (len(THRESHOLDS), num_classes, num_classes)
    for i, t in enumerate(THRESHOLDS):
        slow = sum(confusion_matrix(pseudo_label(m, lab, t), g, num_classes) for m, lab, g in images)
        np.testing.assert_array_equal(mats[i], slow, err_msg=f"threshold {t}")


def test_merge_equals_single_sweep():
    rng = np.random.default_rng(1)
    images = [_random_image(rng, 5) for _ in range(20)]
    whole, first, second = (ThresholdSweep(5, THRESHOLDS) for _ in range(3))
    for i, (maps, labels, gt) in enumerate(images):
        whole.update(maps, labels, gt)
        (first if i % 2 else second).update(maps, labels, gt)
    first.merge(second)
    np.testing.assert_array_equal(first.matrices(), whole.matrices())
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ThresholdSweep(5, [0.1]))


def test_results_json_and_best():
    rng = np.random.default_rng(2)
    sweep = ThresholdSweep(4, THRESHOLDS)
    for _ in range(10):
        sweep.update(*_random_image(rng, 4))
    res = json.loads(json.dumps(sweep.results(["bg", "a", "b", "c"]), allow_nan=False))
    assert res["thresholds"] == THRESHOLDS
    assert [e["threshold"] for e in res["per_threshold"]] == THRESHOLDS
    assert res["miou"] == [e["miou"] for e in res["per_threshold"]]
    assert res["best"] == res["per_threshold"][int(np.argmax(res["miou"]))]
    assert res["class_names"] == ["bg", "a", "b", "c"]


def test_sweep_validation():
    sweep = ThresholdSweep(3, [0.1])
    maps = np.zeros((2, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="gt shape"):
        sweep.update(maps, np.array([1, 2]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="labels shape"):
        sweep.update(maps, np.array([1]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"maps must be \(K, H, W\)"):
        sweep.update(np.zeros((2, 2)), np.array([1, 2]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="label value 3"):
        sweep.update(maps, np.array([1, 3]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="gt value 4"):
        sweep.update(maps, np.array([1, 2]), np.full((2, 2), 4))
    with pytest.raises(ValueError, match="non-empty"):
        ThresholdSweep(3, [])


def test_sweep_without_maps_counts_background():
    sweep = ThresholdSweep(3, [0.2, 0.4])
    sweep.update(np.zeros((0, 1, 3), dtype=np.float32), np.zeros(0), np.array([[0, 2, 255]]))
    expected = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(sweep.matrices(), [expected, expected])


def test_default_thresholds():
    grid = default_thresholds()
    assert len(grid) == 56 and grid[0] == 0.05 and grid[-1] == 0.6
    assert default_thresholds(0.1, 0.3, 0.1) == [0.1, 0.2, 0.3]
    assert default_thresholds(0.1, 0.35, 0.1) == [0.1, 0.2, 0.3]
    assert all(math.isclose(b - a, 0.01, abs_tol=1e-9) for a, b in zip(grid, grid[1:], strict=False))

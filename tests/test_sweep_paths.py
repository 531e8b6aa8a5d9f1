"""ThresholdSweep counts the thresholds a score beats by comparisons (few thresholds) or by binary search
(many): both paths must agree with pseudo labels computed one threshold at a time, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from l2g.evaluation.confusion import confusion_matrix
from l2g.evaluation.sweep import SEARCH_ABOVE, ThresholdSweep, default_thresholds, pseudo_label


def _images(seed: int, num_classes: int, count: int):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        h, w = rng.integers(1, 10, size=2)
        k = int(rng.integers(0, 4))
        labels = rng.choice(np.arange(1, num_classes), size=k, replace=False)
        maps = (rng.integers(0, 21, size=(k, h, w)) * 0.05).astype(np.float32)  # ties with thresholds and maps
        gt = rng.integers(0, num_classes, size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        images.append((maps, labels, gt))
    return images


@pytest.mark.parametrize("many", [False, True], ids=["comparisons", "binary-search"])
def test_both_counting_paths_match_one_threshold_at_a_time(many):
    thresholds = default_thresholds(0.0, 1.0, 0.05) if many else [0.25, 0.1, 0.3]
    assert (len(thresholds) > SEARCH_ABOVE) == many
    num_classes = 5
    images = _images(len(thresholds), num_classes, 30)
    sweep = ThresholdSweep(num_classes, thresholds)
    for maps, labels, gt in images:
        sweep.update(maps, labels, gt)
    for matrix, t in zip(sweep.matrices(), thresholds, strict=True):
        slow = sum(confusion_matrix(pseudo_label(m, lab, t), g, num_classes) for m, lab, g in images)
        np.testing.assert_array_equal(matrix, slow, err_msg=f"threshold {t}")


def test_tie_between_maps_goes_to_the_first_map():
    sweep = ThresholdSweep(3, [0.1])
    maps = np.array([[[0.5]], [[0.5]]], dtype=np.float32)
    sweep.update(maps, np.array([2, 1]), np.array([[2]]))
    assert sweep.matrices()[0][2, 2] == 1  # labels[0] = 2 wins the tie, as argmax would


def test_nan_and_out_of_range_gt_are_errors():
    sweep = ThresholdSweep(3, [0.1])
    with pytest.raises(ValueError, match="NaN"):
        sweep.update(np.array([[[np.nan, 0.2]]], dtype=np.float32), np.array([1]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="gt value 7"):
        sweep.update(np.array([[[0.3, 0.2]]], dtype=np.float32), np.array([1]), np.array([[0, 7]]))


@pytest.mark.parametrize("many", [False, True], ids=["comparisons", "binary-search"])
def test_float16_maps_are_scored_as_their_exact_float32_values(many):
    """Stored maps are float16: scored as the same values in float32, where 0.3 stays 0.3 (float16 would round
    the threshold up to 0.30005 and call a value of 0.30005 a tie)."""
    thresholds = default_thresholds(0.05, 0.6, 0.01) if many else [0.1, 0.25, 0.3]
    rng = np.random.default_rng(9)
    maps16 = rng.uniform(0, 1, (2, 30, 40)).astype(np.float16)
    maps16[0, :3] = np.float16(0.3)  # = 0.30004883 > 0.3
    maps16[1, :3] = 0.0
    labels, gt = np.array([1, 2]), rng.integers(0, 3, (30, 40)).astype(np.uint8)
    half, single = ThresholdSweep(3, thresholds), ThresholdSweep(3, thresholds)
    half.update(maps16, labels, gt)
    single.update(maps16.astype(np.float32), labels, gt)
    np.testing.assert_array_equal(half.matrices(), single.matrices())
    assert (pseudo_label(maps16, labels, 0.3)[:3] == 1).all()  # 0.30005 beats 0.3
    widened = pseudo_label(maps16.astype(np.float32), labels, 0.3)
    np.testing.assert_array_equal(pseudo_label(maps16, labels, 0.3), widened)


@pytest.mark.parametrize("thresholds", [[-0.1, 0.0, 0.1, 0.3, 1.0], default_thresholds(-0.05, 1.05, 0.05)],
                         ids=["comparisons", "binary-search"])
@pytest.mark.parametrize("special", ["none", "negative zero", "negative", "inf"])
def test_float16_integer_keys_agree_with_float32_in_every_case(thresholds, special):
    rng = np.random.default_rng(10)
    maps16 = (rng.integers(0, 21, (3, 17, 23)) * 0.05).astype(np.float16)  # ties with thresholds and maps
    maps16[1, :4] = maps16[0, :4]
    maps16[2, 0, :5] = [0.0, np.float16(0.3), np.float16(6e-8), 1.0, np.float16(0.1)]
    if special == "negative zero":
        maps16[0, 5, :6] = -0.0
    elif special == "negative":
        maps16[1, 6, 3] = -0.25
    elif special == "inf":
        maps16[2, 7, 7] = np.inf
    labels, gt = np.array([3, 1, 2]), rng.integers(0, 4, (17, 23)).astype(np.uint8)
    half, single = ThresholdSweep(4, thresholds), ThresholdSweep(4, thresholds)
    half.update(maps16, labels, gt)
    single.update(maps16.astype(np.float32), labels, gt)
    np.testing.assert_array_equal(half.matrices(), single.matrices())


def test_float16_nan_is_refused():
    maps = np.zeros((1, 2, 2), np.float16)
    maps[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ThresholdSweep(2, [0.1]).update(maps, np.array([1]), np.zeros((2, 2), np.uint8))

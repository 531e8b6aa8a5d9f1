"""Pseudo labels from attention maps and the background-threshold sweep.

A pseudo label at background threshold ``t`` is the argmax over ``[t, map_1, ..., map_K]``: index 0
means background (0), index k means ``labels[k - 1]``. Because argmax returns the first maximum,
background wins ties, so a pixel takes its best class only when that class's score is strictly
greater than ``t``. The comparison is done in the maps' floating dtype (``t`` is cast to it), so a
float32 score equal to ``float32(t)`` is a tie; float16 maps (l2g's stored maps) are compared in float32,
where their values are exact (in float16, 0.3 itself would round up to 0.30005 and swallow that value).

:class:`ThresholdSweep` evaluates many thresholds in one pass over each image: the best score and
class per pixel are computed once, each pixel is binned by how many thresholds its score beats, and
the per-threshold confusion matrices come out of cumulative sums over those bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from l2g.evaluation.confusion import segmentation_metrics


def default_thresholds(start: float = 0.05, stop: float = 0.60, step: float = 0.01) -> list[float]:
    """Return the grid start, start + step, ... up to stop (inclusive when on the grid), 2 decimals.

    The count is computed with a small tolerance so floating-point error in (stop - start) / step
    does not drop the last point.
    """
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    if stop < start:
        raise ValueError(f"stop {stop} is below start {start}")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 2) for i in range(count)]


def _as_float_maps(maps: np.ndarray) -> np.ndarray:
    """Return maps as a floating array (non-float input becomes float64), rejecting NaN. float16 maps stay
    float16 (the sweep widens only the per-pixel best score; see :func:`_comparison_dtype`)."""
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if not maps.size:
        return maps
    if maps.dtype == np.float16:  # numpy reduces float16 element by element: test the bit patterns instead
        if (np.ascontiguousarray(maps).view(np.uint16) & np.uint16(0x7FFF)).max() > 0x7C00:
            raise ValueError("maps contain NaN")
    elif np.isnan(maps.min()):  # min propagates NaN: one pass, no boolean copy
        raise ValueError("maps contain NaN")
    return maps


def _check_inputs(maps: np.ndarray, labels: np.ndarray, gt_shape: tuple[int, ...] | None) -> None:
    """Validate that maps is (K, H, W), labels is (K,) and, if given, gt is (H, W)."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (K, H, W), got shape {maps.shape}")
    if labels.ndim != 1 or labels.shape[0] != maps.shape[0]:
        raise ValueError(f"labels shape {labels.shape} does not match {maps.shape[0]} maps {maps.shape}")
    if gt_shape is not None and tuple(gt_shape) != maps.shape[1:]:
        raise ValueError(f"gt shape {tuple(gt_shape)} does not match maps spatial shape {maps.shape[1:]}")


def _check_labels(labels: np.ndarray, upper: int) -> None:
    """Map labels must be foreground values in [1, upper)."""
    bad = (labels < 1) | (labels >= upper)
    if bad.any():
        raise ValueError(f"label value {labels[bad][0]} is outside [1, {upper})")


def _comparison_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype thresholds are compared in: the maps' own, float32 for float16 maps."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def pseudo_label(maps: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Return the (H, W) uint8 pseudo mask: argmax over [threshold, maps...], background on ties.

    ``maps`` is (K, H, W) with K >= 0; ``labels`` (K,) gives the mask value (1..255) of each map.
    With K == 0 the result is all background.
    """
    maps = _as_float_maps(maps)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    _check_inputs(maps, labels, None)
    _check_labels(labels, 256)
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[1:], dtype=np.uint8)
    maps = maps.astype(_comparison_dtype(maps.dtype), copy=False)
    background = np.full((1, *maps.shape[1:]), threshold, dtype=maps.dtype)
    index = np.argmax(np.concatenate([background, maps], axis=0), axis=0)
    lookup = np.concatenate([[0], labels]).astype(np.uint8)
    return lookup[index]


# The values of the non-negative finite float16 bit patterns 0x0000..0x7bff, in increasing order.
_FLOAT16_VALUES = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
_NEGATIVE_ZERO = 0x8000


def _float16_keys(flat: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Integer keys that order like the float16 values, and the thresholds in key units, or (None, None).

    Non-negative float16 numbers order like their bit patterns, so the sweep's maxima and comparisons can
    run on uint16 (SIMD) instead of float16 (converted element by element: ~25x slower in numpy). -0.0 is
    keyed as +0.0. A threshold t becomes the largest pattern whose value is <= float32(t) (value > t <=> key
    > that pattern; -1 when every value beats t), which keeps the float32 comparison of the module doc. Maps
    with a negative, infinite or NaN value get (None, None) and take the float path.
    """
    bits = flat.view(np.uint16)
    if bits.max() > _NEGATIVE_ZERO:  # a negative number, or a NaN with its sign bit set
        return None, None
    keys = np.minimum(bits, bits ^ np.uint16(_NEGATIVE_ZERO))  # -0.0 (0x8000) -> 0; others unchanged
    if keys.max() >= 0x7C00:  # inf or NaN
        return None, None
    patterns = np.searchsorted(_FLOAT16_VALUES, thresholds.astype(np.float32), side="right") - 1
    return keys, patterns.astype(np.int32)


# Up to this many thresholds, counting the thresholds a score beats one comparison at a time is faster
# than a binary search per pixel.
SEARCH_ABOVE = 16


class ThresholdSweep:
    """Accumulates confusion matrices for many background thresholds in one pass per image.

    ``num_classes`` counts background (C + 1). Internally a (T + 1, num_classes, num_classes)
    histogram is kept, indexed by (number of sorted thresholds the pixel's best score beats, gt,
    best class); outputs are reported in the threshold order the user gave.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float], ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        values = np.asarray(list(thresholds), dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError("thresholds must be a non-empty sequence of numbers")
        if not np.isfinite(values).all():
            raise ValueError("thresholds must be finite")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.thresholds = [float(t) for t in values]
        self._order = np.argsort(values, kind="stable")
        self._sorted = values[self._order]
        self._hist = np.zeros((values.size + 1, num_classes, num_classes), dtype=np.int64)

    def _best(self, maps: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (number of sorted thresholds beaten, best class) per pixel, both flattened.

        Whole-image arithmetic in small integer types, looping only over the few maps and thresholds:
        numpy's ``argmax`` along the first axis, ``searchsorted`` of every pixel, masked copies and int64
        counters were each several times slower for an image's 1-3 maps and a handful of thresholds.
        """
        size = math.prod(maps.shape[1:])
        if maps.shape[0] == 0:
            return np.zeros(size, dtype=np.intp), np.zeros(size, dtype=np.intp)
        flat = maps.reshape(maps.shape[0], -1)
        keys, thresholds = _float16_keys(flat, self._sorted) if flat.dtype == np.float16 else (None, None)
        if keys is not None:  # float16 maps: the same comparisons on their bit patterns, in integer arithmetic
            flat = keys
        if flat.shape[0] == 1:  # one labelled class: it is the best everywhere
            best_score, best_class = flat[0], np.full(size, labels[0], dtype=np.intp)
        else:
            best_score = flat[0].copy()
            slot = np.zeros(size, dtype=np.min_scalar_type(flat.shape[0]))
            for k in range(1, flat.shape[0]):
                better = flat[k] > best_score  # strictly: a tie keeps the earlier map, like argmax
                np.maximum(best_score, flat[k], out=best_score)
                # k grows, so "slot = k where better" is a maximum (masked copies are ~50x slower in numpy).
                np.maximum(slot, better.view(np.uint8) * slot.dtype.type(k), out=slot)
            best_class = labels.take(slot)
        if thresholds is None:
            # Compared in the maps' dtype (see module doc); the max above is exact in any dtype, so float16
            # maps (with a negative or non-finite value: no integer keys) only need their best score widened.
            compare = _comparison_dtype(maps.dtype)
            best_score = best_score.astype(compare, copy=False)
            thresholds = self._sorted.astype(compare)
        if thresholds.size > SEARCH_ABOVE:
            # side="left" counts thresholds strictly below the score, i.e. the ones it strictly beats.
            return np.searchsorted(thresholds, best_score, side="left"), best_class
        beaten = np.zeros(size, dtype=np.uint8)
        for threshold in thresholds.tolist():  # Python numbers: compared in the keys' or scores' own dtype
            if threshold < 0:  # an integer key threshold below every pattern: beaten everywhere
                beaten += 1
            else:
                beaten += best_score > threshold
        return beaten, best_class

    def update(self, maps: np.ndarray, labels: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: maps (K, H, W) float, labels (K,) in 1..C, gt (H, W) with 255 = ignore."""
        maps = _as_float_maps(maps)
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        gt = np.asarray(gt)
        _check_inputs(maps, labels, gt.shape)
        _check_labels(labels, self.num_classes)
        if not np.issubdtype(gt.dtype, np.integer):
            gt = gt.astype(np.int64)
        beaten, best_class = self._best(maps, labels)
        gt = gt.ravel()
        n = self.num_classes
        ignored = gt == self.ignore_index
        outside = ((gt < 0) | (gt >= n)) & ~ignored
        if outside.any():
            raise ValueError(f"gt value {gt[outside][0]} is outside [0, {n})")
        # One bin index per pixel: (thresholds beaten, gt, best class); ignored pixels go to an extra
        # last bin that is dropped, which is cheaper than selecting the valid pixels of three arrays.
        index = beaten.astype(np.intp)
        index *= n
        index += gt
        index *= n
        index += best_class
        np.copyto(index, self._hist.size, where=ignored)
        counts = np.bincount(index, minlength=self._hist.size + 1)[: self._hist.size]
        self._hist += counts.reshape(self._hist.shape)

    def merge(self, other: ThresholdSweep) -> None:
        """Add another sweep's counts (e.g. from another shard); settings must be identical."""
        same = (
            other.num_classes == self.num_classes
            and other.ignore_index == self.ignore_index
            and other.thresholds == self.thresholds
        )
        if not same:
            raise ValueError("cannot merge sweeps with different num_classes, ignore_index or thresholds")
        self._hist += other._hist

    def matrices(self) -> np.ndarray:
        """Return the (T, num_classes, num_classes) confusion matrices in the user's threshold order.

        For sorted threshold j, pixels that beat more than j thresholds keep their best class (a
        suffix sum over the histogram); the rest are background, so their gt rows go to column 0.
        """
        suffix = np.cumsum(self._hist[::-1], axis=0)[::-1]
        below = np.cumsum(self._hist.sum(axis=2), axis=0)
        sorted_mats = suffix[1:].copy()
        sorted_mats[:, :, 0] += below[:-1]
        out = np.empty_like(sorted_mats)
        out[self._order] = sorted_mats
        return out

    def results(self, class_names: list[str] | None = None) -> dict:
        """Return JSON-serialisable metrics per threshold plus the entry with the highest mIoU.

        ``best`` is the first (in user order) entry with the highest defined mIoU, or None when no
        pixel has been counted.
        """
        per_threshold = []
        for t, matrix in zip(self.thresholds, self.matrices(), strict=True):
            entry = segmentation_metrics(matrix, class_names)
            entry["threshold"] = t
            per_threshold.append(entry)
        mious = [entry["miou"] for entry in per_threshold]
        scored = [i for i, m in enumerate(mious) if m is not None]
        best = per_threshold[max(scored, key=lambda i: mious[i])] if scored else None
        return {
            "thresholds": list(self.thresholds),
            "miou": mious,
            "per_threshold": per_threshold,
            "best": best,
            "class_names": per_threshold[0]["class_names"],
        }

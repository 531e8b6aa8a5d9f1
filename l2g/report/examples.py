"""Which images a report shows, chosen so that a few panels say something about the whole split.

The first N images of a split say little (and the same ones every time). :func:`choose_examples` picks:

1. one *typical* image per class, in class order, until every class is shown: among the images holding
   the class, the one whose score is the median (without scores, the first); an image covers all of its
   classes, so a class already shown by an earlier pick is skipped;
2. the *hardest* images: the lowest scores of the split (about a third of the slots, at least one when
   there are scores and two slots or more);
3. if slots remain, images with the most classes (several objects side by side).

The score of an image is its own mIoU (:func:`image_miou`) for the method the report is about: its
pseudo mask or its predicted mask against the ground truth. Every pick carries the reason it was chosen,
shown in the report's caption. A large split is first thinned to :data:`MAX_CANDIDATES` images spread
evenly over it (:func:`candidates`), so scoring stays a matter of seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

IGNORE = 255
MAX_CANDIDATES = 1000  # images scored per split (VOC's train_aug has 10,582; COCO's train 82,081)
T = TypeVar("T")


@dataclass
class Example(Generic[T]):
    item: T
    reason: str


def image_miou(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean IoU over the values present in either mask of one image (255 in ``truth`` ignored); None for
    an image whose every pixel is ignored."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} vs ground truth {truth.shape}")
    valid = truth != IGNORE
    if not valid.any():
        return None
    prediction, truth = prediction[valid].astype(np.int64), truth[valid].astype(np.int64)
    size = int(max(prediction.max(), truth.max())) + 1
    confusion = np.bincount(truth * size + prediction, minlength=size * size).reshape(size, size)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


def candidates(items: Sequence[T], limit: int = MAX_CANDIDATES) -> list[T]:
    """At most ``limit`` items, evenly spread over ``items`` (all of them when there are fewer)."""
    if len(items) <= limit:
        return list(items)
    return [items[(index * len(items)) // limit] for index in range(limit)]


def choose_examples(items: Sequence[T], labels: Callable[[T], Sequence[int]], key: Callable[[T], str],
                    count: int, scores: dict[str, float] | None = None,
                    class_name: Callable[[int], str] = str) -> list[Example[T]]:
    """Up to ``count`` items (see the module docstring); ``labels(item)`` its 0-based classes, ``key(item)``
    its id in ``scores`` (per-image mIoU, higher is better; items without a score are never "hard")."""
    scores = scores or {}
    chosen: list[Example[T]] = []
    taken: set[str] = set()
    if count <= 0 or not items:
        return chosen
    hard_slots = max(1, count // 3) if scores and count >= 2 else 0

    def take(item: T, reason: str) -> None:
        chosen.append(Example(item, reason))
        taken.add(key(item))

    covered: set[int] = set()
    classes = sorted({c for item in items for c in labels(item)})
    for cls in classes:
        if len(chosen) >= count - hard_slots:
            break
        if cls in covered:
            continue
        holding = [item for item in items if cls in labels(item) and key(item) not in taken]
        if not holding:
            continue
        scored = sorted((scores[key(i)], n, i) for n, i in enumerate(holding) if key(i) in scores)
        if scored:
            value, _, pick = scored[(len(scored) - 1) // 2]
            reason = f"typical {class_name(cls)}: median image mIoU {100 * value:.0f}% of {len(scored)} with it"
        else:
            pick, reason = holding[0], f"shows {class_name(cls)}"
        take(pick, reason)
        covered.update(labels(pick))

    ranked = sorted((scores[key(i)], n, i) for n, i in enumerate(items) if key(i) in scores)
    for value, _, item in ranked:
        if len(chosen) >= count or hard_slots == 0:
            break
        if key(item) not in taken:
            take(item, f"hard case: image mIoU {100 * value:.0f}% (among the lowest of {len(ranked)})")
            hard_slots -= 1

    crowded = sorted(((-len(labels(i)), n, i) for n, i in enumerate(items)), key=lambda t: (t[0], t[1]))
    for negative, _, item in crowded:
        if len(chosen) >= count:
            break
        if key(item) not in taken:
            take(item, f"{-negative} classes" if -negative > 1 else "more of the split")
    return chosen

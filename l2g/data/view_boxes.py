"""Where the local views of a global view are: integer boxes, drawn per training image.

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` in global-view coordinates, ``x2 - x1 == patch``.
Three strategies:
- ``corners+random`` (the authors' release): the four corners of the view first, then ``n - 4`` uniform
  random positions; needs ``n >= 4``.
- ``random`` (the paper, Sec. 3.3): ``n`` uniform random positions.
- ``grid`` (the paper's ablation, Sec. 4.2): every window of a sliding window with ``stride``; 448/320/64
  gives 9 views. ``n`` is not used.

Box sampling lives with the data, not the method: the boxes are drawn from each training item's own
random stream (seeded by (seed, epoch, index), in :class:`l2g.data.classification.ClassificationDataset`,
inside the DataLoader workers), so that they are reproducible, resumable mid-epoch and independent of
the number of workers and processes; they travel with the batch. Cutting the views out of the batch is
tensor work of the method: :mod:`l2g.method.views`.
"""

from __future__ import annotations

import numpy as np


def grid_positions(view: int, patch: int, stride: int) -> list[int]:
    """Window offsets along one axis, always including the last window flush with the border."""
    if patch > view:
        raise ValueError(f"patch {patch} is larger than the view {view}")
    positions = list(range(0, view - patch + 1, stride))
    if positions[-1] != view - patch:
        positions.append(view - patch)
    return positions


def sample_view_boxes(
    view_size: tuple[int, int],
    patch: int,
    n: int,
    strategy: str,
    rng: np.random.Generator,
    stride: int = 64,
) -> np.ndarray:
    """The (N, 4) int64 boxes of the local views of one global view of size ``(H, W)``."""
    height, width = view_size
    if patch > height or patch > width:
        raise ValueError(f"patch {patch} does not fit in a {height}x{width} view")
    max_y, max_x = height - patch, width - patch
    if strategy == "grid":
        tops = [(y, x) for y in grid_positions(height, patch, stride) for x in grid_positions(width, patch, stride)]
    elif strategy == "random":
        tops = list(zip(rng.integers(0, max_y + 1, n), rng.integers(0, max_x + 1, n), strict=True))
    elif strategy == "corners+random":
        if n < 4:
            raise ValueError("corners+random needs n >= 4: the four corners come first")
        corners = [(0, 0), (0, max_x), (max_y, 0), (max_y, max_x)]
        extra = zip(rng.integers(0, max_y + 1, n - 4), rng.integers(0, max_x + 1, n - 4), strict=True)
        tops = corners + list(extra)
    else:
        raise ValueError(f"unknown view strategy {strategy!r}")
    return np.array([(x, y, x + patch, y + patch) for y, x in tops], dtype=np.int64).reshape(-1, 4)

"""Local views cut from the global view: where they are (boxes) and how they are cut.

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` in global-view coordinates, ``x2 - x1 == patch``.
Three strategies:
- ``corners+random`` (the authors' release): the four corners of the view first, then ``n - 4`` uniform
  random positions; needs ``n >= 4``.
- ``random`` (the paper, Sec. 3.3): ``n`` uniform random positions.
- ``grid`` (the paper's ablation, Sec. 4.2): every window of a sliding window with ``stride``; 448/320/64
  gives 9 views. ``n`` is not used.
"""

from __future__ import annotations

import numpy as np
import torch


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


def crop_views(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Cut the local views out of a batch of global views.

    ``images`` (B, C, H, W); ``boxes`` (B, N, 4) integer boxes of equal size. Returns (B * N, C, p, p)
    ordered view-major within each image (image 0's N views, then image 1's, ...). The boxes become
    Python slice bounds: keep them on the host (the trainer does) so that reading them does not wait for
    the GPU.
    """
    crops = [
        images[b, :, int(y1) : int(y2), int(x1) : int(x2)]
        for b, image_boxes in enumerate(boxes.tolist())
        for x1, y1, x2, y2 in image_boxes
    ]
    return torch.stack(crops) if crops else images.new_zeros((0, images.shape[1], 0, 0))


def crop_resize_nearest(maps: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cut ``maps`` (B, C, H, W) at ``boxes`` (B, N, 4) and resize each crop (nearest) to ``size``.

    Used for the saliency crops of shape transfer: the release resizes them with nearest neighbour to
    the local attention map's size.
    """
    crops = crop_views(maps, boxes)
    return torch.nn.functional.interpolate(crops, size=size, mode="nearest")

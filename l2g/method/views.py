"""Cutting the local views out of a batch of global views, at the boxes the data pipeline drew
(:mod:`l2g.data.view_boxes`): the images for the local network, and the maps that are cut the same way
(saliency for shape transfer, ground-truth regions for ``l2g transfer-fit``).

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` in global-view coordinates, all of one size.
"""

from __future__ import annotations

import torch


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

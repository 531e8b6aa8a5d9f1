"""The global map cut at each local view's box (RoIAlign, spatial scale 1/stride).

Uses ``torchvision.ops.roi_align`` when torchvision's compiled ops load (a normal GPU install);
otherwise torchvision's own pure-PyTorch reference of the same operator, called without the
``torch.compile`` wrapper that torchvision puts around it (compiling costs minutes on a small CPU).
Both follow the same semantics: ``aligned=False`` (the legacy, release behaviour) and an adaptive
number of sampling points per bin (``sampling_ratio=-1``).
"""

from __future__ import annotations

import torch

from l2g.compat.torchvision_ops import roi_align_op


def boxes_to_rois(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) boxes -> (B * N, 5) RoIs ``(batch_index, x1, y1, x2, y2)`` as float."""
    batch, n = boxes.shape[:2]
    index = torch.arange(batch, device=boxes.device, dtype=torch.float32).repeat_interleave(n)
    return torch.cat([index[:, None], boxes.reshape(-1, 4).float()], dim=1)


def cut_global_map(
    global_map: torch.Tensor,
    boxes: torch.Tensor,
    output_size: tuple[int, int],
    stride: int = 8,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """RoIAlign the global network's map (B, K, h, w) at the view boxes (B, N, 4, in image pixels).

    Returns (B * N, K, *output_size), in the same order as :func:`l2g.data.views.crop_views`.
    """
    rois = boxes_to_rois(boxes).to(global_map.dtype)
    return roi_align_op(global_map, rois, output_size, 1.0 / stride, sampling_ratio, False)

"""The global map cut at each local view's box (RoIAlign, spatial scale 1/stride).

Semantics of torchvision's ``roi_align`` kernels with ``aligned=False`` (the legacy, release behaviour)
and an adaptive number of sampling points per bin (``sampling_ratio=-1``): each output bin averages a
grid of bilinear samples; samples are clamped at the map's low edge and to its last cell, and a sample
further than one cell outside the map contributes 0.

Computed as two small matrix products per box, ``out[k] = Wy[k] @ map[b_k] @ Wx[k]^T``: a bilinear
sample's weight is the product of a row weight and a column weight, and so is the average over a bin's
grid of samples, so the whole RoIAlign of a box is a (PH x H) row matrix and a (PW x W) column matrix.
Forward and backward are then dense, deterministic matrix products. torchvision's pure-PyTorch fallback
(used where its compiled ops do not load, see :mod:`l2g.compat.torchvision_ops`) instead gathers every
possible sample of every bin (PH x PW x H x W values per box and channel), far more work than the step's
networks need (docs/benchmarks.md, "RoIAlign").
"""

from __future__ import annotations

import torch


def boxes_to_rois(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) boxes -> (B * N, 5) RoIs ``(batch_index, x1, y1, x2, y2)`` as float."""
    batch, n = boxes.shape[:2]
    index = torch.arange(batch, device=boxes.device, dtype=torch.float32).repeat_interleave(n)
    return torch.cat([index[:, None], boxes.reshape(-1, 4).float()], dim=1)


def axis_weights(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int,
                 sampling_ratio: int = -1) -> torch.Tensor:
    """(K, pooled, size) float32 weights: row ``p`` of box ``k`` averages the bilinear samples of bin ``p``
    along one axis of a map of ``size`` cells (box from ``start`` to ``end``, in map cells, aligned=False)."""
    extent = (end - start).clamp(min=1.0)  # aligned=False: boxes are at least one cell wide
    bin_size = extent / pooled
    fixed = torch.full_like(extent, float(sampling_ratio))
    grid = fixed if sampling_ratio > 0 else torch.ceil(extent / pooled)  # samples per bin along this axis
    most = max(int(grid.max().item()) if grid.numel() else 1, 1)
    offsets = torch.arange(most, device=start.device, dtype=torch.float32)
    bins = torch.arange(pooled, device=start.device, dtype=torch.float32)
    position = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
                + (offsets[None, None, :] + 0.5) * (bin_size / grid)[:, None, None])  # (K, pooled, most)
    used = (offsets[None, None, :] < grid[:, None, None]) & (position >= -1.0) & (position <= size)
    position = position.clamp(min=0.0)
    low = position.floor()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    position = torch.where(at_end, low, position)
    fraction = position - low
    share = used.float() / grid.clamp(min=1.0)[:, None, None]
    weights = torch.zeros(start.shape[0], pooled, size, device=start.device, dtype=torch.float32)
    weights.scatter_add_(2, low.long(), (1.0 - fraction) * share)
    weights.scatter_add_(2, high.long(), fraction * share)
    return weights


def roi_align_separable(features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                        spatial_scale: float, sampling_ratio: int = -1) -> torch.Tensor:
    """Legacy RoIAlign (aligned=False) of ``features`` (B, C, H, W) at ``rois`` (K, 5) -> (K, C, PH, PW).

    Computed in float32 (outside autocast, as torchvision runs ``roi_align`` under AMP).
    """
    pooled_h, pooled_w = output_size
    height, width = features.shape[2:]
    rois = rois.float()
    boxes = rois[:, 1:] * spatial_scale
    with torch.autocast(features.device.type, enabled=False):
        # The weights are built where the RoIs are: RoIs on the host (the trainer keeps view boxes there)
        # give small matrices copied to the device without waiting for it (axis_weights reads a maximum).
        rows = _on(axis_weights(boxes[:, 1], boxes[:, 3], pooled_h, height, sampling_ratio), features.device)
        cols = _on(axis_weights(boxes[:, 0], boxes[:, 2], pooled_w, width, sampling_ratio), features.device)
        per_box = features.float().index_select(0, _on(rois[:, 0].long(), features.device))  # (K, C, H, W)
        return rows[:, None] @ per_box @ cols.transpose(1, 2)[:, None]  # (K, PH, H) (K, C, H, W) (K, W, PW)


def _on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host tensor goes to a GPU through pinned memory, asynchronously."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def cut_global_map(
    global_map: torch.Tensor,
    boxes: torch.Tensor,
    output_size: tuple[int, int],
    stride: int = 8,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """RoIAlign the global network's map (B, K, h, w) at the view boxes (B, N, 4, in image pixels).

    Returns (B * N, K, *output_size) float32, in the same order as :func:`l2g.method.views.crop_views`.
    """
    return roi_align_separable(global_map, boxes_to_rois(boxes), output_size, 1.0 / stride, sampling_ratio)

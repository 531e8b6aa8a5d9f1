"""The separable RoIAlign of l2g.method.roi against torchvision's roi_align (the compiled op where it
loads, else torchvision's own pure-PyTorch reference), forward and backward."""

from __future__ import annotations

import pytest
import torch

from l2g.compat.torchvision_ops import roi_align_op
from l2g.method.roi import axis_weights, roi_align_separable


def _random_rois(generator: torch.Generator, count: int, batch: int, height: int, width: int) -> torch.Tensor:
    """RoIs of mixed sizes and fractional corners, inside the map (scale 1), some thinner than a cell."""
    x1 = torch.rand(count, generator=generator) * (width - 1)
    y1 = torch.rand(count, generator=generator) * (height - 1)
    x2 = x1 + torch.rand(count, generator=generator) * (width - x1)
    y2 = y1 + torch.rand(count, generator=generator) * (height - y1)
    index = torch.randint(batch, (count,), generator=generator).float()
    return torch.stack([index, x1, y1, x2, y2], dim=1)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("output_size", [(3, 4), (7, 7)])
def test_matches_torchvision_forward_and_backward(sampling_ratio, output_size):
    generator = torch.Generator().manual_seed(sampling_ratio + 10 * output_size[0])
    features = torch.randn(3, 4, 11, 13, generator=generator)
    rois = _random_rois(generator, 12, 3, 11, 13)
    ours_in = features.clone().requires_grad_()
    theirs_in = features.clone().requires_grad_()
    ours = roi_align_separable(ours_in, rois, output_size, 1.0, sampling_ratio)
    theirs = roi_align_op(theirs_in, rois, output_size, 1.0, sampling_ratio, False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(ours.shape, generator=generator)
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-5, atol=1e-5)


def test_scaled_boxes_like_the_local_views():
    # Equal 80-pixel views of a 112-pixel global view at stride 8, as in training.
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 7, 14, 14, generator=generator)
    rois = torch.tensor([[0, 0, 0, 80, 80], [0, 32, 32, 112, 112], [1, 17, 5, 97, 85], [1, 32, 0, 112, 80]]).float()
    ours = roi_align_separable(features, rois, (10, 10), 1 / 8)
    torch.testing.assert_close(ours, roi_align_op(features, rois, (10, 10), 1 / 8, -1, False), rtol=1e-5, atol=1e-5)


def test_axis_weights_by_hand():
    # one box 0..2 on a 3-cell axis, 2 bins of width 1, one sample each at 0.5 and 1.5
    weights = axis_weights(torch.tensor([0.0]), torch.tensor([2.0]), pooled=2, size=3)
    torch.testing.assert_close(weights[0], torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]))
    # a sample further than one cell outside the map contributes nothing: box -5..-3, 1 bin, 2 samples
    outside = axis_weights(torch.tensor([-5.0]), torch.tensor([-3.0]), pooled=1, size=3)
    assert outside.abs().sum() == 0


def test_float32_under_autocast():
    features = torch.randn(1, 2, 6, 6).bfloat16()
    rois = torch.tensor([[0.0, 0, 0, 4, 4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align_separable(features, rois, (2, 2), 1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, roi_align_separable(features.float(), rois, (2, 2), 1.0))

"""Hand-computed tests for l2g.data.view_boxes and l2g.method.views (view boxes, crops) and l2g.method.roi
(RoIAlign of the global map)."""

import math

import numpy as np
import pytest
import torch

from l2g.data.view_boxes import grid_positions, sample_view_boxes
from l2g.method.roi import boxes_to_rois, cut_global_map
from l2g.method.views import crop_resize_nearest, crop_views

# --- sample_view_boxes ---------------------------------------------------------------------------


def test_corners_come_first_exact_boxes():
    boxes = sample_view_boxes((112, 112), 80, 6, "corners+random", np.random.default_rng(0))
    assert boxes.shape == (6, 4) and boxes.dtype == np.int64
    assert boxes[:4].tolist() == [[0, 0, 80, 80], [32, 0, 112, 80], [0, 32, 80, 112], [32, 32, 112, 112]]


def test_corners_of_a_non_square_view_use_the_right_axes():
    # H = 100, W = 150, patch 40: max_x = 110, max_y = 60; boxes are (x1, y1, x2, y2)
    boxes = sample_view_boxes((100, 150), 40, 4, "corners+random", np.random.default_rng(0))
    assert boxes.tolist() == [[0, 0, 40, 40], [110, 0, 150, 40], [0, 60, 40, 100], [110, 60, 150, 100]]


def test_corners_plus_random_needs_four_views():
    with pytest.raises(ValueError, match="n >= 4"):
        sample_view_boxes((112, 112), 80, 3, "corners+random", np.random.default_rng(0))


def test_random_boxes_inside_view_with_patch_size():
    boxes = sample_view_boxes((100, 150), 40, 2000, "random", np.random.default_rng(3))
    assert boxes.shape == (2000, 4) and boxes.dtype == np.int64
    x1, y1, x2, y2 = boxes.T
    assert (x2 - x1 == 40).all() and (y2 - y1 == 40).all()
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 150).all() and (y2 <= 100).all()
    # x ranges over 0..110, y over 0..60: with 2000 draws some x1 exceed 60 (an axis swap would forbid it)
    assert x1.max() > 60
    # the extreme offsets are reachable, including the last (flush with the border)
    assert y1.max() == 60 and y1.min() == 0 and x1.max() == 110 and x1.min() == 0


def test_random_boxes_reproducible_with_seed():
    a = sample_view_boxes((112, 112), 80, 8, "random", np.random.default_rng(42))
    b = sample_view_boxes((112, 112), 80, 8, "random", np.random.default_rng(42))
    c = sample_view_boxes((112, 112), 80, 8, "random", np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    a = sample_view_boxes((112, 112), 80, 8, "corners+random", np.random.default_rng(7))
    b = sample_view_boxes((112, 112), 80, 8, "corners+random", np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_grid_448_320_64_gives_nine_views():
    boxes = sample_view_boxes((448, 448), 320, 1, "grid", np.random.default_rng(0), stride=64)
    expected = [[x, y, x + 320, y + 320] for y in (0, 64, 128) for x in (0, 64, 128)]  # row-major: y outer, x inner
    assert boxes.tolist() == expected


def test_grid_positions_appends_the_flush_window():
    assert grid_positions(448, 320, 64) == [0, 64, 128]
    assert grid_positions(100, 40, 25) == [0, 25, 50, 60]
    assert grid_positions(80, 80, 16) == [0]
    with pytest.raises(ValueError):
        grid_positions(64, 80, 16)


def test_patch_too_large_or_unknown_strategy_raises():
    with pytest.raises(ValueError):
        sample_view_boxes((64, 112), 80, 4, "random", np.random.default_rng(0))
    with pytest.raises(ValueError, match="strategy"):
        sample_view_boxes((112, 112), 80, 4, "sliding", np.random.default_rng(0))


# --- crop_views / crop_resize_nearest ------------------------------------------------------------


def _coded_images():
    # value = 100 * b + 10 * y + x
    b, y, x = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(4), indexing="ij")
    return (100 * b + 10 * y + x).float()[:, None]  # (2, 1, 4, 4)


def test_crop_views_order_and_content():
    boxes = torch.tensor([[[0, 0, 2, 2], [2, 1, 4, 3]], [[1, 2, 3, 4], [0, 0, 2, 2]]])
    crops = crop_views(_coded_images(), boxes)
    expected = torch.tensor(
        [
            [[0.0, 1.0], [10.0, 11.0]],  # image 0, view 0
            [[12.0, 13.0], [22.0, 23.0]],  # image 0, view 1: x 2..3, y 1..2
            [[121.0, 122.0], [131.0, 132.0]],  # image 1, view 0: x 1..2, y 2..3
            [[100.0, 101.0], [110.0, 111.0]],  # image 1, view 1
        ]
    )[:, None]
    torch.testing.assert_close(crops, expected)


def test_crop_resize_nearest_upsample_and_downsample():
    images = _coded_images()[:1]
    up = crop_resize_nearest(images, torch.tensor([[[0, 0, 2, 2]]]), (4, 4))
    expected_up = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [10, 10, 11, 11], [10, 10, 11, 11]])
    torch.testing.assert_close(up, expected_up[None, None])
    # 4 -> 2 nearest picks source indices 0 and 2
    down = crop_resize_nearest(images, torch.tensor([[[0, 0, 4, 4]]]), (2, 2))
    torch.testing.assert_close(down, torch.tensor([[[[0.0, 2.0], [20.0, 22.0]]]]))


# --- cut_global_map (legacy RoIAlign, aligned=False, scale 1/8) ----------------------------------


def _x_map(height, width, batch=1, channels=1):
    """A map whose value is its x (column) coordinate."""
    row = torch.arange(width, dtype=torch.float32)
    return row.expand(batch, channels, height, width).clone()


def test_boxes_to_rois():
    boxes = torch.tensor([[[0, 0, 80, 80], [32, 0, 112, 80]], [[0, 32, 80, 112], [1, 2, 3, 4]]])
    expected = torch.tensor([[0.0, 0, 0, 80, 80], [0.0, 32, 0, 112, 80], [1.0, 0, 32, 80, 112], [1.0, 1, 2, 3, 4]])
    torch.testing.assert_close(boxes_to_rois(boxes), expected)


def test_constant_map_gives_constant_crops_in_view_order():
    global_map = torch.stack([torch.full((2, 14, 14), 1.5), torch.full((2, 14, 14), -2.0)])  # (2, 2, 14, 14)
    global_map[:, 1] += 10.0  # channel 1 is 11.5 / 8.0
    boxes = torch.tensor([[[0, 0, 80, 80], [32, 32, 112, 112]], [[32, 0, 112, 80], [0, 32, 80, 112]]])
    out = cut_global_map(global_map, boxes, (10, 10), stride=8)
    assert out.shape == (4, 2, 10, 10)
    expected = torch.tensor([[1.5, 11.5], [1.5, 11.5], [-2.0, 8.0], [-2.0, 8.0]])[:, :, None, None]
    torch.testing.assert_close(out, expected.expand(4, 2, 10, 10))


def test_x_map_inside_the_map_gives_bin_centres():
    # box (0, 0, 80, 80) / 8 = 0..10 on a 14-wide map; 10 bins of width 1, 1 sample each at x = i + 0.5
    out = cut_global_map(_x_map(14, 14), torch.tensor([[[0, 0, 80, 80]]]), (10, 10))
    row = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5])
    torch.testing.assert_close(out[0, 0], row.expand(10, 10))


def test_x_map_last_sample_clamps_to_last_cell():
    # 10-wide map (an 80-pixel view at stride 8): sample x = 9.5 lies beyond the last cell (9) and the legacy
    # bilinear sampling clamps it to 9 -> the last column is 9.0, not 9.5
    out = cut_global_map(_x_map(10, 10), torch.tensor([[[0, 0, 80, 80]]]), (10, 10))
    row = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.0])
    torch.testing.assert_close(out[0, 0], row.expand(10, 10))
    # the bottom-right corner view of a 112 view (14-wide map): x from 4 to 14, samples 4.5 .. 13.5, 13.5 -> 13
    out = cut_global_map(_x_map(14, 14), torch.tensor([[[32, 32, 112, 112]]]), (10, 10))
    row = torch.tensor([4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5, 12.5, 13.0])
    torch.testing.assert_close(out[0, 0], row.expand(10, 10))


def test_adaptive_sampling_with_wide_bins():
    # box 0..10 to 4 bins: bin width 2.5, ceil(2.5) = 3 samples per bin at offsets 5/12, 15/12, 25/12
    # inside a 14-wide map the mean of 3 samples of a linear map is the bin centre: 1.25, 3.75, 6.25, 8.75
    out = cut_global_map(_x_map(14, 14), torch.tensor([[[0, 0, 80, 80]]]), (4, 4))
    torch.testing.assert_close(out[0, 0], torch.tensor([1.25, 3.75, 6.25, 8.75]).expand(4, 4))
    # on a 10-wide map the last bin's samples 95/12, 105/12, 115/12 -> the third clamps to 9 = 108/12:
    # mean = (95 + 105 + 108) / 36 = 77/9
    out = cut_global_map(_x_map(10, 10), torch.tensor([[[0, 0, 80, 80]]]), (4, 4))
    torch.testing.assert_close(out[0, 0], torch.tensor([1.25, 3.75, 6.25, 77 / 9]).expand(4, 4))


def test_rectangular_box_and_axes():
    # map value 10*y + x on a 14x14 map; box (0, 16, 80, 48) / 8 -> x 0..10, y 2..6; output (2, 5)
    # x bins of width 2 with 2 samples (0.5, 1.5 -> mean 1): centres 1, 3, 5, 7, 9
    # y bins of width 2 with 2 samples (2.5, 3.5 -> 3; 4.5, 5.5 -> 5)
    y, x = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    out = cut_global_map((10 * y + x)[None, None], torch.tensor([[[0, 16, 80, 48]]]), (2, 5))
    expected = torch.tensor([[31.0, 33.0, 35.0, 37.0, 39.0], [51.0, 53.0, 55.0, 57.0, 59.0]])
    torch.testing.assert_close(out[0, 0], expected)


def _legacy_roi_align_loop(feature, box, out_h, out_w, scale):
    """Slow, explicit legacy RoIAlign (aligned=False, adaptive sampling) of one 2-D map."""
    height, width = len(feature), len(feature[0])
    x1, y1, x2, y2 = (v * scale for v in box)
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    grid_w, grid_h = math.ceil(roi_w / out_w), math.ceil(roi_h / out_h)

    def bilinear(yy, xx):
        if yy < -1.0 or yy > height or xx < -1.0 or xx > width:
            return 0.0
        yy, xx = max(yy, 0.0), max(xx, 0.0)
        y_low, x_low = int(yy), int(xx)
        if y_low >= height - 1:
            y_low = y_high = height - 1
            yy = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_low = x_high = width - 1
            xx = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = yy - y_low, xx - x_low
        return (
            (1 - ly) * (1 - lx) * feature[y_low][x_low]
            + (1 - ly) * lx * feature[y_low][x_high]
            + ly * (1 - lx) * feature[y_high][x_low]
            + ly * lx * feature[y_high][x_high]
        )

    out = [[0.0] * out_w for _ in range(out_h)]
    for i in range(out_h):
        for j in range(out_w):
            total = 0.0
            for a in range(grid_h):
                for b in range(grid_w):
                    yy = y1 + i * bin_h + (a + 0.5) * bin_h / grid_h
                    xx = x1 + j * bin_w + (b + 0.5) * bin_w / grid_w
                    total += bilinear(yy, xx)
            out[i][j] = total / (grid_h * grid_w)
    return out


def test_random_map_matches_explicit_legacy_loop():
    generator = torch.Generator().manual_seed(0)
    feature = torch.rand(1, 1, 10, 10, generator=generator)
    boxes = [[0, 0, 80, 80], [8, 16, 72, 80], [20, 4, 60, 44], [44, 44, 80, 80]]
    out = cut_global_map(feature, torch.tensor([boxes]), (3, 4))
    plain = feature[0, 0].tolist()
    for k, box in enumerate(boxes):
        expected = torch.tensor(_legacy_roi_align_loop(plain, box, 3, 4, 1 / 8))
        torch.testing.assert_close(out[k, 0], expected, atol=1e-5, rtol=0)


def test_gradient_flows_back_to_the_global_map():
    # box 0..10 on a 14x14 map, 10x10 output: samples at (i + .5, j + .5) split 1/4 to each neighbour cell
    global_map = torch.zeros(1, 1, 14, 14, requires_grad=True)
    cut_global_map(global_map, torch.tensor([[[0, 0, 80, 80]]]), (10, 10)).sum().backward()
    grad = global_map.grad[0, 0]
    assert grad[0, 0].item() == pytest.approx(0.25)  # one sample
    assert grad[0, 1].item() == pytest.approx(0.5)  # two samples
    assert grad[1, 1].item() == pytest.approx(1.0)  # four samples
    assert grad[10, 10].item() == pytest.approx(0.25)
    assert grad[11:, :].abs().sum().item() == 0 and grad[:, 11:].abs().sum().item() == 0
    assert grad.sum().item() == pytest.approx(100.0)

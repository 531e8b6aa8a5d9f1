"""Attention-map dicts -> the (K, H, W) stack the sweep and pseudo masks use."""

import numpy as np

from l2g.data.cam_files import stack_maps
from l2g.evaluation.sweep import pseudo_label


def test_maps_are_stacked_in_class_order_with_mask_values():
    cams = {4: np.full((2, 3), 0.9, np.float32), 1: np.full((2, 3), 0.2, np.float32)}
    maps, labels = stack_maps(cams, (2, 3))
    assert labels.tolist() == [2, 5]  # 0-based class index + 1
    assert maps[:, 0, 0].tolist() == [np.float32(0.2), np.float32(0.9)]


def test_an_image_without_classes_gives_empty_maps_of_its_size_and_an_all_background_mask():
    maps, labels = stack_maps({}, (4, 5))
    assert maps.shape == (0, 4, 5) and labels.shape == (0,)
    assert (pseudo_label(maps, labels, 0.25) == 0).all() and pseudo_label(maps, labels, 0.25).shape == (4, 5)

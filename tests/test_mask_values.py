"""bad_mask_values: the values of a label mask outside 0..C and 255 (its fast path skips clean masks)."""

import numpy as np

from l2g.data.layout import bad_mask_values


def test_bad_mask_values_by_hand():
    mask = np.array([[0, 3, 255], [7, 9, 7]], dtype=np.uint8)
    assert bad_mask_values(mask, 5) == [7, 9]
    assert bad_mask_values(mask, 9) == []
    assert bad_mask_values(np.array([[0, -1, 2, 300]]), 5) == [-1, 300]
    assert bad_mask_values(np.zeros((0, 0), np.uint8), 5) == []

"""One image reader, two documented views (l2g.data.images): ``stored`` for dataset images (aligned with
their masks), ``displayed`` for a user's photos. Where they differ, and that plain photos read alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from l2g.api import to_rgb_array
from l2g.data.errors import DatasetError
from l2g.data.images import read_image, read_user_image, to_rgb

EXIF_ORIENTATION = 0x0112


def _rgb(seed: int, size=(6, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_a_plain_photo_reads_the_same_in_both_views(tmp_path):
    for name in ("plain.jpg", "plain.png"):
        Image.fromarray(_rgb(0)).save(tmp_path / name)
        stored, displayed = read_image(tmp_path / name), read_image(tmp_path / name, "displayed")
        np.testing.assert_array_equal(stored, displayed)
        np.testing.assert_array_equal(stored, np.asarray(Image.open(tmp_path / name).convert("RGB")))


def test_exif_orientation_only_in_the_displayed_view(tmp_path):
    pixels = _rgb(1, (6, 10))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape, shown rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    stored = read_image(tmp_path / "rotated.jpg")
    displayed = read_user_image(tmp_path / "rotated.jpg")
    assert stored.shape == (6, 10, 3)  # aligned with a mask drawn on the stored pixels
    assert displayed.shape == (10, 6, 3)
    np.testing.assert_array_equal(displayed, np.rot90(stored, k=-1))


def test_alpha_is_dropped_when_stored_and_composited_on_white_when_displayed(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (read_image(tmp_path / "clear.png") == [200, 0, 0]).all()
    assert (read_image(tmp_path / "clear.png", "displayed") == 255).all()


def test_sixteen_bit_alike_and_float_refused_or_rescaled(tmp_path):
    deep = np.array([[0, 257 * 100, 65535, 128]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), read_user_image(tmp_path / "deep.png"))
    floats = Image.fromarray(np.array([[0.0, 2.0, 4.0]], np.float32))
    with pytest.raises(DatasetError, match="no known value range"):
        to_rgb(floats, "stored")
    np.testing.assert_array_equal(to_rgb(floats, "displayed")[0, :, 0], [0, 2, 4])
    with pytest.raises(ValueError, match="view must be one of"):
        to_rgb(floats, "sideways")


def test_the_api_converts_paths_pil_images_and_arrays_in_one_view(tmp_path):
    rgba = np.dstack([_rgb(2, (5, 5)), np.full((5, 5), 40, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    for view in ("stored", "displayed"):
        from_path = to_rgb_array(tmp_path / "half.png", view)
        np.testing.assert_array_equal(to_rgb_array(Image.open(tmp_path / "half.png"), view), from_path)
        np.testing.assert_array_equal(to_rgb_array(rgba, view), from_path)
    assert not np.array_equal(to_rgb_array(rgba, "stored"), to_rgb_array(rgba, "displayed"))

"""How the training global view is made (l2g.data.classification), pinned from the release's loaders as
the method notes describe them: image bicubic and saliency nearest to a short side (VOC), the short
side drawn uniformly in a range with both bounds (the no-saliency loader), the whole image to a square
(COCO). Expected values are computed by hand or from PIL's filter applied directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from l2g.config import Config, ConfigError, load_config
from l2g.data.classification import ClassificationDataset, draw_short_side, resize_short
from l2g.data.layout import Sample


def test_resize_short_sizes_and_nearest_replicates_pixels():
    # 375 x 500 (H x W) to short side 512: the long side is round(500 * 512 / 375) = round(682.67) = 683
    assert resize_short(np.zeros((375, 500), np.uint8), 512, "nearest").shape == (512, 683)
    assert resize_short(np.zeros((500, 375, 3), np.uint8), 512, "bicubic").shape == (683, 512, 3)
    # nearest, x2: every pixel becomes a 2x2 block, no new value appears
    checker = np.array([[0, 255], [255, 0]], np.uint8)
    expected = np.array([[0, 0, 255, 255], [0, 0, 255, 255], [255, 255, 0, 0], [255, 255, 0, 0]], np.uint8)
    np.testing.assert_array_equal(resize_short(checker, 4, "nearest"), expected)
    # bilinear and bicubic blend: levels between 0 and 255 appear; bicubic overshoots a sharp edge
    ramp = np.array([[0, 0, 255, 255]] * 4, np.uint8)
    assert set(np.unique(resize_short(ramp, 12, "bilinear"))) - {0, 255}
    np.testing.assert_array_equal(resize_short(ramp, 12, "bicubic"),
                                  np.asarray(Image.fromarray(ramp).resize((12, 12), Image.Resampling.BICUBIC)))
    with pytest.raises(ValueError, match="interpolation"):
        resize_short(ramp, 8, "lanczos")


def test_short_side_range_draws_integers_uniformly_with_both_bounds():
    rng = np.random.default_rng(0)
    draws = np.array([draw_short_side((448, 452), rng) for _ in range(5000)])
    assert set(draws.tolist()) == {448, 449, 450, 451, 452}  # integers, both bounds included
    counts = np.bincount(draws - 448)
    assert counts.min() > 0.17 * len(draws) and counts.max() < 0.23 * len(draws)  # 1/5 each
    assert draw_short_side(512, rng) == 512


def _dataset(tmp_path, settings: list[str], saliency: np.ndarray | None = None, size=(30, 40)) -> ClassificationDataset:
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    sal_path = None
    if saliency is not None:
        sal_path = tmp_path / "a_sal.png"
        Image.fromarray(saliency).save(sal_path)
    config = load_config(None, ["data.num_classes=2", "data.jitter=[0, 0, 0, 0]", "data.flip=false",
                                "views.patch_size=8", *settings])
    sample = Sample("a", tmp_path / "a.png", (0,), None, sal_path)
    return ClassificationDataset([sample], config, use_saliency=saliency is not None)


def _pixels(config: Config, item: dict) -> np.ndarray:
    """The global view back in uint8 levels (normalisation undone)."""
    mean = torch.tensor(config.data.mean)[:, None, None]
    std = torch.tensor(config.data.std)[:, None, None]
    return ((item["image"] * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("interpolation", "saliency_interpolation"), [("bicubic", "nearest"),
                                                                        ("bilinear", "bilinear")])
def test_global_view_uses_the_configured_filters(tmp_path, interpolation, saliency_interpolation):
    """Short side 30 -> 60, a 32 crop: the view is the crop of PIL's resize with the image filter, and a
    binary saliency map (stripes 4 px wide, so every crop has edges) stays binary under nearest, while
    bilinear makes intermediate values at its edges."""
    saliency = ((np.arange(40)[None, :] // 4 % 2) * 255).repeat(30, axis=0).astype(np.uint8)
    ds = _dataset(tmp_path, ["data.resize_short=60", "data.global_size=32",
                             f"data.resize_interpolation={interpolation}",
                             f"data.saliency_interpolation={saliency_interpolation}"], saliency)
    item = ds[0]
    image = np.asarray(Image.open(tmp_path / "a.png"))
    resized = np.asarray(Image.fromarray(image).resize((80, 60), getattr(Image.Resampling, interpolation.upper())))
    view = _pixels(ds.config, item)
    # the view is one of the 32 x 32 windows of the resized image (to the rounding of the normalisation)
    found = [(top, left) for top in range(60 - 31) for left in range(80 - 31)
             if np.abs(resized[top:top + 32, left:left + 32].astype(int) - view).max() <= 1]
    assert found
    values = set(np.unique(item["saliency"].numpy()).tolist())
    if saliency_interpolation == "nearest":
        assert values == {0.0, 1.0}
    else:
        assert values - {0.0, 1.0}


def test_short_side_range_is_drawn_per_sample_from_its_seeded_stream(tmp_path, monkeypatch):
    import l2g.data.classification as classification

    seen = []
    real = classification.resize_short
    monkeypatch.setattr(classification, "resize_short", lambda a, short, f: seen.append(short) or real(a, short, f))
    ds = _dataset(tmp_path, ["data.resize_short=[30, 60]", "data.global_size=24"])
    for epoch in range(12):
        ds.set_epoch(epoch)
        ds[0]
    first = list(seen)
    assert all(30 <= s <= 60 for s in first) and len(set(first)) > 3  # drawn anew per epoch
    seen.clear()
    for epoch in range(12):  # the same (seed, epoch, index) gives the same short side
        ds.set_epoch(epoch)
        ds[0]
    assert seen == first


def test_square_mode_resizes_the_whole_image_without_cropping(tmp_path):
    saliency = np.zeros((30, 40), np.uint8)
    saliency[:10] = 255
    ds = _dataset(tmp_path, ["data.resize_mode=square", "data.global_size=24", "data.resize_interpolation=bilinear",
                             "data.saliency_interpolation=nearest"], saliency)
    item = ds[0]
    image = np.asarray(Image.open(tmp_path / "a.png"))
    expected = np.asarray(Image.fromarray(image).resize((24, 24), Image.Resampling.BILINEAR))
    assert np.abs(_pixels(ds.config, item).astype(int) - expected).max() <= 1
    # the top third of the map is salient: rows 0..7 of 24 after a nearest resize
    sal = item["saliency"][0].numpy()
    np.testing.assert_array_equal(sal[:8], 1.0)
    np.testing.assert_array_equal(sal[8:], 0.0)


@pytest.mark.parametrize("setting", ["data.resize_short=[60, 30]", "data.resize_short=0",
                                     "data.resize_interpolation=area", "data.resize_mode=crop"])
def test_bad_resize_settings_are_config_errors(setting):
    with pytest.raises(ConfigError):
        load_config(None, [setting])

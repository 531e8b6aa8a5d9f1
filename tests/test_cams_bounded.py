"""Bounded attention-map inference: each image enters ``l2g cams`` at the training short side
(``cams.short_side``), its long side at most ``cams.max_side``, and the maps are written at its own size;
the paper presets keep the release's scales relative to the photo's own size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from l2g.cli import main
from l2g.config import load_config
from l2g.data.cam_files import load_cams
from l2g.errors import ConfigError
from l2g.method.attention_maps import (
    base_short_side,
    base_size,
    bounded_image,
    image_attention,
    multiscale_maps,
    normalized_class_maps,
    scaled_inputs,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = 48  # the tiny run's data.resize_short
SCALES = (0.5, 1.0, 1.5, 2.0)
BIG = (240, 320)  # (H, W) of the "large photo": 5x the training short side
BIG_ID, BIG_LABELS = "train_00002", "0 2"


def cli(*argv: object) -> None:
    assert main([str(a) for a in argv]) == 0


def test_base_size_brings_the_short_side_to_the_training_one_and_bounds_the_long_side():
    assert base_size(3024, 4032, 512, 1024) == (512, 683)  # a 12 MP landscape phone photo
    assert base_size(4032, 3024, 512, 1024) == (683, 512)  # portrait
    assert base_size(375, 500, 512, 1024) == (512, 683)  # smaller photos are brought up as training did
    assert base_size(1000, 4000, 512, 1024) == (256, 1024)  # a panorama: the long side bound wins
    assert base_size(3024, 4032, None, 1024) == (768, 1024)  # own size, bounded
    assert base_size(3024, 4032, None, None) == (3024, 4032)
    for size in ((375, 500), (500, 375), (480, 640), (333, 500)):  # VOC and COCO photos: the paper presets
        assert base_size(*size, None, 1024) == size


def test_bounded_image_is_the_photo_itself_at_its_own_size_else_a_pil_resize():
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert bounded_image(image, None, 1024) is image
    assert bounded_image(image, 30, None) is image
    resized = bounded_image(image, 12, None, "bicubic")
    assert resized.shape == (12, 16, 3) and resized.dtype == np.uint8
    expected = np.asarray(Image.fromarray(image).resize((16, 12), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resized, expected)


def test_the_short_side_follows_the_classification_stage(tmp_path):
    train = "cams.short_side=train"  # the library default; the synth presets keep each image's own size
    assert base_short_side(load_config("synth")) is None  # (their benchmark figures were measured so)
    assert base_short_side(load_config("synth", [train])) == 128  # data.resize_short
    assert base_short_side(load_config("pretrained_l2g")) == 512
    assert base_short_side(load_config("synth", [train, "data.resize_short=[448, 672]"])) == 560
    assert base_short_side(load_config("synth", [train, "data.resize_mode=square", "data.global_size=96"])) == 96
    assert base_short_side(load_config("synth", ["cams.short_side=200"])) == 200
    assert base_short_side(load_config("synth", ["cams.short_side=null"])) is None
    for bad in ("cams.short_side=big", "cams.short_side=0", "cams.max_side=16"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config("synth", [bad])


@pytest.mark.parametrize("preset", ["voc12_resnet38_l2g_shape", "voc12_resnet38_l2g", "voc12_resnet38_cam",
                                    "coco14_resnet38_l2g_shape"])
def test_the_paper_presets_keep_the_photos_own_size(preset):
    """The release runs its scales relative to the photo's own size: no VOC (500 px) or COCO (640 px) photo
    is resized before them."""
    config = load_config(preset)
    assert base_short_side(config) is None and config.cams.max_side >= 640


def test_out_size_upsamples_the_fused_maps_before_normalising():
    torch.manual_seed(0)
    net = _TinyNet()
    image = torch.randn(3, 12, 16)
    fused = multiscale_maps(net, image, SCALES, True, "bicubic", channels=[0, 2])
    up = torch.nn.functional.interpolate(fused[None], size=(30, 40), mode="bicubic", align_corners=False)[0]
    expected = normalized_class_maps(up, [0, 2])
    got = image_attention(net, image, [0, 2], SCALES, out_size=(30, 40))
    for c in (0, 2):
        assert got[c].shape == (30, 40)
        np.testing.assert_allclose(got[c], expected[c], atol=1e-6)
    same = image_attention(net, image, [0, 2], SCALES, out_size=(12, 16))  # its own size: nothing to do
    plain = image_attention(net, image, [0, 2], SCALES)
    for c in (0, 2):
        np.testing.assert_array_equal(same[c], plain[c])


class _TinyNet(torch.nn.Module):
    """Stride-4 stand-in for the network: ``net(x).maps``, 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)

    def forward(self, x):
        return type("Out", (), {"maps": self.conv(x)})()


@pytest.fixture(scope="module")
def tiny_run(tiny_root, tmp_path_factory) -> Path:
    """A finished tiny L2G run trained at short side 48. Read-only for the tests."""
    run = tmp_path_factory.mktemp("bounded") / "run"
    cli("train", "synth", "--run", run, "--set", f"data.root={tiny_root}", "--set", "data.num_classes=3",
        "--set", "method.name=l2g", "--set", "optim.epochs=1", "--set", "optim.batch_size=4", "--set", "model.width=4",
        "--set", f"data.resize_short={SHORT}", "--set", "data.global_size=40", "--set", "views.patch_size=24",
        "--set", "threads=1", "--set", "cams.short_side=train", "--quiet")
    return run


@pytest.fixture(scope="module")
def big_root(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset with one image (and its mask and saliency map) enlarged to 240x320, alone in split
    ``big``."""
    root = tmp_path_factory.mktemp("bigroot") / "synth"
    shutil.copytree(tiny_root, root)
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png"), ("saliency", ".png")):
        path = root / folder / f"{BIG_ID}{suffix}"
        with Image.open(path) as image:
            image.load()
        resample = Image.Resampling.BICUBIC if suffix == ".jpg" else Image.Resampling.NEAREST
        image.resize(BIG[::-1], resample).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    sets = root / "ImageSets" / "Segmentation"
    (sets / "big.txt").write_text(f"{BIG_ID}\n")
    (sets / "big_cls.txt").write_text(f"{BIG_ID} {BIG_LABELS}\n")
    return root


def _spy_inputs(monkeypatch) -> list[tuple[int, int]]:
    """The (h, w) of every batch the inference network gets in the next ``l2g cams``."""
    import l2g.stages.cams as cams_stage

    seen: list[tuple[int, int]] = []
    real = cams_stage.prepare_inference_net

    def prepare(net, precision):
        net = real(net, precision)
        net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
        return net

    monkeypatch.setattr(cams_stage, "prepare_inference_net", prepare)
    return seen


def _cams(run: Path, root: Path, out: Path, *settings: str) -> dict[int, np.ndarray]:
    extra = [arg for setting in settings for arg in ("--set", setting)]
    cli("cams", "--run", run, "--split", "big", "--out", out, "--set", f"data.root={root}",
        "--set", "data.workers=0", "--set", "cams.amp=off", *extra, "--quiet")
    return load_cams(out, BIG_ID).as_dict()


@pytest.mark.parametrize("resize", ["tensor_bilinear", "pil_bicubic"])
def test_a_large_photo_enters_at_the_training_short_side_and_its_maps_keep_its_size(tiny_run, big_root, tmp_path,
                                                                                    monkeypatch, resize):
    seen = _spy_inputs(monkeypatch)
    maps = _cams(tiny_run, big_root, tmp_path / "cams", f"cams.resize={resize}")
    base = (SHORT, SHORT * BIG[1] // BIG[0])  # 48 x 64: the training short side, the aspect ratio kept
    assert sorted(set(seen)) == sorted({(round(base[0] * s), round(base[1] * s)) for s in SCALES})
    assert max(max(size) for size in seen) == 2 * base[1]  # 128, not the photo's 640 at scale 2
    assert sorted(maps) == [0, 2] and all(m.shape == BIG for m in maps.values())
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps.values())


def test_max_side_bounds_the_long_side(tiny_run, big_root, tmp_path, monkeypatch):
    seen = _spy_inputs(monkeypatch)
    maps = _cams(tiny_run, big_root, tmp_path / "cams", "cams.short_side=null", "cams.max_side=100")
    assert max(max(size) for size in seen) == 200 and (75, 100) in seen  # 240x320 -> 75x100 at scale 1
    assert all(m.shape == BIG for m in maps.values())
    done = (tmp_path / "cams" / "l2g-done.json").read_text()
    assert '"short_side": null' in done and '"max_side": 100' in done


def test_the_release_path_is_unchanged_for_a_photo_within_the_bound(tiny_run, big_root, tmp_path, monkeypatch):
    """``short_side: null`` (the paper presets) on a photo below ``max_side``: the network sees the photo's own
    size times the scales, and the maps are what image_attention gives on those inputs, as before the bound."""
    from l2g.data.images import read_image
    from l2g.stages.cams import load_inference_net

    seen = _spy_inputs(monkeypatch)
    got = _cams(tiny_run, big_root, tmp_path / "cams", "cams.short_side=null", "cams.resize=pil_bicubic")
    assert sorted(set(seen)) == sorted({(round(BIG[0] * s), round(BIG[1] * s)) for s in SCALES})
    config = load_config(tiny_run / "config.yaml", [f"data.root={big_root}", "cams.resize=pil_bicubic"])
    net = load_inference_net(config, tiny_run / "checkpoints" / "final.pt", torch.device("cpu"))
    image = read_image(big_root / "JPEGImages" / f"{BIG_ID}.jpg", config.data.view)
    inputs = scaled_inputs(image, SCALES, config.data.mean, config.data.std, "pil_bicubic")
    expected = image_attention(net, inputs, [0, 2], SCALES, config.cams.flip, config.cams.upsample,
                               config.cams_use_softmax, size=BIG)
    for c in (0, 2):
        np.testing.assert_allclose(got[c], expected[c], atol=5e-4)  # float16 files

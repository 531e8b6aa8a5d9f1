"""Unit tests of the segmentation stage: CRF, networks (shapes, strides, frozen BN, pretrained loading,
checkpoint checks), training data, the loss, inference and reading arbitrary images."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

from l2g.config import ConfigError, CrfConfig, SegConfig, load_config
from l2g.data.images import read_user_image
from l2g.data.palette import save_mask
from l2g.data.splits import split_samples
from l2g.segmentation.crf import PRESETS, crf_params, dense_crf, refine_labels
from l2g.segmentation.data import SegmentationDataset, pseudo_mask_paths
from l2g.segmentation.inference import predict_probs, segment
from l2g.segmentation.loading import build_seg_model, load_pretrained, load_seg_checkpoint, model_spec
from l2g.segmentation.models import DeepLabSmall, vgg_fc_to_largefov
from l2g.stages.seg_train import segmentation_loss

SMALL = SegConfig(arch="deeplab_small", width=4, aspp_rates=(1, 2))


# --- CRF ---------------------------------------------------------------------------------------------------


def test_crf_params_preset_and_overrides():
    assert crf_params(CrfConfig(preset="deeplab")) == PRESETS["deeplab"]
    params = crf_params(CrfConfig(preset="psa", bi_w=2.5, iterations=3))
    assert (params.bi_w, params.iterations) == (2.5, 3)
    assert (params.bi_xy_std, params.bi_rgb_std) == (80.0, 13.0)  # the rest from the preset
    assert (PRESETS["deeplab"].bi_xy_std, PRESETS["deeplab"].bi_rgb_std, PRESETS["deeplab"].bi_w) == (67, 3, 4)


def _two_tone(height: int = 12, width: int = 16) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2 :] = 255
    return image


def test_dense_crf_fixes_an_uncertain_patch_and_keeps_edges():
    image = _two_tone()
    image.flags.writeable = False  # as decoded images are (np.asarray of a PIL image)
    probs = np.zeros((2, 12, 16), np.float32)
    probs[0, :, :8], probs[1, :, :8] = 0.9, 0.1  # left: class 0
    probs[0, :, 8:], probs[1, :, 8:] = 0.1, 0.9  # right: class 1
    probs[:, 4:7, 2:5] = np.array([0.45, 0.55], np.float32)[:, None, None]  # a weakly wrong patch on the left
    refined = dense_crf(image, probs, PRESETS["deeplab"])
    assert refined.shape == probs.shape
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, atol=1e-4)
    labels = refined.argmax(axis=0)
    assert (labels[:, :8] == 0).all()  # the patch follows its same-coloured neighbours
    assert (labels[:, 8:] == 1).all()  # and nothing crosses the colour edge
    assert probs.argmax(axis=0)[5, 3] == 1  # (it was wrong before)


def test_refine_labels_keeps_ignore_and_never_adds_classes():
    image = _two_tone()
    mask = np.zeros((12, 16), np.uint8)
    mask[:, 7:] = 3  # one column of the dark half mislabelled as class 3
    mask[0, 0] = 255
    refined = refine_labels(image, mask, PRESETS["irn"], gt_prob=0.7)
    assert refined.dtype == np.uint8 and refined.shape == mask.shape
    assert refined[0, 0] == 255
    assert set(np.unique(refined).tolist()) <= {0, 3, 255}
    assert (refined[1:, 7] == 0).all()  # the mislabelled dark column joins the dark side
    assert (refined[:, 8:] == 3).all()
    single = np.zeros((12, 16), np.uint8)
    single[2, 2] = 255
    np.testing.assert_array_equal(refine_labels(image, single, PRESETS["irn"]), single)


# --- networks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(33, 47), (40, 40), (17, 9)])
def test_small_deeplab_output_stride_8(height, width):
    model = build_seg_model(SMALL, 5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    assert out.shape == (2, 5, math.ceil(height / 8), math.ceil(width / 8))


@pytest.mark.parametrize("arch", ["deeplab_v1_vgg16", "deeplab_v2_resnet101", "deeplabv3_resnet101"])
def test_paper_networks_output_stride_8(arch):
    model = build_seg_model(SegConfig(arch=arch), 21).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 41, 25))
    assert out.shape == (1, 21, 6, 4)
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # from random weights (seg.pretrained null) batch norm always trains: frozen, it would normalise nothing
    assert all(p.requires_grad for m in frozen for p in m.parameters())
    if arch == "deeplab_v2_resnet101":  # DeepLab-v2 fine-tunes pretrained weights with frozen batch norm
        model = build_seg_model(SegConfig(arch=arch, pretrained="weights/resnet101.pth"), 21)
        frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert frozen and not any(p.requires_grad for m in frozen for p in m.parameters())


def test_frozen_batch_norm_stays_frozen_in_train_mode():
    model = build_seg_model(SegConfig(arch="deeplab_small", width=4, aspp_rates=(1,), freeze_bn=True), 3)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 16, 16) + 5)
    assert torch.equal(norms[0].running_mean, before)
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    unfrozen = build_seg_model(SMALL, 3).train()
    assert all(m.training for m in unfrozen.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_load_pretrained_backbone_by_name_and_records_the_file(tmp_path):
    source = DeepLabSmall(3, width=4, rates=(1, 2))
    path = tmp_path / "imagenet_small.pth"
    # An ImageNet-style file: backbone tensors only, without the "backbone." prefix, wrapped in "state_dict".
    torch.save({"state_dict": {k.removeprefix("backbone."): v for k, v in source.state_dict().items()
                               if k.startswith("backbone.")}}, path)
    model = build_seg_model(SMALL, 5)
    meta = load_pretrained(model, path, "imagenet")
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value), name
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["dataset"] == "imagenet"
    assert meta["tensors_loaded"] == len(source.backbone.state_dict())
    assert all(name.startswith("classifier.") for name in meta["not_loaded"])  # the head stays new


def test_load_pretrained_refuses_a_file_that_fits_nothing(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(7, 7)}, path)
    with pytest.raises(ValueError, match="no tensor of this file fits DeepLab-small"):
        load_pretrained(build_seg_model(SMALL, 3), path)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable weights file"):
        load_pretrained(build_seg_model(SMALL, 3), tmp_path / "garbage.pth")


def test_vgg_fully_connected_layers_are_decimated_like_deeplab():
    fc6 = torch.randint(-128, 128, (4096, 512 * 7 * 7), dtype=torch.int8)  # int8: 100 MB, not 400
    fc7 = torch.randint(-128, 128, (4096, 4096), dtype=torch.int8)
    state = vgg_fc_to_largefov({"classifier.0.weight": fc6, "classifier.0.bias": torch.arange(4096.0),
                                "classifier.3.weight": fc7, "classifier.3.bias": torch.arange(4096.0)})
    assert state["fc6.weight"].shape == (1024, 512, 3, 3)
    assert torch.equal(state["fc6.weight"][5], fc6[20].reshape(512, 7, 7)[:, [0, 3, 6]][:, :, [0, 3, 6]])
    assert state["fc7.weight"].shape == (1024, 1024, 1, 1)
    assert state["fc7.weight"][2, 3, 0, 0] == fc7[8, 12]
    assert state["fc6.bias"][3] == 12 and state["fc7.bias"][3] == 12


def test_checkpoint_of_another_architecture_or_class_count_is_named(tmp_path):
    path = tmp_path / "final.pt"
    model = build_seg_model(SMALL, 4)
    torch.save({"model": model.state_dict(), "spec": model_spec(SMALL, 4), "class_names": list("abcd")}, path)
    loaded, saved = load_seg_checkpoint(path, SMALL, 4)
    assert saved["class_names"] == list("abcd")
    with pytest.raises(ValueError, match="checkpoint predicts 4 classes.*config has 6"):
        load_seg_checkpoint(path, SMALL, 6)
    with pytest.raises(ValueError, match="checkpoint is a deeplab_small network.*deeplab_v2_resnet101"):
        load_seg_checkpoint(path, SegConfig(arch="deeplab_v2_resnet101"), 4)
    with pytest.raises(ValueError, match="width=4.*seg.width=8"):
        load_seg_checkpoint(path, SegConfig(arch="deeplab_small", width=8, aspp_rates=(1, 2)), 4)
    torch.save({"model": {}, "method": "cam"}, tmp_path / "cls.pt")
    with pytest.raises(ValueError, match="classification-stage checkpoint"):
        load_seg_checkpoint(tmp_path / "cls.pt", SMALL, 4)


def test_seg_config_is_validated():
    with pytest.raises(ConfigError, match="seg.arch"):
        load_config(None, ["seg.arch=unet"])
    with pytest.raises(ConfigError, match="seg.crf.preset"):
        load_config(None, ["seg.crf.preset=fancy"])
    with pytest.raises(ConfigError, match="scale_range"):
        load_config(None, ["seg.scale_range=[1.5, 0.5]"])
    assert load_config(None, []).seg.pseudo_crf.preset == "irn"  # hard labels: IRN's settings by default


# --- data, loss, inference -----------------------------------------------------------------------------------


def test_training_pairs_are_cropped_padded_and_reproducible(tiny_root, tmp_path):
    config = load_config(None, [f"data.root={tiny_root}", "data.num_classes=3", "seg.crop_size=64",
                                "seg.scale_range=[0.5, 0.5]"])
    samples = split_samples(config, "train", need_masks=True)
    dataset = SegmentationDataset(samples, [s.mask_path for s in samples], config, seed=3)
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
    # Images are 40-56 px, halved: at most 28 px of the 64 px crop are image, the rest is ignore padding.
    mask = item["mask"].numpy()
    assert (mask == 255).mean() > 0.75
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 255}
    assert (item["image"].numpy()[:, mask == 255] == 0).all()  # padded with the mean colour (0 once normalised)
    assert torch.equal(dataset[0]["mask"], item["mask"])  # same (seed, epoch, index): same pair


def test_training_pairs_change_with_the_epoch(tiny_root):
    config = load_config(None, [f"data.root={tiny_root}", "data.num_classes=3", "seg.crop_size=24"])
    samples = split_samples(config, "train", need_masks=True)
    dataset = SegmentationDataset(samples, [s.mask_path for s in samples], config)
    first = [dataset[i]["image"] for i in range(4)]
    dataset.set_epoch(1)
    assert not all(torch.equal(dataset[i]["image"], first[i]) for i in range(4))


def test_pseudo_mask_folder_problems_are_listed(tiny_root, tmp_path):
    config = load_config(None, [f"data.root={tiny_root}", "data.num_classes=3"])
    samples = split_samples(config, "train")
    save_mask(tmp_path / f"{samples[0].image_id}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError) as error:
        pseudo_mask_paths(samples, tmp_path)
    message = str(error.value)
    assert f"{len(samples)} problem(s)" in message
    assert "5x5" in message and "pseudo mask missing" in message


def test_loss_ignores_255_and_an_all_ignored_batch_is_zero():
    model = build_seg_model(SMALL, 3)
    images = torch.randn(2, 3, 16, 16)
    loss = segmentation_loss(model, images, torch.full((2, 16, 16), 255))["loss"]
    assert loss.item() == 0.0 and loss.requires_grad
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[:, :8] = 255
    assert math.isfinite(segmentation_loss(model, images, masks)["loss"].item())


def test_multiscale_flip_probabilities_and_size_limit():
    model = build_seg_model(SMALL, 3).eval()
    probs = predict_probs(model, torch.randn(3, 20, 28), (0.5, 1.0, 1.5), flip=True)
    assert probs.shape == (3, 20, 28)
    torch.testing.assert_close(probs.sum(0), torch.ones(20, 28))
    config = load_config(None, ["seg.max_side=32", "seg.test_flip=false"])
    image = np.random.default_rng(0).integers(0, 256, (40, 130, 3), dtype=np.uint8)
    result = segment(model, image, config, torch.device("cpu"))
    assert result.mask.shape == (40, 130)  # full size out
    assert max(result.probs.shape[1:]) == 32  # the network saw the downscaled image
    assert result.scale == pytest.approx(10 / 40)


# --- images for predict --------------------------------------------------------------------------------------


def test_user_images_of_every_mode(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((6, 8), 77, np.uint8)).save(grey)
    assert read_user_image(grey).shape == (6, 8, 3) and (read_user_image(grey) == 77).all()

    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[:, :4, 3], rgba[:, 4:, 3] = 200, 255, 0  # left opaque red-ish, right transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb = read_user_image(tmp_path / "rgba.png")
    assert tuple(rgb[0, 0]) == (200, 0, 0) and tuple(rgb[0, 7]) == (255, 255, 255)

    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    np.testing.assert_array_equal(read_user_image(tmp_path / "deep.png")[0, :, 0], [0, 100, 255])


def test_bad_user_images_give_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        read_user_image(tmp_path / "notes.txt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_user_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError, match="no such image"):
        read_user_image(tmp_path / "missing.jpg")


def test_overlay_blends_foreground_only():
    from l2g.stages.predict import overlay

    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [0, 2]], np.uint8)  # VOC colours: 1 = (128, 0, 0), 2 = (0, 128, 0)
    blended = overlay(image, mask)
    assert tuple(blended[0, 0]) == (100, 100, 100) and tuple(blended[1, 0]) == (100, 100, 100)
    assert tuple(blended[0, 1]) == (114, 50, 50) and tuple(blended[1, 1]) == (50, 114, 50)


def test_decompression_bomb_is_refused_with_a_message(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 900 px > 2 x the limit: PIL refuses to decode
    with pytest.raises(ValueError, match="big.png: image too large to decode safely"):
        read_user_image(tmp_path / "big.png")

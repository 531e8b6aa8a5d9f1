"""The fast multi-scale + flip attention maps (l2g.method.attention_maps) against the straightforward computation
of the release's test script: one pass per scale and mirror image, each map upsampled on its own, the
mirrored ones flipped back, averaged, then ReLU and max normalisation class by class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from l2g.method.attention_maps import (
    class_attention,
    image_attention,
    multiscale_maps,
    normalized_class_maps,
    scaled_inputs,
    scaled_size,
)
from l2g.models.attention_net import AttentionNet
from l2g.models.small_cnn import SmallCNN

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def net() -> AttentionNet:
    torch.manual_seed(0)
    return AttentionNet(SmallCNN(width=4), NUM_CLASSES).eval()


def straightforward(net, image, scales, flip, upsample, softmax) -> np.ndarray:
    height, width = image.shape[1:]
    passes = []
    with torch.no_grad():
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            for mirrored in (False, True) if flip else (False,):
                x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
                x = x.flip(-1) if mirrored else x
                maps = net(x).maps
                maps = torch.softmax(maps, dim=1) if softmax else maps
                maps = F.interpolate(maps, size=(height, width), mode=upsample, align_corners=False)
                passes.append((maps.flip(-1) if mirrored else maps)[0].numpy())
    return np.mean(passes, axis=0)


def normalise(mean: np.ndarray, labels) -> dict[int, np.ndarray]:
    out = {}
    for c in labels:
        positive = np.maximum(mean[c], 0)
        out[c] = positive / (positive.max() + 1e-8)
    return out


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("upsample", ["bicubic", "bilinear"])
def test_multiscale_maps_equal_the_straightforward_average(net, flip, softmax, upsample):
    image = torch.randn(3, 37, 50, generator=torch.Generator().manual_seed(1))  # odd sizes: uneven scaling
    scales = (0.5, 1.0, 1.5, 2.0)
    expected = straightforward(net, image, scales, flip, upsample, softmax)
    fast = multiscale_maps(net, image, scales, flip, upsample, softmax).numpy()
    assert fast.shape == (NUM_CLASSES + 1, 37, 50)
    np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=1e-5)


def test_selected_channels_are_those_of_the_full_map_in_the_given_order(net):
    image = torch.randn(3, 29, 33, generator=torch.Generator().manual_seed(2))
    full = multiscale_maps(net, image, (0.75, 1.25), softmax=True)
    some = multiscale_maps(net, image, (0.75, 1.25), softmax=True, channels=[3, 0])
    np.testing.assert_allclose(some.numpy(), full[[3, 0]].numpy(), rtol=1e-6, atol=1e-6)


def test_image_attention_equals_the_release_normalisation_of_labelled_classes(net):
    image = torch.randn(3, 41, 30, generator=torch.Generator().manual_seed(3))
    scales = (0.5, 1.0, 1.5, 2.0)
    expected = normalise(straightforward(net, image, scales, True, "bicubic", False), (1, 3))
    got = image_attention(net, image, (1, 3), scales)
    assert sorted(got) == [1, 3]
    for c in (1, 3):
        assert got[c].dtype == np.float32 and got[c].shape == (41, 30)
        np.testing.assert_allclose(got[c], expected[c], rtol=1e-4, atol=1e-5)
    via_full_map = class_attention(multiscale_maps(net, image, scales), (1, 3))
    for c in (1, 3):
        np.testing.assert_allclose(via_full_map[c], got[c], rtol=1e-5, atol=1e-6)


def test_image_without_labels_runs_no_pass():
    def never(_):
        raise AssertionError("the network must not run for an image without labelled classes")

    assert image_attention(never, torch.zeros(3, 8, 8), (), (1.0,)) == {}


def test_normalized_class_maps_by_hand():
    maps = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[0.5, 0.25], [0.0, -3.0]]])
    got = normalized_class_maps(maps, (5, 2))
    np.testing.assert_allclose(got[5], [[0.0, 0.5], [1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(got[2], [[1.0, 0.5], [0.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="2 maps for 1 labels"):
        normalized_class_maps(maps, (1,))


def test_scaled_size_rounds_like_python_and_the_release():
    assert scaled_size(375, 500, 1.5) == (562, 750)  # round(562.5) = 562 (to even)
    assert scaled_size(375, 500, 0.5) == (188, 250)  # round(187.5) = 188
    assert scaled_size(3, 3, 0.1) == (1, 1)


def test_pil_bicubic_inputs_are_the_release_loader_s_images():
    """cams.resize=pil_bicubic: per scale the 8-bit image resized with PIL bicubic, then /255 and normalised."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    inputs = scaled_inputs(image, (0.5, 1.0, 2.0), mean, std, "pil_bicubic")
    assert [tuple(x.shape) for x in inputs] == [(3, 12, 16), (3, 23, 31), (3, 46, 62)]
    for x, (h, w) in zip(inputs, [(12, 16), (23, 31), (46, 62)], strict=True):
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
        expected = (resized - np.array(mean, np.float32)) / np.array(std, np.float32)
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    tensor = scaled_inputs(image, (0.5, 1.0, 2.0), mean, std, "tensor_bilinear")
    assert tuple(tensor.shape) == (3, 23, 31)
    torch.testing.assert_close(tensor, inputs[1])
    with pytest.raises(ValueError, match="resize must be one of"):
        scaled_inputs(image, (1.0,), mean, std, "nearest")


@pytest.mark.parametrize("flip", [True, False])
def test_maps_from_per_scale_inputs_equal_the_straightforward_passes(net, flip):
    """image_attention on pil_bicubic inputs: each input (and its mirror image) through the network on its own,
    every map upsampled bicubic to the image size, flipped back, averaged, normalised."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (29, 38, 3), dtype=np.uint8)
    scales = (0.5, 1.0, 1.5)
    inputs = scaled_inputs(image, scales, (0.5,) * 3, (0.25,) * 3, "pil_bicubic")
    passes = []
    with torch.no_grad():
        for x in inputs:
            for mirrored in (False, True) if flip else (False,):
                out = net((x.flip(-1) if mirrored else x)[None]).maps
                out = F.interpolate(out, size=(29, 38), mode="bicubic", align_corners=False)
                passes.append((out.flip(-1) if mirrored else out)[0].numpy())
    expected = normalise(np.mean(passes, axis=0), (0, 2))
    got = image_attention(net, inputs, (0, 2), scales, flip=flip)
    for c in (0, 2):
        np.testing.assert_allclose(got[c], expected[c], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="2 scaled inputs for 3 scales"):
        image_attention(net, inputs[:2], (0,), scales)
    with pytest.raises(ValueError, match="need the image size"):
        image_attention(net, inputs[:1], (0,), (0.5,))
    assert image_attention(net, inputs[:1], (0,), (0.5,), size=(29, 38))[0].shape == (29, 38)

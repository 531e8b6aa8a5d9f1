"""Attention maps at test time: multi-scale + flip passes of one network, averaged, normalised.

Same result as the release's test script (one pass per scale and mirror image, each output map
upsampled bicubic to the image size on its own, mirrored maps flipped back, average, ReLU, per-class
max normalisation), computed with less work:

- the plain and mirrored image of a scale go through the network as one batch of two;
- the mirrored map is flipped back and added to the plain one at the network's resolution, and the sum
  is upsampled once per scale: resizing is linear and commutes with a horizontal flip (the sampling
  grid of ``align_corners=False`` is symmetric), so this equals upsampling both and adding them, up to
  float rounding;
- only the channels that are kept (the image's labelled classes) are upsampled;
- averaging, ReLU and normalisation stay on the device, with one transfer to the host at the end, and
  no per-class Python loop.

The network's input at each scale (``cams.resize``):

- ``pil_bicubic`` (the release; the paper presets): the 8-bit RGB image is resized with PIL's bicubic
  filter to each scale, then normalised (:func:`scaled_inputs`, run in DataLoader workers by ``l2g cams``);
  the mirror image is the flipped normalised input, which equals normalising the flipped 8-bit image.
- ``tensor_bilinear`` (the library default): the normalised image is resized bilinearly on the device
  (one decode and one host-to-device copy per image). Inputs differ from the release's by up to ~0.3
  normalised units at scales other than 1 (docs/benchmarks.md states the effect on pseudo-label mIoU).

The image the scales apply to (``cams.short_side``, ``cams.max_side``; :func:`bounded_image`): by default
the photo is first resized (``data.resize_interpolation``) so that its short side is the training short side
(as mmsegmentation's test pipeline: the training scale, then the ratios), its long side at most
``cams.max_side``; the fused maps are then upsampled to the photo's own size (``out_size`` of
:func:`image_attention`), so a 12 MP photo costs about what a VOC photo does. ``short_side: null`` (the
release, the paper presets) keeps the photo's own size, still bounded by ``max_side``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from l2g.config import Config
from l2g.data.classification import PIL_FILTERS, normalize
from l2g.engine.multiscale import average_passes
from l2g.method.registry import MAP_RESIZES
from l2g.method.targets import normalize_attention


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of the image at ``scale``: each side rounded to the nearest integer (Python's ``round``, as
    the release), at least 1."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def base_short_side(config: Config) -> int | None:
    """The short side ``cams.short_side`` asks for: a number as set, ``None`` (the photo's own size) as set, and
    ``"train"`` the classification stage's: ``data.resize_short`` (the middle of a ``[low, high]`` range,
    rounded), or ``data.global_size`` with ``data.resize_mode: square``."""
    short, data = config.cams.short_side, config.data
    if short != "train":
        return short
    if data.resize_mode == "square":
        return data.global_size
    if isinstance(data.resize_short, int):
        return data.resize_short
    low, high = data.resize_short
    return round((low + high) / 2)


def base_size(height: int, width: int, short_side: int | None, max_side: int | None) -> tuple[int, int]:
    """(h, w) of the image the scales apply to: the short side brought to ``short_side`` (``None``: kept), the
    long side rounded as the training resize rounds it (:func:`l2g.data.classification.resize_short`); then,
    where the long side exceeds ``max_side`` (``None``: no bound), both sides scaled down to it."""
    h, w = height, width
    if short_side is not None and min(h, w) != short_side:
        h, w = (short_side, max(1, round(w * short_side / h))) if h <= w else (max(1, round(h * short_side / w)),
                                                                                short_side)
    if max_side is not None and max(h, w) > max_side:
        h, w = (max(1, round(h * max_side / w)), max_side) if h <= w else (max_side, max(1, round(w * max_side / h)))
    return h, w


def bounded_image(image: np.ndarray, short_side: int | None, max_side: int | None,
                  interpolation: str = "bilinear") -> np.ndarray:
    """The (H, W, 3) uint8 image resized (PIL, ``interpolation``) to :func:`base_size`; the image itself
    where that is its own size (the paper presets on VOC and COCO photos)."""
    height, width = image.shape[:2]
    h, w = base_size(height, width, short_side, max_side)
    if (h, w) == (height, width):
        return image
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(picture.resize((w, h), PIL_FILTERS[interpolation]))


def scaled_inputs(image: np.ndarray, scales: Sequence[float], mean, std,
                  resize: str = "pil_bicubic") -> list[torch.Tensor] | torch.Tensor:
    """The network inputs of an (H, W, 3) uint8 image, on the host.

    ``pil_bicubic``: one normalised (3, h, w) float tensor per scale, the 8-bit image resized with PIL
    bicubic first (the release's test loader). ``tensor_bilinear``: the normalised (3, H, W) image alone;
    :func:`multiscale_maps` resizes it on the device.
    """
    if resize == "tensor_bilinear":
        return normalize(image, mean, std)
    if resize != "pil_bicubic":
        raise ValueError(f"resize must be one of {', '.join(MAP_RESIZES)}, got {resize!r}")
    height, width = image.shape[:2]
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    inputs = []
    for scale in scales:
        h, w = scaled_size(height, width, scale)
        resized = image if (h, w) == (height, width) else np.asarray(
            picture.resize((w, h), Image.Resampling.BICUBIC))
        inputs.append(normalize(resized, mean, std))
    return inputs


def _scale_inputs(image: torch.Tensor | Sequence[torch.Tensor], scales, size: tuple[int, int] | None):
    """((H, W), one (1, 3, h, w) input per scale) from a normalised image or per-scale inputs."""
    if isinstance(image, torch.Tensor):
        height, width = image.shape[1:]
        inputs = (F.interpolate(image[None], size=scaled_size(height, width, s), mode="bilinear",
                                align_corners=False) for s in scales)
        return (height, width), inputs
    if len(image) != len(scales):
        raise ValueError(f"{len(image)} scaled inputs for {len(scales)} scales")
    if size is None:
        if 1.0 not in scales:
            raise ValueError("per-scale inputs without scale 1.0 need the image size (size=(H, W))")
        size = tuple(image[list(scales).index(1.0)].shape[1:])
    return tuple(size), (x[None] for x in image)


@torch.no_grad()
def multiscale_maps(net, image: torch.Tensor | Sequence[torch.Tensor], scales, flip: bool = True,
                    upsample: str = "bicubic", softmax: bool = False, channels: Sequence[int] | None = None,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """Average of the network's (C+1)-channel maps over scales (and their mirror images).

    ``image``: the normalised (3, H, W) image, resized bilinearly to each scale here (``tensor_bilinear``),
    or one normalised (3, h, w) input per scale (``pil_bicubic``: :func:`scaled_inputs`), with ``size`` =
    (H, W), the size of the maps (default: the scale-1.0 input's). Each scale's map is brought to (H, W)
    with ``upsample`` (bicubic, as the release). Returns (C+1, H, W), or (len(channels), H, W) with
    ``channels``: only those channels (in that order) are upsampled and returned.
    ``softmax=True`` averages the channel softmax G (Eq. 5) instead of the raw scores: a network trained
    only through attention transfer learns G, and its raw scores have no fixed zero (softmax ignores a
    per-pixel offset), so ReLU on them can erase every class. The softmax is taken over all C + 1
    channels before any is dropped.
    """
    (height, width), inputs = _scale_inputs(image, scales, size)
    index = None

    def run_pass(batch: torch.Tensor) -> torch.Tensor:
        nonlocal index
        if index is None and channels is not None:
            index = torch.as_tensor(list(channels), dtype=torch.long, device=batch.device)
        raw = net(batch).maps.float()
        raw = torch.softmax(raw, dim=1) if softmax else raw
        return raw.index_select(1, index) if index is not None else raw

    def to_image_size(summed: torch.Tensor) -> torch.Tensor:  # flipped back before resizing: same result
        return F.interpolate(summed[None], size=(height, width), mode=upsample, align_corners=False)[0]

    if not len(scales):
        raise ValueError("multiscale_maps needs at least one scale")
    return average_passes(inputs, flip, run_pass, to_image_size)


def normalized_class_maps(maps: torch.Tensor, labels: Sequence[int]) -> dict[int, np.ndarray]:
    """``{class: map}`` from (len(labels), H, W) maps (one channel per label, in order): ReLU and
    per-channel max normalisation on the device, one transfer to the host."""
    labels = [int(c) for c in labels]
    if maps.shape[0] != len(labels):
        raise ValueError(f"{maps.shape[0]} maps for {len(labels)} labels")
    if not labels:
        return {}
    normalised = normalize_attention(maps[None])[0].float().cpu().numpy()
    return {c: normalised[i] for i, c in enumerate(labels)}


def class_attention(maps: torch.Tensor, labels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """ReLU + per-class max normalisation of the averaged map, only the labelled classes kept.

    ``maps`` (C+1, H, W). Returns ``{0-based class index: float32 (H, W) map in [0, 1]}`` (the file
    format of ``l2g cams``).
    """
    index = torch.as_tensor([int(c) for c in labels], dtype=torch.long, device=maps.device)
    return normalized_class_maps(maps.index_select(0, index), labels)


def image_attention(net, image: torch.Tensor | Sequence[torch.Tensor], labels: Sequence[int], scales,
                    flip: bool = True, upsample: str = "bicubic", softmax: bool = False,
                    size: tuple[int, int] | None = None,
                    out_size: tuple[int, int] | None = None) -> dict[int, np.ndarray]:
    """The attention maps of one image's labelled classes: :func:`multiscale_maps` restricted to the
    labelled channels, then :func:`normalized_class_maps`. What ``l2g cams`` saves per image. ``image``
    and ``size`` as for :func:`multiscale_maps`; ``out_size`` (H, W): the photo's own size where ``image``
    is a resized copy of it (:func:`bounded_image`), the fused maps upsampled to it with ``upsample``
    before ReLU and normalisation (default: the maps' size)."""
    labels = [int(c) for c in labels]
    if not labels:
        return {}
    maps = multiscale_maps(net, image, scales, flip, upsample, softmax, channels=labels, size=size)
    if out_size is not None and tuple(out_size) != tuple(maps.shape[-2:]):
        maps = F.interpolate(maps[None], size=tuple(out_size), mode=upsample, align_corners=False)[0]
    return normalized_class_maps(maps, labels)

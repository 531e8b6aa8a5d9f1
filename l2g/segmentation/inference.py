"""Segmenting one image: multi-scale + flip softmax averaging, optional dense CRF, size limit.

Probabilities are averaged over every scale of ``seg.test_scales`` and its horizontal flip (when
``seg.test_flip``), each pass upsampled bilinearly to the image size first (the averaging is
:func:`l2g.engine.multiscale.average_passes`, shared with the attention maps). An image whose long side
exceeds ``seg.max_side`` is downscaled to that side for the network (and the CRF), and the mask is
upscaled back to the original size with nearest-neighbour: memory and time stay bounded, at the cost
of detail thinner than the downscaling factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from l2g.config import Config
from l2g.data.classification import normalize
from l2g.engine.multiscale import average_passes
from l2g.segmentation.crf import crf_params, dense_crf


@dataclass
class Segmentation:
    mask: np.ndarray  # (H, W) uint8 labels at the image's size
    probs: np.ndarray  # (K, h, w) float32 probabilities at the size the network saw (h, w <= max_side)
    scale: float  # h / H: 1.0 unless the image was downscaled for being larger than seg.max_side


@torch.no_grad()
def predict_probs(model: torch.nn.Module, image: torch.Tensor, scales: tuple[float, ...], flip: bool) -> torch.Tensor:
    """(K, H, W) softmax probabilities of a normalised (3, H, W) image, averaged over scales and flips."""
    height, width = image.shape[1:]

    def scaled_inputs():
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            yield F.interpolate(image[None], size=size, mode="bilinear", align_corners=False) if scale != 1 \
                else image[None]

    def run_pass(batch: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(model(batch), size=(height, width), mode="bilinear", align_corners=False)
        return logits.float().softmax(dim=1)

    return average_passes(scaled_inputs(), flip, run_pass)


def segment(model: torch.nn.Module, image: np.ndarray, config: Config, device: torch.device,
            crf: bool | None = None) -> Segmentation:
    """Segment an (H, W, 3) uint8 RGB image with the inference settings of ``config.seg``; ``crf``
    overrides ``seg.crf.enabled``."""
    seg = config.seg
    height, width = image.shape[:2]
    scale = min(1.0, seg.max_side / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    tensor = normalize(small, config.data.mean, config.data.std).to(device)
    probs = predict_probs(model, tensor, tuple(seg.test_scales), seg.test_flip).cpu().numpy()
    if seg.crf.enabled if crf is None else crf:
        probs = dense_crf(small, probs, crf_params(seg.crf))
    mask = probs.argmax(axis=0).astype(np.uint8)
    if scale < 1.0:
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    return Segmentation(mask, probs, small.shape[0] / height)

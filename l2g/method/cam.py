"""Attention maps at test time: multi-scale + flip passes of one network, averaged, normalised."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from l2g.method.targets import normalize_attention


@torch.no_grad()
def multiscale_maps(net, image: torch.Tensor, scales, flip: bool = True, upsample: str = "bicubic",
                    softmax: bool = False) -> torch.Tensor:
    """Average of the network's (C+1)-channel maps over scales (and their mirror images).

    ``image`` (3, H, W) normalised. Each pass's map is upsampled to (H, W) (bicubic, as the release);
    the mirrored pass is run in the same batch as the plain one and flipped back. Returns (C+1, H, W).
    ``softmax=True`` averages the channel softmax G (Eq. 5) instead of the raw scores: a network trained
    only through attention transfer learns G, and its raw scores have no fixed zero (softmax ignores a
    per-pixel offset), so ReLU on them can erase every class.
    """
    height, width = image.shape[1:]
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        raw = net(batch).maps.float()
        raw = torch.softmax(raw, dim=1) if softmax else raw
        maps = F.interpolate(raw, size=(height, width), mode=upsample, align_corners=False)
        if flip:
            maps = torch.stack([maps[0], maps[1].flip(-1)])
        summed = maps.sum(0)
        total = summed if total is None else total + summed
    return total / (len(scales) * (2 if flip else 1))


def class_attention(maps: torch.Tensor, labels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """ReLU + per-class max normalisation of the averaged map, only the labelled classes kept.

    Returns ``{0-based class index: float32 (H, W) map in [0, 1]}`` (the file format of ``l2g cams``).
    """
    normalised = normalize_attention(maps[None])[0]
    return {int(c): normalised[c].cpu().numpy().astype(np.float32) for c in labels}

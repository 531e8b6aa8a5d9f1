"""Pixel correlation module (PCM, from SEAM), as used by the L2G release.

Features of two backbone stages and the image (resized to the map) are projected, concatenated and
projected again; the L2-normalised per-pixel embeddings give an affinity ``ReLU(f^T f)``, normalised
over the source pixels, that propagates the class map: ``F_pcm[:, j] = sum_i F[:, i] * aff[i, j]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelCorrelation(nn.Module):
    def __init__(self, in_channels: tuple[int, int], dims: tuple[int, int], out_dim: int) -> None:
        super().__init__()
        self.project_a = nn.Conv2d(in_channels[0], dims[0], 1, bias=False)
        self.project_b = nn.Conv2d(in_channels[1], dims[1], 1, bias=False)
        self.embed = nn.Conv2d(3 + dims[0] + dims[1], out_dim, 1, bias=False)

    def forward(
        self, cam: torch.Tensor, images: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        batch, channels, height, width = cam.shape
        small = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=True)
        # Features are detached as in SEAM: the PCM learns its embedding without reshaping the backbone.
        joint = torch.cat([small, self.project_a(feats[0].detach()), self.project_b(feats[1].detach())], dim=1)
        embedding = F.normalize(self.embed(joint).flatten(2), dim=1)  # (B, D, HW)
        affinity = torch.relu(embedding.transpose(1, 2) @ embedding)  # (B, HW, HW)
        affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)
        return (cam.flatten(2) @ affinity).view(batch, channels, height, width)

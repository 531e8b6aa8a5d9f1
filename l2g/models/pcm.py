"""Pixel correlation module (PCM, from SEAM), as used by the L2G release.

Features of two backbone stages (detached, as in the release) and the image (resized to the map) are
projected, concatenated and projected again to a per-pixel embedding ``f``. Each embedding is divided by
``(||f|| + 1e-5)`` (the release's formula: a near-zero embedding stays near zero instead of being blown up
to unit length); the affinity ``aff[i, j] = ReLU(f_i . f_j)`` is normalised over the source pixels ``i``
(``/ (sum_i aff[i, j] + 1e-5)``) and propagates the class map: ``F_pcm[:, j] = sum_i F[:, i] * aff[i, j]``.

The affinity has (h w)^2 entries per image: 138 M (550 MB in float32) for a 500x375 image at inference
scale 2.0. It is never built whole: :func:`propagate` computes it for chunks of target pixels ``j`` (each
column's normalisation needs only that column), which gives the same result as the whole matrix to
float32 rounding, gradients included, with a bounded temporary memory (``chunk_elements``). The
propagation runs in float32 even under autocast (fp16 would round the 1e-5 terms and the column sums).

Initialisation (the release's): both projections Kaiming-normal (fan-in, ReLU gain), the embedding
Xavier-uniform with gain 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-5  # f / (||f|| + NORM_EPS), as the release
AFFINITY_EPS = 1e-5  # aff / (column sum + AFFINITY_EPS), as the release
CHUNK_ELEMENTS = 1 << 24  # affinity entries per chunk (batch x source pixels x target pixels): 64 MB in float32


def normalize_embedding(embedding: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """``f / (||f||_2 + eps)`` along dim 1 (the release's normalisation, not ``F.normalize``'s clamp)."""
    return embedding / (torch.linalg.vector_norm(embedding, dim=1, keepdim=True) + eps)


def propagate(cam: torch.Tensor, embedding: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``cam @ aff`` with ``aff = ReLU(f^T f)`` normalised over its source pixels (dim 1).

    ``cam`` (B, K, N) and ``embedding`` (B, D, N), already normalised, N = h * w pixels. Returns (B, K, N).
    The affinity is built for chunks of target pixels (columns), at most ``chunk_elements`` entries at a
    time (B x N x chunk); every column is computed exactly as in the whole matrix.
    """
    batch, _, pixels = embedding.shape
    chunk = max(1, min(pixels, chunk_elements // max(1, batch * pixels)))
    source = embedding.transpose(1, 2)  # (B, N, D)
    outputs = []
    for start in range(0, pixels, chunk):
        affinity = torch.relu(source @ embedding[:, :, start : start + chunk])  # (B, N, chunk)
        affinity = affinity / (affinity.sum(dim=1, keepdim=True) + AFFINITY_EPS)
        outputs.append(cam @ affinity)  # (B, K, chunk)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


class PixelCorrelation(nn.Module):
    def __init__(self, in_channels: tuple[int, int], dims: tuple[int, int], out_dim: int,
                 chunk_elements: int = CHUNK_ELEMENTS) -> None:
        super().__init__()
        self.project_a = nn.Conv2d(in_channels[0], dims[0], 1, bias=False)
        self.project_b = nn.Conv2d(in_channels[1], dims[1], 1, bias=False)
        self.embed = nn.Conv2d(3 + dims[0] + dims[1], out_dim, 1, bias=False)
        self.chunk_elements = chunk_elements
        nn.init.kaiming_normal_(self.project_a.weight)
        nn.init.kaiming_normal_(self.project_b.weight)
        nn.init.xavier_uniform_(self.embed.weight, gain=4.0)

    def forward(
        self, cam: torch.Tensor, images: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """The propagated map F_pcm (B, K, h, w), float32, of the class map ``cam`` (B, K, h, w)."""
        batch, channels, height, width = cam.shape
        small = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=True)
        # The backbone features are detached as in the release (and SEAM): the PCM's projections learn
        # without reshaping the backbone through them; the class map itself is not detached.
        joint = torch.cat([small.to(cam.dtype), self.project_a(feats[0].detach()).to(cam.dtype),
                           self.project_b(feats[1].detach()).to(cam.dtype)], dim=1)
        embedding = self.embed(joint).flatten(2)  # (B, D, HW)
        with torch.autocast(cam.device.type, enabled=False):
            embedding = normalize_embedding(embedding.float())
            out = propagate(cam.flatten(2).float(), embedding, self.chunk_elements)
        return out.view(batch, channels, height, width)

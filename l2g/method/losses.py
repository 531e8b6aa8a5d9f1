"""Losses of the classification stage (paper Eq. 1, 4, 6, 7).

Every loss is computed in float32, whatever the dtype of its inputs (float16 or bfloat16 under autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from l2g.method.registry import TRANSFER_LOSSES


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 / Eq. 4: multi-label sigmoid cross-entropy averaged over views and classes.

    ``logits`` (V, C) are the pooled class scores of V views (global view, or the N local views of
    each image with the image's labels repeated), ``labels`` (V, C) multi-hot.
    """
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def attention_transfer_loss(global_crops: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 5-6: softmax over the C + 1 channels of the global map's crops, mean squared error to A.

    ``global_crops`` (V, C+1, h, w) are raw global-network scores cut at each view's box;
    ``targets`` (V, C+1, h, w) the local targets (attention, or shape targets for Eq. 7). The mean is
    over all elements, as in the release (the paper's 1/N sum of squared norms up to a constant).
    """
    if global_crops.shape != targets.shape:
        raise ValueError(f"global crops {tuple(global_crops.shape)} vs targets {tuple(targets.shape)}")
    probabilities = torch.softmax(global_crops.float(), dim=1)
    return F.mse_loss(probabilities, targets.float())


# --- transfer losses that keep their gradient where the softmax saturates (options beside Eq. 6) ------


def simplex_projection(targets: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The Euclidean projection of each target column onto the probability simplex, along ``dim``.

    This is the softmax output that Eq. 6 drives the global network to: ``argmin_p ||p - t||^2`` over
    probability vectors ``p``. For the targets L2G builds (non-negative, summing to at most 1: one channel
    survives keep-the-max) it is ``t + (1 - sum(t)) / K`` on every channel, e.g. ``[0.6, 0, 0]`` ->
    ``[0.733, 0.133, 0.133]``; for columns summing to more than 1 it is ``max(t - theta, 0)`` with the
    ``theta`` that makes the sum 1 (sort-based algorithm of Held, Wolfe and Crowder / Duchi et al. 2008).
    """
    t = targets.float().movedim(dim, -1)
    k = t.shape[-1]
    ranked = t.sort(dim=-1, descending=True).values
    excess = ranked.cumsum(dim=-1) - 1.0
    index = torch.arange(1, k + 1, device=t.device, dtype=t.dtype)
    support = (ranked - excess / index > 0).sum(dim=-1, keepdim=True).clamp(min=1)  # rho, >= 1 always
    theta = excess.gather(-1, support - 1) / support.to(t.dtype)
    return (t - theta).clamp(min=0).movedim(-1, dim)


def soft_transfer_loss(global_crops: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Attention transfer as a soft cross-entropy with Eq. 6's fixed point (``method.transfer_loss: kl``).

    ``KL(q || softmax(F))`` per pixel, where ``q`` is :func:`simplex_projection` of the targets (the
    softmax Eq. 6 converges to), averaged over pixels and multiplied by ``2 / K^2`` (K = C + 1 channels).

    Why: Eq. 6's gradient with respect to the scores is ``(2 / K) J^T (p - t)`` per pixel with the
    softmax Jacobian ``J = diag(p) - p p^T``; once one channel holds nearly all of ``p`` every entry of
    ``J`` is nearly 0, so a global network that is confidently wrong (e.g. background everywhere after
    its first steps on a pretrained backbone) gets almost no gradient to follow the local targets. This
    loss's gradient is ``(2 / K^2) (p - q)``: the same minimiser, the same gradient as Eq. 6 at a uniform
    softmax (where ``J = (I - 1 1^T / K) / K``), hence the same meaning of ``lambda``, and a gradient
    that stays of order ``(p - q)`` however saturated the softmax is.
    """
    if global_crops.shape != targets.shape:
        raise ValueError(f"global crops {tuple(global_crops.shape)} vs targets {tuple(targets.shape)}")
    channels = global_crops.shape[1]
    q = simplex_projection(targets.detach(), dim=1)
    log_p = torch.log_softmax(global_crops.float(), dim=1)
    kl = (torch.xlogy(q, q) - q * log_p).sum(dim=1)
    return kl.mean() * (2.0 / channels**2)


def transfer_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The transfer loss called ``name`` (``method.transfer_loss``, a key of TRANSFER_LOSSES)."""
    if name not in TRANSFER_LOSSES:
        raise ValueError(f"unknown transfer loss {name!r} (choose from {', '.join(TRANSFER_LOSSES)})")
    return globals()[TRANSFER_LOSSES[name]]

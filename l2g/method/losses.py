"""Losses of the classification stage (paper Eq. 1, 4, 6, 7).

Every loss is computed in float32, whatever the dtype of its inputs (float16 or bfloat16 under autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

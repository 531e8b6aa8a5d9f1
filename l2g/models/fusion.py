"""Inference-only rewrites of a trained network that compute the same function with fewer passes over memory.

:func:`fold_batchnorm` folds each eval-mode BatchNorm into the convolution right before it (inside one
``nn.Sequential``, the Conv-BN-activation blocks of the small CNN, EfficientNet-Lite and torchvision's
backbones): ``BN(W * x + b) = (s W) * x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``. Equal
in exact arithmetic; in float32 the results differ by rounding only. Pre-activation blocks (ResNet-38:
BN before the convolution) have nothing to fold and are left as they are.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``Conv2d`` followed by a ``BatchNorm2d`` in the same ``nn.Sequential`` into one
    convolution, in place (the BatchNorm becomes ``nn.Identity``). ``module`` must be in eval mode: a
    training BatchNorm normalises with the batch's statistics, which no fixed weight can express.
    Returns how many were folded."""
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    folded = 0
    for child in module.children():
        folded += fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded

"""What every backbone is: a module mapping an image batch to stride-8 features (:class:`Backbone`),
returning a :class:`BackboneOutput`, built on :class:`FreezableBackbone` (frozen first stages and
BatchNorm, what loading weights needs). The backbones themselves and their table are in
:mod:`l2g.models.registry`; :func:`l2g.models.backbones.build_backbone` builds one by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


@dataclass
class BackboneOutput:
    features: torch.Tensor  # (B, out_channels, H / 8, W / 8)
    intermediates: tuple[torch.Tensor, torch.Tensor]  # two earlier stride-8 maps, for the PCM


class Backbone(Protocol):
    out_channels: int
    intermediate_channels: tuple[int, int]
    stride: int

    def __call__(self, images: torch.Tensor) -> BackboneOutput: ...

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Parameters loaded from pretrained weights (their lr multiplier is x1/x2, not x10/x20)."""
        ...


class FreezableBackbone(nn.Module):
    """Base of the backbones: frozen first stages and BatchNorm, and what loading weights needs.

    Subclasses build their layers, then call :meth:`freeze`. Parameters whose names start with one of
    ``frozen_prefixes`` never train; with ``freeze_bn`` every BatchNorm keeps its statistics and affine
    parameters (eval mode even while the network trains). ``loaded_from`` is set by
    :func:`l2g.models.weights.load_pretrained`; only then are the trainable parameters "pretrained".
    """

    stride = 8
    checkpoint_stages = False  # set per instance by the classification stage
    frozen_prefixes: tuple[str, ...] = ()
    # File keys that belong to the pretraining task, not to the backbone (ImageNet classifiers): dropped.
    classifier_prefixes: tuple[str, ...] = ()

    def __init__(self, freeze_bn: bool = True) -> None:
        super().__init__()
        self.freeze_bn = freeze_bn
        self.loaded_from: str | None = None

    def freeze(self) -> None:
        for name, param in self.named_parameters():
            if name.startswith(self.frozen_prefixes):
                param.requires_grad_(False)
        for module in self._frozen_norms():
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
        self.train(self.training)

    def _frozen_norms(self) -> list[nn.Module]:
        return [module for name, module in self.named_modules() if isinstance(module, _BatchNorm)
                and (self.freeze_bn or f"{name}.".startswith(self.frozen_prefixes))]

    def run_stage(self, stage: nn.Module, x: torch.Tensor):
        """``stage(x)``; with ``checkpoint_stages`` (``runtime.activation_checkpointing``) and gradients on,
        recomputed in backward instead of keeping its activations (exact: frozen BatchNorm, random state kept)."""
        if self.checkpoint_stages and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def train(self, mode: bool = True) -> FreezableBackbone:
        super().train(mode)
        for module in self._frozen_norms():
            module.eval()  # frozen statistics, also while the rest trains
        return self

    def pretrained_parameters(self) -> list[nn.Parameter]:
        if self.loaded_from is None:
            return []  # random initialisation: every parameter is "new" (x10/x20)
        return [param for param in self.parameters() if param.requires_grad]

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Rename a weights file's keys to this module's (identity unless a file uses other names)."""
        return state


def set_activation_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Turn :meth:`FreezableBackbone.run_stage`'s recomputation on or off for every backbone in ``module``."""
    for backbone in module.modules():
        if isinstance(backbone, FreezableBackbone):
            backbone.checkpoint_stages = enabled

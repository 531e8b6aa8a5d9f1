"""The four training methods behind one small base class: what networks they train, what loss one
batch gives, and which network produces attention maps at test time.

- ``cam``: one network, classification loss on the global view (Eq. 1) — the CAM baseline.
- ``local``: the local network alone, classification loss on the local views (Eq. 4); its maps are
  used at test time.
- ``l2g``: local network (Eq. 4) teaching a global network by attention transfer (Eq. 6).
- ``l2g_shape``: the same with shape transfer (Eq. 7) from saliency maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from l2g.config import Config
from l2g.method.diagnostics import transfer_diagnostics
from l2g.method.losses import classification_loss, transfer_loss
from l2g.method.registry import METHODS
from l2g.method.roi import cut_global_map
from l2g.method.targets import attention_targets, shape_targets, view_presence
from l2g.method.views import crop_resize_nearest, crop_views
from l2g.models.attention_net import AttentionNet, build_attention_net


@dataclass
class Transfer:
    """What attention transfer compares in one batch (V = batch size x views per image)."""

    targets: torch.Tensor  # (V, C+1, h, w) local targets A (or shape targets), detached
    crops: torch.Tensor  # (V, C+1, h, w) raw global scores cut at the views' boxes (softmax -> G)
    labels: torch.Tensor  # (V, C) the labels each view inherits
    loss_cls: torch.Tensor  # local classification loss (Eq. 4)
    global_logits: torch.Tensor  # (B, C) pooled global scores (for the logged global classification loss)


class Method(nn.Module):
    """Networks + the loss of one batch. Subclasses name the network used for inference; what the stages
    need to know of a method without building it is its row of :data:`l2g.method.registry.METHODS`."""

    uses_saliency = False  # its batches carry saliency maps
    transfers = False  # it trains a global network by attention transfer (what l2g transfer-fit measures)

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.data.num_classes

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """A dict whose ``"loss"`` entry is optimised; the other entries are logged."""
        raise NotImplementedError

    def set_progress(self, iteration: int, iterations_per_epoch: int, total: int) -> None:
        """Told the iteration before each training step (for schedules inside the loss); a no-op here."""

    def inference_net(self) -> AttentionNet:
        raise NotImplementedError


class CamMethod(Method):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.net = build_attention_net(config.model, self.num_classes)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        loss = classification_loss(self.net(batch["image"]).logits, batch["labels"])
        return {"loss": loss, "loss_cls": loss.detach()}

    def inference_net(self) -> AttentionNet:
        return self.net


class LocalMethod(Method):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.local = build_attention_net(config.model, self.num_classes)

    def local_forward(self, batch: dict):
        views = crop_views(batch["image"], batch["boxes"])
        labels = batch["labels"].repeat_interleave(batch["boxes"].shape[1], dim=0)
        out = self.local(views)
        return out, labels, classification_loss(out.logits, labels)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        _, _, loss = self.local_forward(batch)
        return {"loss": loss, "loss_cls": loss.detach()}

    def inference_net(self) -> AttentionNet:
        return self.local


class L2GMethod(LocalMethod):
    transfers = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        shared = self.local.backbone if config.model.shared_backbone else None
        self.global_net = build_attention_net(config.model, self.num_classes, backbone=shared)
        self.uses_saliency = METHODS[config.method.name].shape_transfer  # l2g or l2g_shape
        self.transfer_loss = transfer_loss(config.method.transfer_loss)
        self.lam_factor = 1.0 if config.method.lam_warmup_epochs <= 0 else 0.0

    def set_progress(self, iteration: int, iterations_per_epoch: int, total: int) -> None:
        """Called before every step (by ``l2g train``): sets the warm-up factor of lambda.

        ``method.lam_warmup_epochs = E`` ramps the transfer weight linearly from ``lambda / (E x
        iterations per epoch)`` at the first iteration to ``lambda`` after E epochs. Why: at the start
        the local network has learnt only the most discriminative parts, so its targets are background
        almost everywhere (docs/synthetic-benchmark.md); pushed hard towards them, the global network
        becomes sure of background everywhere before the local network has anything else to teach.
        """
        warmup = self.config.method.lam_warmup_epochs * iterations_per_epoch
        self.lam_factor = 1.0 if warmup <= 0 else min(1.0, (iteration + 1) / warmup)

    def transfer(self, batch: dict, local_step: tuple | None = None) -> Transfer:
        """One batch's attention transfer: the local network's targets and the global map's crops.
        ``local_step``: :meth:`local_forward`'s result when it has been computed already (a run that trains
        several global networks from one local network, :mod:`l2g.stages.train_shared`)."""
        method = self.config.method
        local_out, labels, loss_cls = local_step if local_step is not None else self.local_forward(batch)
        presence = view_presence(local_out.logits, method.view_gate)
        targets = attention_targets(local_out.maps, labels, method.background, presence=presence)
        size = tuple(targets.shape[2:])
        if self.uses_saliency:  # shape transfer (Eq. 7)
            saliency = crop_resize_nearest(batch["saliency"], batch["boxes"], size)
            targets = shape_targets(targets, saliency, self.config.shape_threshold, method.shape_form,
                                    method.shape_background)
        global_out = self.global_net(batch["image"])
        crops = cut_global_map(global_out.maps, batch["boxes"], size, self.global_net.backbone.stride)
        return Transfer(targets, crops, labels, loss_cls, global_out.logits)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.transfer_losses(batch, self.transfer(batch))[1]

    def losses_from(self, batch: dict, local_step: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`transfer_losses` given the local network's :meth:`local_forward` on ``batch``."""
        return self.transfer_losses(batch, self.transfer(batch, local_step))

    def transfer_losses(self, batch: dict, step: Transfer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The global network's part of the loss (what is added to the local classification loss, Eq. 4)
        and the logged terms (whose ``"loss"`` is the whole loss of this method)."""
        method = self.config.method
        loss_kt = self.transfer_loss(step.crops, step.targets)
        loss_cls_global = classification_loss(step.global_logits, batch["labels"])
        global_part = method.lam * self.lam_factor * loss_kt
        if method.global_cls_weight:
            global_part = global_part + method.global_cls_weight * loss_cls_global
        logged = {
            "loss": step.loss_cls + global_part,
            "loss_cls": step.loss_cls.detach(),
            "loss_kt": loss_kt.detach(),
            # trained only with method.global_cls_weight > 0 (the paper, Sec. 4.2, logs it without training it)
            "loss_cls_global": loss_cls_global.detach(),
            **transfer_diagnostics(step.crops, step.targets),  # kt_stuck, kt_contrast: l2g.method.diagnostics
        }
        if method.lam_warmup_epochs > 0:
            logged["kt_weight"] = torch.tensor(method.lam * self.lam_factor)
        return global_part, logged

    def inference_net(self) -> AttentionNet:
        return self.global_net


def method_class(name: str) -> type[Method]:
    """The Method subclass that trains ``method.name = name`` (its row of METHODS names it)."""
    if name not in METHODS:
        raise ValueError(f"method.name = {name!r}: unknown method (one of {', '.join(METHODS)})")
    return globals()[METHODS[name].cls]


def build_method(config: Config) -> Method:
    return method_class(config.method.name)(config)


"""Straightforward references that follow the authors' release step by step (see
/work/shared/reference/method-notes.md), written for this benchmark from that description, not from the
authors' code. Each computes what the library computes, the way the release's scripts do it, so that the
benchmark compares two ways of doing the same work:

- :class:`ReferenceL2GStep`: one classification-stage training step of L2G with shape transfer (release
  semantics): views cut in a per-image Python loop, the local and the global network as two separate
  forward passes, targets built view by view and class by class, RoIs listed in a Python loop, fp32.
- :func:`reference_attention`: the test script's 8-pass multi-scale + flip inference: batch 1, eight
  sequential passes, every pass's map upsampled (bicubic) to the image size on its own and moved to the
  host, averaged in numpy, then ReLU and max normalisation class by class.
- :func:`reference_sweep`: the release's threshold evaluation: one 8-bit PNG per class and image (written
  once beforehand, as the release's test script does), reread for every threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from l2g.compat.torchvision_ops import roi_align_op


class ReferenceL2GStep:
    """The release's L2G training step (shape transfer, release form: ``B * S`` always, bg_thr 0.001).

    ``local_net`` and ``global_net`` are two separate :class:`~l2g.models.attention_net.AttentionNet`
    instances; ``optimizer`` covers both. ``lam`` weights the transfer loss.
    """

    def __init__(self, local_net, global_net, optimizer: torch.optim.Optimizer, lam: float = 10.0,
                 shape_threshold: float = 0.001, roi_align: Callable | None = None) -> None:
        self.local_net = local_net
        self.global_net = global_net
        self.optimizer = optimizer
        self.lam = lam
        self.shape_threshold = shape_threshold
        # torchvision's roi_align, as the release (``roi_align(input, rois, size, scale, ratio, aligned)``)
        self.roi_align = roi_align or roi_align_op

    def loss(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
             saliency: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch: local classification + lam * shape transfer."""
        batch, n = boxes.shape[:2]
        box_list = boxes.tolist()
        label_list = labels.tolist()  # the release's labels arrive on the host from the data loader
        num_classes = labels.shape[1]
        views, view_labels, saliency_crops = [], [], []
        for b in range(batch):
            for x1, y1, x2, y2 in box_list[b]:
                views.append(images[b, :, y1:y2, x1:x2])
                saliency_crops.append(saliency[b, :, y1:y2, x1:x2])
                view_labels.append(label_list[b])
        local_out = self.local_net(torch.stack(views))
        local_labels = torch.tensor(view_labels, dtype=local_out.logits.dtype, device=images.device)
        loss_cls = F.multilabel_soft_margin_loss(local_out.logits, local_labels)

        local_maps = local_out.maps.detach()
        height, width = local_maps.shape[2:]
        targets = []
        for v in range(local_maps.shape[0]):
            channels = []
            for c in range(num_classes + 1):
                channel = torch.relu(local_maps[v, c])
                channel = channel / (channel.max() + 1e-8)
                if c < num_classes and view_labels[v][c] == 0:
                    channel = torch.zeros_like(channel)
                channels.append(channel)
            stacked = torch.stack(channels)
            winner = stacked.argmax(dim=0)
            kept = torch.zeros_like(stacked)
            for c in range(num_classes + 1):
                kept[c] = torch.where(winner == c, stacked[c], torch.zeros_like(stacked[c]))
            sal = F.interpolate(saliency_crops[v][None], size=(height, width), mode="nearest")[0, 0]
            binary = (kept > self.shape_threshold).float()
            shaped = [binary[c] * sal for c in range(num_classes)] + [binary[num_classes] * (1.0 - sal)]
            targets.append(torch.stack(shaped))
        targets = torch.stack(targets)

        global_out = self.global_net(images)
        rois = []
        for b in range(batch):
            for x1, y1, x2, y2 in box_list[b]:
                rois.append([float(b), float(x1), float(y1), float(x2), float(y2)])
        rois = torch.tensor(rois, dtype=global_out.maps.dtype, device=images.device)
        stride = self.global_net.backbone.stride
        crops = self.roi_align(global_out.maps, rois, (height, width), 1.0 / stride, -1, False)
        loss_kt = F.mse_loss(torch.softmax(crops, dim=1), targets)
        # The release computes the global classification loss for its log only.
        F.multilabel_soft_margin_loss(global_out.logits, labels.to(global_out.logits.dtype)).detach()
        return loss_cls + self.lam * loss_kt

    def step(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
             saliency: torch.Tensor) -> torch.Tensor:
        loss = self.loss(images, labels, boxes, saliency)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


@torch.no_grad()
def reference_attention(net, image: torch.Tensor, labels: Sequence[int], scales: Sequence[float],
                        upsample: str = "bicubic") -> dict[int, np.ndarray]:
    """The release's multi-scale + flip attention maps of one image (raw scores, as the release).

    ``image`` (3, H, W) normalised, on the network's device. Returns ``{class: float32 (H, W) map}``.
    """
    height, width = image.shape[1:]
    passes = []
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        for flip in (False, True):
            scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
            if flip:
                scaled = scaled.flip(-1)
            maps = F.interpolate(net(scaled).maps.float(), size=(height, width), mode=upsample,
                                 align_corners=False)
            if flip:
                maps = maps.flip(-1)
            passes.append(maps[0].cpu().numpy())
    mean = np.mean(np.stack(passes), axis=0)
    out = {}
    for c in labels:
        positive = np.maximum(mean[c], 0)
        out[int(c)] = (positive / (positive.max() + 1e-8)).astype(np.float32)
    return out


def write_class_pngs(cams: dict[int, np.ndarray], folder: Path, image_id: str) -> None:
    """The release's test-script output: one 8-bit PNG per labelled class, ``<id>_<class>.png``."""
    for c, m in cams.items():
        Image.fromarray(np.round(m * 255).astype(np.uint8)).save(folder / f"{image_id}_{c}.png")


def reference_sweep(items: Sequence[tuple[str, Path, tuple[int, ...]]], png_folder: Path, num_classes: int,
                    thresholds: Sequence[float]) -> list[float]:
    """mIoU per threshold, the release's way: for every threshold, every image's ground truth and
    class PNGs are read again and one confusion matrix is accumulated.

    ``items`` are ``(image id, mask path, labelled classes)``; ``num_classes`` counts background.
    """
    mious = []
    for threshold in thresholds:
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        for image_id, mask_path, labels in items:
            gt = np.asarray(Image.open(mask_path), dtype=np.int64)
            scores = [np.full(gt.shape, threshold, dtype=np.float32)]
            for c in labels:
                scores.append(np.asarray(Image.open(png_folder / f"{image_id}_{c}.png"), np.float32) / 255.0)
            lookup = np.array([0, *[c + 1 for c in labels]], dtype=np.int64)
            prediction = lookup[np.argmax(np.stack(scores), axis=0)]
            valid = gt != 255
            confusion += np.bincount(gt[valid] * num_classes + prediction[valid],
                                     minlength=num_classes**2).reshape(num_classes, num_classes)
        tp = np.diag(confusion).astype(np.float64)
        union = confusion.sum(0) + confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / union
        mious.append(float(np.nanmean(iou)))
    return mious

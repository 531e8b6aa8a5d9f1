"""References that follow the authors' release step by step, written for this benchmark from the description of
the release's scripts (/work/shared/reference/method-notes.md), not from the authors' code, and without l2g's
network, target, RoI or loss code (their networks are :mod:`benchmarks.reference_nets`). Each computes what
l2g computes, the way the release's scripts do it, so the benchmark compares two ways of doing the same work
and its correctness checks catch a drift of l2g from the release:

- :class:`ReferenceL2GStep`: one training step of L2G with shape transfer (the VOC script: ``B * S`` always,
  bg_thr 0.001): the local views cut image by image, the local and the global network as two forward
  passes, the targets built the release's way (ReLU, max normalisation, absent classes zeroed image by
  image, keep-the-max by a per-pixel arg-sort over the channels and a one-hot product, the saliency crop
  resized nearest), torchvision's ``roi_align`` at 1/8, softmax + MSE x lambda, the local multi-label soft
  margin loss, fp32.
- :func:`reference_attention`: the test script's multi-scale + flip inference: per scale the 8-bit image
  resized with PIL bicubic and normalised (its data loader), the mirror image the flipped tensor; batch 1,
  eight sequential passes, every pass's (C+1)-channel map upsampled bicubic to the image size on its own and
  copied to the host, mirrored maps flipped back in numpy, averaged, negative values set to 0, each channel
  divided by its max + 1e-8, the labelled classes kept.
- :func:`reference_sweep`: the release's threshold evaluation: one 8-bit PNG per class and image (written
  once beforehand, as the test script does), and for every threshold every image's ground truth and
  class PNGs read again and one confusion matrix accumulated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from l2g.compat.torchvision_ops import roi_align_op  # torchvision's roi_align (the release's), loaded on CPU

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ReferenceL2GStep:
    """The release's L2G + shape transfer step. ``local_net`` and ``global_net`` are two
    :class:`~benchmarks.reference_nets.ReleaseNet`; ``optimizer`` covers both; ``lam`` weights the transfer."""

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
        batch, n = boxes.shape[:2]
        box_list = boxes.tolist()
        crops, saliency_crops = [], []
        for b in range(batch):  # the release's loader cuts the crops of each image
            for x1, y1, x2, y2 in box_list[b]:
                crops.append(images[b, :, y1:y2, x1:x2])
                saliency_crops.append(saliency[b, :, y1:y2, x1:x2])
        crop_images = torch.stack(crops)
        crop_saliency = torch.stack(saliency_crops)
        local_labels = labels.repeat_interleave(n, dim=0)

        global_map, _ = self.global_net(images)
        local_map, local_logits = self.local_net(crop_images)

        target = local_map.clone().detach()
        target[target < 0] = 0
        peak = torch.max(torch.max(target, dim=3)[0], dim=2)[0]
        target = target / (peak[:, :, None, None] + 1e-8)
        for b in range(batch):  # classes the image does not have: zeroed in all of its views
            absent = torch.nonzero(labels[b] == 0)
            target[b * n : (b + 1) * n, absent] = 0
        views, channels, h, w = target.shape
        flat = target.permute(1, 0, 2, 3).reshape(channels, -1)
        order = torch.argsort(-flat, dim=0)  # per pixel, the channels from the largest down
        one_hot = torch.eye(channels, device=flat.device)[order[0]].transpose(0, 1)
        target = (one_hot * flat).reshape(channels, views, h, w).permute(1, 0, 2, 3)
        binary = (target > self.shape_threshold).float()
        sal = F.interpolate(crop_saliency, (h, w))  # nearest
        target = target.clone()
        target[:, :-1] = binary[:, :-1] * sal.repeat(1, channels - 1, 1, 1)
        target[:, -1] = binary[:, -1] * (1 - sal[:, 0])

        rois = torch.tensor([[float(b), *map(float, box)] for b in range(batch) for box in box_list[b]],
                            dtype=global_map.dtype, device=images.device)
        aligned = self.roi_align(global_map, rois, (h, w), 1.0 / self.global_net.backbone.stride, -1, False)
        loss_kd = F.mse_loss(F.softmax(aligned, dim=1), target) * self.lam
        loss_cls = F.multilabel_soft_margin_loss(local_logits, local_labels)
        return loss_kd + loss_cls

    def step(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
             saliency: torch.Tensor) -> torch.Tensor:
        loss = self.loss(images, labels, boxes, saliency)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def release_inputs(image: np.ndarray, scales: Sequence[float], device: torch.device) -> list[torch.Tensor]:
    """The release's test loader: for each scale the PIL-bicubic resized image, normalised, then its mirror
    image (the flipped tensor): 2 x len(scales) (1, 3, h, w) tensors."""
    picture = Image.fromarray(image)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    out = []
    for s in scales:
        size = (int(round(picture.size[0] * s)), int(round(picture.size[1] * s)))
        scaled = np.asarray(picture.resize(size, resample=Image.BICUBIC), dtype=np.float32)
        tensor = (torch.from_numpy(scaled).permute(2, 0, 1) / 255.0 - mean) / std
        out += [tensor[None].to(device), torch.flip(tensor, [-1])[None].to(device)]
    return out


@torch.no_grad()
def reference_attention(net, image: np.ndarray, labels: Sequence[int], scales: Sequence[float],
                        device: torch.device) -> dict[int, np.ndarray]:
    """The release's attention maps of one (H, W, 3) uint8 image (raw scores): ``{class: float32 (H, W)}``."""
    height, width = image.shape[:2]
    passes = []
    for m, x in enumerate(release_inputs(image, scales, device)):
        cam, _ = net(x)
        cam = F.interpolate(cam, (height, width), mode="bicubic", align_corners=False)[0]
        cam = cam.cpu().numpy()
        if m % 2 == 1:
            cam = np.flip(cam, axis=-1)
        passes.append(cam)
    mean = np.mean(passes, axis=0)
    mean[mean < 0] = 0
    normalised = mean / (np.max(mean, (1, 2), keepdims=True) + 1e-8)
    return {int(c): normalised[c].astype(np.float32) for c in labels}


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

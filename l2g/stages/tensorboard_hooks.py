"""The training stages' TensorBoard hooks (``runtime.tensorboard``; see :mod:`l2g.engine.tensorboard`).

:func:`training_hooks` gives a stage the trainer's ``on_log`` / ``on_epoch_end`` callbacks: every log
record as scalars and, when the stage passes a network and images (the classification stage), the
attention maps of a few fixed training images at every epoch end, as the network sees them then. The
images are one per class (the first image holding it) and then those with the most classes
(:func:`l2g.report.examples.choose_examples`, unscored), the same at every epoch so they can be compared.
Only rank 0 writes; other ranks get no-op hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from l2g.config import Config
from l2g.data.layout import Sample
from l2g.engine import distributed

SNAPSHOT_MAX_SIDE = 320  # attention snapshots are a quick look: one scale, no flip, at most this size


@dataclass
class TrainingHooks:
    on_log: Callable[[dict], None] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    close: Callable[[], None] = field(default=lambda: None)


def snapshot_samples(samples: list[Sample], count: int) -> list[Sample]:
    from l2g.report.examples import choose_examples

    return [e.item for e in choose_examples(samples, lambda s: s.labels, lambda s: s.image_id, count)]


def attention_snapshots(net: torch.nn.Module, samples: list[Sample], config: Config, device: torch.device
                        ) -> list[tuple[str, np.ndarray]]:
    """(tag, overlay) per sample: the max of its labelled classes' maps over the image, at one scale."""
    from l2g.data.classification import normalize
    from l2g.data.images import read_image
    from l2g.method.attention_maps import image_attention
    from l2g.report.plots import attention_overlay

    pictures = []
    was_training = net.training
    net.eval()
    try:
        for sample in samples:
            image = read_image(sample.image_path, sample.view)
            scale = min(1.0, SNAPSHOT_MAX_SIDE / max(image.shape[:2]))
            if scale < 1.0:
                size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            tensor = normalize(image, config.data.mean, config.data.std).to(device)
            cams = image_attention(net, tensor, sample.labels, (1.0,), False, config.cams.upsample,
                                   config.cams_use_softmax)
            maps = np.stack([cams[c] for c in sorted(cams)]) if cams else np.zeros((0, *image.shape[:2]), np.float32)
            pictures.append((f"attention/{sample.image_id}", attention_overlay(image, maps)))
    finally:
        net.train(was_training)
    return pictures


def training_hooks(config: Config, run_dir: Path, global_batch: int,
                   on_log: Callable[[dict], None] | None = None,
                   inference_net: Callable[[], torch.nn.Module] | None = None,
                   samples: list[Sample] | None = None) -> TrainingHooks:
    """Hooks for :class:`l2g.engine.trainer.Trainer`: ``on_log`` (the stage's own, called first) plus the
    TensorBoard scalars when ``runtime.tensorboard``; attention images per epoch with ``inference_net``
    (called at each epoch end) and ``samples``."""
    if not (config.runtime.tensorboard and distributed.current().is_main):
        return TrainingHooks(on_log=on_log)
    from l2g.engine.tensorboard import TENSORBOARD_DIR, TensorBoardLogger

    logger = TensorBoardLogger(run_dir / TENSORBOARD_DIR, global_batch)
    shown = snapshot_samples(samples or [], config.runtime.tensorboard_images) if inference_net else []

    def log(record: dict) -> None:
        if on_log is not None:
            on_log(record)
        logger.log_record(record)

    def epoch_end(epoch: int) -> None:
        if not shown or logger.last_iteration is None:
            return
        net = inference_net()
        device = next(net.parameters()).device
        logger.log_images(attention_snapshots(net, shown, config, device), logger.last_iteration)

    return TrainingHooks(log, epoch_end if shown else None, logger.close)

"""Stage 5: train a DeepLab on pseudo masks into a run folder.

Writes ``config.yaml``, ``train_log.jsonl``, ``init.json`` (how the network was initialised: pretrained
file, its sha256 and dataset, or from scratch), ``checkpoints/last.pt`` after every epoch (continue with
``resume=True``), then ``checkpoints/final.pt`` and ``train_metrics.json``.

Recipe (DeepLab-v2): cross-entropy with 255 ignored, logits upsampled bilinearly to the crop; SGD with
momentum, poly learning rate; parameters not initialised from the pretrained file (the new head, or all
of a from-scratch network) get ``seg.head_lr_mult`` x the learning rate, biases twice their weights' rate
and no weight decay; batch norm frozen for DeepLab-v2. Optionally the pseudo masks are first refined by
a dense CRF (``seg.pseudo_crf.enabled``) into ``<run>/pseudo_crf``.

The per-batch work is :func:`train_step` so that another loop (DDP, AMP, ...) can reuse it unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from l2g.config import Config, OptimConfig, save_config, to_dict
from l2g.data.images import read_image, read_mask
from l2g.data.palette import IGNORE_INDEX, save_mask
from l2g.data.voc_layout import Sample, class_names
from l2g.engine import atomic
from l2g.engine.loader import resolve_workers
from l2g.optim import build_optimizer, learning_rate, set_learning_rate
from l2g.segmentation.crf import crf_params, refine_labels
from l2g.segmentation.data import SegmentationDataset, pseudo_mask_paths
from l2g.segmentation.models import build_seg_model, load_pretrained, model_spec
from l2g.stages.common import pick_device, seed_everything, set_threads, split_samples, write_json


def segmentation_loss(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the upsampled logits against the masks, 255 ignored. A batch whose pixels are all
    ignored gives a zero loss (with a graph) instead of NaN."""
    logits = F.interpolate(model(images), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    if not (masks != IGNORE_INDEX).any():
        return {"loss": logits.sum() * 0.0}
    return {"loss": F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)}


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, device: torch.device,
               amp: bool = False) -> dict[str, float]:
    """One optimisation step on one batch; returns the losses as floats."""
    images, masks = batch["image"].to(device, non_blocking=True), batch["mask"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        losses = segmentation_loss(model, images, masks)
    if not torch.isfinite(losses["loss"]):
        raise FloatingPointError(f"non-finite segmentation loss {float(losses['loss'])}")
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def optim_config(config: Config) -> OptimConfig:
    """The seg section's optimiser settings in the shared optimiser's terms (x1/x2 loaded, xM/x2M new)."""
    seg = config.seg
    mult = seg.head_lr_mult
    return OptimConfig(lr=seg.lr, momentum=seg.momentum, nesterov=False, weight_decay=seg.weight_decay,
                       lr_mult=(1.0, 2.0, mult, 2 * mult), schedule="poly", poly_power=seg.poly_power)


def refine_pseudo_masks(config: Config, samples: list[Sample], masks: list[Path], out_dir: Path,
                        progress: bool = True) -> list[Path]:
    """Dense-CRF-refined copies of the pseudo masks in ``out_dir`` (existing files are kept: resumable)."""
    params, gt_prob = crf_params(config.seg.pseudo_crf), config.seg.pseudo_crf.gt_prob
    refined = []
    for sample, path in tqdm(list(zip(samples, masks, strict=True)), desc="pseudo-mask CRF", disable=not progress):
        target = out_dir / path.name
        if not target.exists():
            mask = refine_labels(read_image(sample.image_path), read_mask(path, config.data.num_classes), params,
                                 gt_prob)
            save_mask(target, mask)  # atomic
        refined.append(target)
    return refined


def _initialise(model: torch.nn.Module, config: Config) -> tuple[dict, list[torch.nn.Parameter]]:
    """Load ``seg.pretrained`` if given; returns (init metadata, parameters that were loaded)."""
    seg = config.seg
    if not seg.pretrained:
        return {"pretrained": None, "from_scratch": True}, []
    meta = load_pretrained(model, seg.pretrained, seg.pretrained_dataset)
    names = set(meta.pop("loaded_names"))
    loaded = [p for name, p in model.named_parameters() if name in names]
    return {"pretrained": meta, "from_scratch": False}, loaded


def train_segmentation(config: Config, run_dir: str | Path, pseudo_dir: str | Path | None = None,
                       resume: bool = False, progress: bool = True) -> Path:
    """Train and return the path of ``checkpoints/final.pt``."""
    run_dir = Path(run_dir)
    final = run_dir / "checkpoints" / "final.pt"
    if final.exists():
        if not resume:
            raise FileExistsError(f"{final} exists: this segmentation run is finished (use another --run)")
        return final
    pseudo_dir = pseudo_dir or config.seg.pseudo_dir
    if pseudo_dir is None:
        raise ValueError("no pseudo masks to train on: give --pseudo DIR or set seg.pseudo_dir")
    set_threads(config)
    seed_everything(config.seed)
    device = pick_device(config)
    seg, num_classes = config.seg, config.data.num_classes + 1
    samples = split_samples(config, seg.train_split)
    masks = pseudo_mask_paths(samples, pseudo_dir)
    names = ["background", *class_names(config.data.root, config.data.num_classes)]
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    if seg.pseudo_crf.enabled:
        masks = refine_pseudo_masks(config, samples, masks, run_dir / "pseudo_crf", progress)
    dataset = SegmentationDataset(samples, masks, config, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=seg.batch_size, shuffle=True, drop_last=True,
                        num_workers=resolve_workers(config.data.workers, device), generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(samples)} training images give no batch of seg.batch_size={seg.batch_size}")
    model = build_seg_model(seg, num_classes)
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if resume and last.exists() else None
    if state is None:
        init, loaded = _initialise(model, config)
    else:  # the pretrained file is not needed again: last.pt holds the weights and which ones were loaded
        init, loaded_names = state["init"], set(state["loaded_names"])
        loaded = [p for name, p in model.named_parameters() if name in loaded_names]
    loaded_ids = {id(p) for p in loaded}
    loaded_names = [name for name, p in model.named_parameters() if id(p) in loaded_ids]
    write_json(run_dir / "init.json", init)
    model.to(device)
    optim = optim_config(config)
    optimizer = build_optimizer(model, loaded, optim)
    start_epoch, previous_seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, previous_seconds = state["epoch"] + 1, float(state["seconds"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    total = seg.epochs * len(loader)
    log = (run_dir / "train_log.jsonl").open("a" if start_epoch else "w")
    started = time.time()
    for epoch in range(start_epoch, seg.epochs):
        model.train()
        dataset.set_epoch(epoch)
        bar = tqdm(loader, desc=f"seg train {seg.arch} epoch {epoch + 1}/{seg.epochs}", disable=not progress,
                   leave=False)
        for step, batch in enumerate(bar):
            iteration = epoch * len(loader) + step
            lr = learning_rate(optim, iteration, total, len(loader))
            set_learning_rate(optimizer, lr)
            try:
                losses = train_step(model, batch, optimizer, device, config.amp)
            except FloatingPointError as error:
                ids = [samples[i].image_id for i in batch["index"].tolist()]
                raise FloatingPointError(f"{error} at iteration {iteration}; images {ids}") from None
            if iteration % config.log_every == 0 or step == len(loader) - 1:
                log.write(json.dumps({"epoch": epoch, "iteration": iteration, "lr": lr, **losses}) + "\n")
                log.flush()
                bar.set_postfix_str(f"loss={losses['loss']:.4f}")
        save_checkpoint(last, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "seconds": previous_seconds + time.time() - started, "init": init, "loaded_names": loaded_names,
        })
    log.close()
    save_checkpoint(final, {"model": model.state_dict(), "spec": model_spec(seg, num_classes), "class_names": names,
                            "init": init, "config": to_dict(config)})
    minutes = (previous_seconds + time.time() - started) / 60
    write_json(run_dir / "train_metrics.json", {
        "minutes": minutes, "iterations": total, "images": len(samples), "device": str(device),
        "arch": seg.arch, "init": init, "pseudo_dir": str(pseudo_dir), "pseudo_crf": seg.pseudo_crf.enabled,
    })
    return final


def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save``, atomically: a kill never leaves half a checkpoint."""
    atomic.save_torch(path, payload)

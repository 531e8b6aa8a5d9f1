"""Stage 1: train the classification stage (CAM, local, L2G or L2G + shape) into a run folder.

Writes ``config.yaml``, ``train_log.jsonl``, ``checkpoints/last.pt`` (each epoch, resumable with
``resume=True``) and ``checkpoints/final.pt`` + ``train_metrics.json`` when done.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from l2g.config import Config, save_config
from l2g.data.classification import ClassificationDataset
from l2g.method.methods import build_method
from l2g.optim import build_optimizer, learning_rate, set_learning_rate
from l2g.stages.common import pick_device, seed_everything, set_threads, split_samples, write_json


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train and return the path of the final checkpoint."""
    run_dir = Path(run_dir)
    final = run_dir / "checkpoints" / "final.pt"
    if final.exists():
        if not resume:
            raise FileExistsError(f"{final} exists: this run is finished (use another --run)")
        return final  # resuming a finished run has nothing left to do
    set_threads(config)
    seed_everything(config.seed)
    device = pick_device(config)
    method = build_method(config)
    samples = split_samples(config, config.data.train_split, need_saliency=method.uses_saliency)
    dataset = ClassificationDataset(samples, config, method.uses_saliency, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.optim.batch_size, shuffle=True, drop_last=True,
                        num_workers=config.data.workers, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(samples)} training images give no batch of {config.optim.batch_size}")
    method.to(device)
    pretrained = [p for m in method.modules() if hasattr(m, "pretrained_parameters")
                  for p in m.pretrained_parameters()]
    optimizer = build_optimizer(method, pretrained, config.optim)
    start_epoch, previous_seconds = 0, 0.0
    last = run_dir / "checkpoints" / "last.pt"
    if resume and last.exists():
        state = torch.load(last, map_location=device, weights_only=True)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        previous_seconds = float(state.get("seconds", 0.0))
        generator.set_state(state["generator"])
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    total = config.optim.epochs * len(loader)
    log = (run_dir / "train_log.jsonl").open("a" if start_epoch else "w")
    started = time.time()
    for epoch in range(start_epoch, config.optim.epochs):
        method.train()
        dataset.set_epoch(epoch)
        bar = tqdm(loader, desc=f"train {config.method.name} epoch {epoch + 1}/{config.optim.epochs}",
                   disable=not progress, leave=False)
        for step, batch in enumerate(bar):
            iteration = epoch * len(loader) + step
            set_learning_rate(optimizer, learning_rate(config.optim, iteration, total, len(loader)))
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda"):
                losses = method.losses(batch)
            if not torch.isfinite(losses["loss"]):
                ids = [samples[i].image_id for i in batch["index"].tolist()]
                raise FloatingPointError(f"non-finite loss at iteration {iteration} ({_fmt(losses)}); images {ids}")
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            if iteration % config.log_every == 0 or step == len(loader) - 1:
                record = {"epoch": epoch, "iteration": iteration, "lr": optimizer.param_groups[0]["lr"]
                          / optimizer.param_groups[0]["lr_mult"], **{k: float(v.detach()) for k, v in losses.items()}}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix_str(_fmt(losses))
        _save(last, {"model": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "generator": generator.get_state(), "seconds": previous_seconds + time.time() - started})
    log.close()
    _save(final, {"model": method.inference_net().state_dict(), "method": config.method.name})
    minutes = (previous_seconds + time.time() - started) / 60
    write_json(run_dir / "train_metrics.json",
               {"minutes": minutes, "iterations": total, "images": len(samples), "device": str(device)})
    return final


def _fmt(losses: dict) -> str:
    values = {k: float(v.detach()) for k, v in losses.items()}
    return " ".join(f"{k}={v:.4f}" if math.isfinite(v) else f"{k}={v}" for k, v in values.items())


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)

"""``l2g transfer-fit``: how well an L2G run's global network reproduces its local network's targets.

Rebuilds both networks from the run's newest step checkpoint (``final.pt`` keeps only the global one),
replays training views of the train split exactly as training draws them (same seed, epoch 0) and
measures, per ground-truth region, the targets against the global softmax (see
:mod:`l2g.evaluation.transfer_fit`). Writes ``<run>/transfer_fit.json``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from l2g.data.classification import ClassificationDataset
from l2g.data.images import read_mask
from l2g.data.synth import PARTS_DIR
from l2g.engine.checkpoint import load_latest
from l2g.engine.run_paths import RunFolder
from l2g.evaluation.parts import read_parts
from l2g.evaluation.transfer_fit import TransferFit
from l2g.method.methods import L2GMethod, build_method, method_class
from l2g.method.views import crop_resize_nearest
from l2g.stages.common import run_config, set_threads, split_samples, write_json


def measure_transfer_fit(run_dir: str | Path, images: int | None = None, progress: bool = True) -> dict:
    """Measure the fit of ``run_dir``'s newest step checkpoint; write and return ``transfer_fit.json``."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    if not method_class(config.method.name).transfers:
        raise ValueError(f"{run_dir}: method {config.method.name!r} has no attention transfer "
                         "(only l2g and l2g_shape runs do)")
    if images is not None and images < 1:
        raise ValueError(f"--images must be >= 1, got {images}")
    found = load_latest(RunFolder(run_dir).checkpoints)
    if found is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no step checkpoint (final.pt holds only the "
                                "global network; the local one is in step-*.pt)")
    checkpoint, state = found
    config = copy.deepcopy(config)
    config.model.pretrained = "scratch"  # every weight comes from the checkpoint
    set_threads(config)
    method = build_method(config)
    assert isinstance(method, L2GMethod)
    method.load_state_dict(state["model"])
    method.eval()
    # Only existence is checked up front: the images used are decoded (and checked) as they are read, and a
    # decoding pass over the whole split would read every image twice for a sample of --images.
    samples = split_samples(config, config.data.train_split, need_masks=True,
                            need_saliency=method.uses_saliency, check_images="exists")[:images]
    parts_dir = Path(config.data.root) / PARTS_DIR
    with_parts = parts_dir.is_dir()

    def regions(sample) -> np.ndarray:
        mask = read_mask(sample.mask_path, config.data.num_classes)
        if not with_parts:
            return mask[..., None]
        return np.stack([mask, read_parts(parts_dir, sample.image_id).astype(np.uint8)], axis=-1)

    dataset = ClassificationDataset(samples, config, method.uses_saliency, seed=config.seed, region_maps=regions)
    meter = TransferFit()
    loader = DataLoader(dataset, batch_size=config.optim.batch_size, shuffle=False)
    with torch.no_grad():
        for batch in tqdm(loader, desc="transfer fit", disable=not progress):
            step = method.transfer(batch)
            size = tuple(step.targets.shape[2:])
            cut = crop_resize_nearest(batch["regions"].float(), batch["boxes"], size).long()
            meter.update(step.targets, torch.softmax(step.crops, dim=1), step.labels, cut[:, 0],
                         cut[:, 1] == 1 if with_parts else None)
    result = {"run": str(run_dir), "checkpoint": checkpoint.name, "iteration": int(state.get("iteration", -1)),
              "method": config.method.name, "images": len(samples), "regions": meter.results()}
    write_json(RunFolder(run_dir).transfer_fit, result)
    return result


def format_fit(result: dict) -> str:
    """The result as a Markdown table."""
    lines = [f"attention transfer of {result['run']} on {result['images']} training images "
             f"({result['checkpoint']})", "",
             "| region | target A^c | global G^c | taught | learnt | pixels |", "| --- | --- | --- | --- | --- | --- |"]
    for region, row in result["regions"].items():
        if row is not None:
            lines.append(f"| {region} | {row['target']:.3f} | {row['global']:.3f} | {row['taught']:.3f} "
                         f"| {row['learnt']:.3f} | {row['pixels']} |")
    return "\n".join(lines)

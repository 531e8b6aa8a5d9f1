"""Stage 3: sweep the background threshold over a split's attention maps in one pass -> sweep.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from l2g.config import Config
from l2g.data.images import read_mask
from l2g.evaluation.sweep import ThresholdSweep, default_thresholds
from l2g.stages.cams import load_cams
from l2g.stages.common import dataset_class_names, split_samples, write_json


def stack_maps(cams: dict[int, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) maps and their mask values (class index + 1) from a cams dict; an image without
    labelled classes gives (0, *shape) maps, which label every pixel background."""
    keys = sorted(cams)
    if not keys:
        return np.zeros((0, *shape), np.float32), np.zeros(0, np.int64)
    return np.stack([cams[k] for k in keys]), np.array(keys, np.int64) + 1


def evaluate_cams(config: Config, cams_dir: str | Path, out_path: str | Path | None = None,
                  split: str | None = None, progress: bool = True) -> dict:
    split = split or config.cams.split
    cams_dir = Path(cams_dir)
    samples = split_samples(config, split, need_masks=True)
    thresholds = list(config.eval.thresholds) or default_thresholds()
    num_classes = config.data.num_classes
    sweep = ThresholdSweep(num_classes + 1, thresholds)
    for sample in tqdm(samples, desc=f"eval-cams {split}", disable=not progress):
        gt = read_mask(sample.mask_path, num_classes)
        maps, labels = stack_maps(load_cams(cams_dir / f"{sample.image_id}.npy"), gt.shape)
        if maps.shape[1:] != gt.shape:
            raise ValueError(f"{cams_dir / sample.image_id}.npy: maps {maps.shape[1:]} vs mask {gt.shape}")
        sweep.update(maps, labels, gt)
    results = sweep.results(["background", *dataset_class_names(config)])
    results["split"] = split
    results["images"] = len(samples)
    write_json(out_path or cams_dir.parent / "sweep.json", results)
    return results

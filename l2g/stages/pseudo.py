"""Stage 4: pseudo masks (palette PNGs, VOC colours) from attention maps at one background threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from l2g import atomic
from l2g.config import Config
from l2g.data.cam_files import load_cams
from l2g.data.layout import decoded_size
from l2g.data.palette import save_mask
from l2g.data.pil_open import displayed_turned
from l2g.engine import distributed, markers
from l2g.engine.run_paths import RunFolder
from l2g.evaluation.sweep import pseudo_label
from l2g.stages.common import split_samples


def choose_threshold(config: Config, sweep_path: str | Path, progress: bool = False) -> float:
    """The configured threshold, else the best one of the sweep, else the one ``threshold.json`` beside it
    records, else one chosen now by :func:`l2g.stages.threshold.choose_pipeline_threshold` (from the masks
    some images have, or from the maps by Otsu's rule), printed with how it was chosen."""
    from l2g.report.formatting import describe_threshold
    from l2g.stages.threshold import choose_pipeline_threshold

    if config.eval.threshold is not None:
        return config.eval.threshold
    path = Path(sweep_path)
    run = RunFolder(path.parent)
    if path.exists():
        return float(json.loads(path.read_text())["best"]["threshold"])
    if run.threshold.exists():
        return float(json.loads(run.threshold.read_text())["threshold"])
    if not run.cams.is_dir():
        raise FileNotFoundError(f"{path}: no sweep found and no attention maps in {run.cams}; run "
                                "'l2g cams' first, or give --threshold")
    record = choose_pipeline_threshold(config, path.parent, progress=progress)
    print(describe_threshold(record))
    return float(record["threshold"])


def write_pseudo_masks(config: Config, cams_dir: str | Path, out_dir: str | Path, threshold: float, *,
                       split: str | None = None, progress: bool = True) -> Path:
    """One palette PNG per image; under torchrun each process writes its share. Resumable and verifiable
    like ``l2g cams`` (stage markers in ``out_dir``; inputs: threshold, split, the maps' done marker)."""
    cams_dir, out_dir = Path(cams_dir), Path(out_dir)
    split = split or config.cams.split
    ctx = distributed.setup(config.device)
    samples = distributed.main_first(lambda: split_samples(config, split))
    inputs = {"threshold": threshold, "split": split, "cams": str(cams_dir.resolve()),
              "cams_done_sha256": markers.done_digest(cams_dir)}
    files = [f"{sample.image_id}.png" for sample in samples]
    state = distributed.main_first(lambda: markers.begin(out_dir, "pseudo", inputs, files))
    if state == "done":
        return out_dir
    todo = [s for s in distributed.shard(samples, ctx)
            if state == "fresh" or not (out_dir / f"{s.image_id}.png").exists()]
    with distributed.agreed():
        for sample in tqdm(todo, desc=f"pseudo @ {threshold:.2f}", disable=not (progress and ctx.is_main)):
            cams = load_cams(cams_dir, sample.image_id)
            maps = cams.maps
            if not maps.shape[1]:  # no labelled class in a dict file, which has no size: all background
                size = decoded_size(sample.image_path)
                if sample.view == "displayed" and displayed_turned(sample.image_path):
                    size = size[::-1]
                maps = np.zeros((0, *size), np.float32)
            mask = pseudo_label(maps, cams.mask_values, threshold)
            save_mask(out_dir / f"{sample.image_id}.png", mask, sync_folder=False)
    atomic.fsync_folder(out_dir)  # the renames of this rank's masks, before the done marker
    distributed.barrier()
    distributed.main_first(lambda: markers.mark_done(out_dir, "pseudo", inputs, files))
    return out_dir

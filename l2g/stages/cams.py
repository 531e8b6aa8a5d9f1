"""Stage 2: attention maps of a split with the trained network -> ``<run>/cams/<id>.npy``.

Each file is ``np.save`` of a dict ``{0-based class index: float32 (H, W) map in [0, 1]}`` at the
image's original size, holding the image's labelled classes only (the format PSA/OAA-style tools
read with ``np.load(path, allow_pickle=True).item()``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from l2g.config import Config
from l2g.data.classification import normalize
from l2g.data.images import read_image
from l2g.method.cam import image_attention
from l2g.method.methods import build_method
from l2g.stages.common import pick_device, set_threads, split_samples


def load_inference_net(config: Config, checkpoint: str | Path, device: torch.device):
    method = build_method(config)
    net = method.inference_net()
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no trained network (run 'l2g train' to finish first)")
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
    except Exception as error:  # truncated or corrupted file: unpickling can raise many types
        raise ValueError(f"{checkpoint}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: does not fit the configured network ({str(error)[:300]})") from error
    return net.to(device).eval()


def infer_cams(config: Config, run_dir: str | Path, split: str | None = None, out_dir: str | Path | None = None,
               progress: bool = True) -> Path:
    run_dir = Path(run_dir)
    split = split or config.cams.split
    out_dir = Path(out_dir) if out_dir else run_dir / "cams"
    set_threads(config)
    device = pick_device(config)
    net = load_inference_net(config, run_dir / "checkpoints" / "final.pt", device)
    samples = split_samples(config, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sample in tqdm(samples, desc=f"cams {split}", disable=not progress):
        target = out_dir / f"{sample.image_id}.npy"
        if target.exists():
            continue  # resumable: maps already written are kept
        image = normalize(read_image(sample.image_path), config.data.mean, config.data.std).to(device)
        cams = image_attention(net, image, sample.labels, config.cams.scales, config.cams.flip,
                               config.cams.upsample, config.cams_use_softmax)
        tmp = out_dir / f"{sample.image_id}.tmp.npy"
        np.save(tmp, cams, allow_pickle=True)
        os.replace(tmp, target)
    return out_dir


def load_cams(path: str | Path) -> dict[int, np.ndarray]:
    try:
        return np.load(path, allow_pickle=True).item()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: attention maps not found (run 'l2g cams' first)") from None
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: unreadable attention maps ({error})") from error

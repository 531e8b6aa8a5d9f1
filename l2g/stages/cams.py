"""Stage 2: attention maps of a split with the trained network -> ``<run>/cams/<id>.npy``.

Each file is ``np.save`` of a dict ``{0-based class index: float32 (H, W) map in [0, 1]}`` at the
image's original size, holding the image's labelled classes only (the format PSA/OAA-style tools
read with ``np.load(path, allow_pickle=True).item()``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from l2g.config import Config
from l2g.data.classification import normalize
from l2g.data.images import read_image
from l2g.data.voc_layout import Sample
from l2g.engine import atomic, distributed, markers
from l2g.engine.guards import ensure_free_space
from l2g.method.cam import image_attention
from l2g.method.methods import build_method
from l2g.stages.common import set_threads, split_samples


def load_inference_net(config: Config, checkpoint: str | Path, device: torch.device):
    # The checkpoint holds every weight: skip reading the ImageNet file (slow, and maybe moved since training).
    config = copy.deepcopy(config)
    config.model.pretrained = "scratch"
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


def cams_inputs(config: Config, checkpoint: Path, split: str) -> dict:
    """What the maps depend on (recorded in the folder's stage markers)."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no trained network (run 'l2g train' to finish first)")
    return {"checkpoint_sha256": markers.file_digest(checkpoint), "split": split,
            "scales": list(config.cams.scales), "flip": config.cams.flip, "upsample": config.cams.upsample,
            "softmax": config.cams_use_softmax, "mean": list(config.data.mean), "std": list(config.data.std)}


def estimate_cams_bytes(samples: list[Sample], probe: int = 32) -> int:
    """Bytes the maps of ``samples`` will take: float32 per labelled class and pixel, the image area
    averaged over up to ``probe`` images spread over the list (headers only), plus the file overhead."""
    if not samples:
        return 0
    areas = []
    for sample in samples[:: max(1, len(samples) // probe)][:probe]:
        try:
            with Image.open(sample.image_path) as image:
                areas.append(image.width * image.height)
        except OSError:
            continue  # reported properly when the image is read
    mean_area = sum(areas) / len(areas) if areas else 0
    return int(sum(len(s.labels) for s in samples) * mean_area * 4 + 600 * len(samples))


def infer_cams(config: Config, run_dir: str | Path, split: str | None = None, out_dir: str | Path | None = None,
               progress: bool = True) -> Path:
    """Write the maps of every image of ``split``; under torchrun each process does its share.

    Resumable and verifiable (see :mod:`l2g.engine.markers`): a folder already done with the same
    inputs is left alone, an interrupted one is completed, and one made from other inputs (another
    checkpoint, other scales) is rewritten.
    """
    run_dir = Path(run_dir)
    split = split or config.cams.split
    out_dir = Path(out_dir) if out_dir else run_dir / "cams"
    ctx = distributed.setup(config.device)
    set_threads(config)
    checkpoint = run_dir / "checkpoints" / "final.pt"
    samples = distributed.main_first(lambda: split_samples(config, split))
    inputs = distributed.main_first(lambda: cams_inputs(config, checkpoint, split))
    files = [f"{sample.image_id}.npy" for sample in samples]
    state = distributed.main_first(lambda: markers.begin(out_dir, "cams", inputs, files))
    if state == "done":
        return out_dir
    net = load_inference_net(config, checkpoint, ctx.device)
    todo = [s for s in distributed.shard(samples, ctx)
            if state == "fresh" or not (out_dir / f"{s.image_id}.npy").exists()]
    # The ranks write to one folder (the marker lists all files): check the disk for all of them at once.
    shares = distributed.all_gather_object((estimate_cams_bytes(todo), len(todo)))
    needed, count = sum(b for b, _ in shares), sum(n for _, n in shares)
    distributed.main_first(lambda: ensure_free_space(out_dir, needed, f"the attention maps of {count} images"))
    error = None
    try:
        for sample in tqdm(todo, desc=f"cams {split}", disable=not (progress and ctx.is_main)):
            image = normalize(read_image(sample.image_path), config.data.mean, config.data.std).to(ctx.device)
            cams = image_attention(net, image, sample.labels, config.cams.scales, config.cams.flip,
                                   config.cams.upsample, config.cams_use_softmax)
            atomic.save_npy(out_dir / f"{sample.image_id}.npy", cams, allow_pickle=True)
    except Exception as caught:  # every rank must learn about it, or the others would wait forever
        error = caught
    distributed.agree(error)
    distributed.main_first(lambda: markers.mark_done(out_dir, "cams", inputs, files))
    return out_dir


def load_cams(path: str | Path) -> dict[int, np.ndarray]:
    try:
        return np.load(path, allow_pickle=True).item()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: attention maps not found (run 'l2g cams' first)") from None
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: unreadable attention maps ({error})") from error

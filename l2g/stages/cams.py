"""Stage 2: attention maps of a split with the trained network -> ``<run>/cams/<id>.npz``.

One file per image at its original size, holding its labelled classes only: by default a pickle-free
``.npz`` (``classes`` + float16 ``maps``), or with ``cams.format: dict`` the release's / PSA's dict
``.npy`` (see :mod:`l2g.data.cam_files`, which every later stage reads them with).

Per image: DataLoader workers decode the image, resize it to the size the scales apply to (``cams.short_side``,
by default the training short side, and ``cams.max_side``: :func:`bounded_image`; the fused maps are upsampled
back to the image's own size, the size of the files) and build its network inputs (``cams.resize``: the
release's PIL-bicubic resize of the 8-bit image at every scale, or one normalised image resized on the
device), in pinned memory on CUDA; the passes run under autocast when ``cams.amp`` is on (``auto``: on
CUDA and on CPUs with native bf16), then with BatchNorm folded into the convolutions and the chosen memory
layout (:func:`prepare_inference_net`); a writer thread stores the maps while the next image is
computed, with one fsync per file and one for the folder at the end.
"""

from __future__ import annotations

import copy
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from l2g import atomic
from l2g.config import Config
from l2g.data.cam_files import SUFFIXES, cams_filename, class_maps, save_cams
from l2g.data.images import read_image
from l2g.data.layout import Sample
from l2g.engine import distributed, markers
from l2g.engine.guards import ensure_free_space
from l2g.engine.loader import resolve_workers
from l2g.engine.precision import Precision, resolve_precision
from l2g.engine.run_paths import RunFolder
from l2g.method.attention_maps import base_short_side, bounded_image, image_attention, scaled_inputs
from l2g.models.attention_net import AttentionNet, build_attention_net
from l2g.models.fusion import fold_batchnorm
from l2g.stages.common import set_threads, split_samples

PENDING_WRITES = 4  # maps computed but not yet written, at most (bounds the host memory they hold)


def load_inference_net(config: Config, checkpoint: str | Path, device: torch.device) -> AttentionNet:
    """The network ``l2g cams`` runs, alone (not the method's other networks), with the run's weights."""
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: no trained network (run 'l2g train' to finish first)")
    # The checkpoint holds every weight: skip reading the ImageNet file (slow, and maybe moved since training).
    model = copy.deepcopy(config.model)
    model.pretrained = "scratch"
    net = build_attention_net(model, config.data.num_classes)
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
    except Exception as error:  # truncated or corrupted file: unpickling can raise many types
        raise ValueError(f"{checkpoint}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: does not fit the configured network ({str(error)[:300]})") from error
    return net.to(device).eval()


def cams_precision(config: Config, device: torch.device):
    """The autocast and layout of the passes: ``cams.amp`` (auto: on with CUDA and on CPUs with native bf16),
    bf16 where supported, else fp16; ``runtime.channels_last`` (auto: with autocast)."""
    return resolve_precision(config.cams.amp, config.runtime.channels_last, device)


def prepare_inference_net(net: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """``net`` (eval mode) ready for fast passes under ``precision``: with autocast on, each BatchNorm folded
    into the convolution before it (one pass over memory fewer; in float32 it would only move the last
    bits, so the exact float32 path keeps the network as trained) and the chosen memory layout."""
    if precision.enabled:
        fold_batchnorm(net)
    return precision.prepare(net)


def cams_inputs(config: Config, checkpoint: Path, split: str, precision: str) -> dict:
    """What the maps depend on (recorded in the folder's stage markers)."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no trained network (run 'l2g train' to finish first)")
    cams = config.cams
    return {"checkpoint_sha256": markers.file_digest(checkpoint), "split": split, "scales": list(cams.scales),
            "flip": cams.flip, "upsample": cams.upsample, "resize": cams.resize, "softmax": config.cams_use_softmax,
            "short_side": base_short_side(config), "max_side": cams.max_side,
            "base_interpolation": config.data.resize_interpolation,
            "mean": list(config.data.mean), "std": list(config.data.std), "precision": precision,
            "format": cams.format, "dtype": "float32" if cams.format == "dict" else cams.dtype}


def estimate_cams_bytes(samples: list[Sample], bytes_per_value: int = 2, probe: int = 32) -> int:
    """Bytes the maps of ``samples`` will take: ``bytes_per_value`` per labelled class and pixel, the image
    area averaged over up to ``probe`` images spread over the list (headers only), plus the file overhead."""
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
    return int(sum(len(s.labels) for s in samples) * mean_area * bytes_per_value + 600 * len(samples))


class CamInputs(Dataset):
    """What one image's passes need, built in a DataLoader worker: ``inputs`` (per-scale normalised
    tensors for ``pil_bicubic``, the normalised image for ``tensor_bilinear``) of the image resized to the
    size the scales apply to, ``base`` (h, w), that size, and ``size`` (H, W), the image's own."""

    def __init__(self, samples: list[Sample], config: Config) -> None:
        self.samples = samples
        self.scales = tuple(config.cams.scales)
        self.mean, self.std = config.data.mean, config.data.std
        self.resize = config.cams.resize
        self.short_side, self.max_side = base_short_side(config), config.cams.max_side
        self.interpolation = config.data.resize_interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        image = read_image(self.samples[index].image_path, self.samples[index].view)
        size = tuple(image.shape[:2])
        image = bounded_image(image, self.short_side, self.max_side, self.interpolation)
        return {"index": index, "size": size, "base": tuple(image.shape[:2]),
                "inputs": scaled_inputs(image, self.scales, self.mean, self.std, self.resize)}


def _single(items: list[dict]) -> dict:
    """collate_fn of batch size 1: the item itself (images of different sizes do not stack)."""
    return items[0]


def _to(inputs, device: torch.device):
    blocking = device.type != "cuda"
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=not blocking)
    return [x.to(device, non_blocking=not blocking) for x in inputs]


def cams_loader(samples: list[Sample], config: Config, device: torch.device, workers: int) -> DataLoader:
    return DataLoader(CamInputs(samples, config), batch_size=1, shuffle=False, num_workers=workers,
                      collate_fn=_single, pin_memory=device.type == "cuda",
                      prefetch_factor=2 if workers > 0 else None)


def infer_cams(config: Config, run_dir: str | Path, *, split: str | None = None, out_dir: str | Path | None = None,
               progress: bool = True) -> Path:
    """Write the maps of every image of ``split``; under torchrun each process does its share.

    Resumable and verifiable (see :mod:`l2g.engine.markers`): a folder already done with the same
    inputs is left alone, an interrupted one is completed, and one made from other inputs (another
    checkpoint, other scales, another format) is rewritten.
    """
    run_dir = Path(run_dir)
    split = split or config.cams.split
    out_dir = Path(out_dir) if out_dir else RunFolder(run_dir).cams
    ctx = distributed.setup(config.device)
    set_threads(config)
    checkpoint = RunFolder(run_dir).final
    precision = cams_precision(config, ctx.device)
    fmt = config.cams.format
    samples = distributed.main_first(lambda: split_samples(config, split))
    inputs = distributed.main_first(lambda: cams_inputs(config, checkpoint, split, precision.describe_layout()))
    files = [cams_filename(sample.image_id, fmt) for sample in samples]
    state = distributed.main_first(lambda: markers.begin(out_dir, "cams", inputs, files))
    if state == "done":
        return out_dir
    if state == "fresh":  # maps of the other format would shadow (npz) or outlive (dict) the new ones
        distributed.main_first(lambda: _remove_other_format(out_dir, samples, fmt))
    net = prepare_inference_net(load_inference_net(config, checkpoint, ctx.device), precision)
    todo = [s for s in distributed.shard(samples, ctx)
            if state == "fresh" or not (out_dir / cams_filename(s.image_id, fmt)).exists()]
    # The ranks write to one folder (the marker lists all files): check the disk for all of them at once.
    per_value = 4 if fmt == "dict" or config.cams.dtype == "float32" else 2
    shares = distributed.all_gather_object((estimate_cams_bytes(todo, per_value), len(todo)))
    needed, count = sum(b for b, _ in shares), sum(n for _, n in shares)
    distributed.main_first(lambda: ensure_free_space(out_dir, needed, f"the attention maps of {count} images"))
    with distributed.agreed():
        _write_maps(net, todo, config, out_dir, ctx, precision, progress, split)
    atomic.fsync_folder(out_dir)  # the renames of this rank's files, before the done marker
    distributed.barrier()
    distributed.main_first(lambda: markers.mark_done(out_dir, "cams", inputs, files))
    return out_dir


def _remove_other_format(out_dir: Path, samples: list[Sample], fmt: str) -> None:
    for other, suffix in SUFFIXES.items():
        if other != fmt:
            for sample in samples:
                (out_dir / f"{sample.image_id}{suffix}").unlink(missing_ok=True)


def _write_maps(net, todo: list[Sample], config: Config, out_dir: Path, ctx, precision, progress: bool,
                split: str) -> None:
    cams = config.cams
    workers = resolve_workers(config.data.workers, ctx.device, ctx.local_world_size)
    loader = cams_loader(todo, config, ctx.device, workers)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="l2g-cams-writer") as writer:
        for item in tqdm(loader, total=len(todo), desc=f"cams {split}", disable=not (progress and ctx.is_main)):
            sample = todo[item["index"]]
            with precision.autocast():
                maps = image_attention(net, _to(item["inputs"], ctx.device), sample.labels, cams.scales,
                                       cams.flip, cams.upsample, config.cams_use_softmax, size=item["base"],
                                       out_size=item["size"])
            path = out_dir / cams_filename(sample.image_id, cams.format)
            pending.append(writer.submit(save_cams, path, class_maps(maps, item["size"]), cams.format, cams.dtype,
                                         sync_folder=False))
            while len(pending) > PENDING_WRITES or (pending and pending[0].done()):
                pending.popleft().result()  # re-raises a failed write here
        while pending:
            pending.popleft().result()

"""The measurements behind each figure of the benchmark (see docs/benchmarks.md).

Every function returns a plain dict (JSON-ready) with absolute numbers, the ratio to the reference where
there is one, and a correctness check that the two sides computed the same thing.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.reference import ReferenceL2GStep, reference_attention, reference_sweep, write_class_pngs
from benchmarks.reference_nets import build_reference_net
from benchmarks.timing import interleaved, median
from l2g.compat.torchvision_ops import has_compiled_ops
from l2g.config import Config
from l2g.data.view_boxes import sample_view_boxes
from l2g.engine.precision import Precision, resolve_precision
from l2g.method.attention_maps import image_attention, scaled_inputs
from l2g.method.methods import build_method
from l2g.method.roi import roi_align_separable
from l2g.optim import build_optimizer, pretrained_parameters

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_batch(config: Config, device: torch.device, seed: int = 0) -> dict:
    """A random training batch of the configured shape: global views, labels, view boxes, saliency."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    size, batch, classes = config.data.global_size, config.optim.batch_size, config.data.num_classes
    labels = (torch.rand(batch, classes, generator=generator) < 0.3).float()
    labels[torch.arange(batch), torch.randint(classes, (batch,), generator=generator)] = 1.0  # >= 1 class
    boxes = np.stack([sample_view_boxes((size, size), config.views.patch_size, config.views.n,
                                        config.views.strategy, rng, config.views.grid_stride)
                      for _ in range(batch)])
    saliency = torch.rand(batch, 1, size, size, generator=generator)
    saliency[saliency < 0.4] = 0.0  # background
    saliency[0] = 0.0  # one view with an empty saliency map
    return {
        "image": torch.randn(batch, 3, size, size, generator=generator).to(device),
        "labels": labels.to(device),
        "boxes": torch.from_numpy(boxes).to(device),
        "saliency": saliency.to(device),
        "index": torch.arange(batch),
    }


def training_throughput(config: Config, device: torch.device, repeats: int, warmup: int) -> dict:
    """Figure 1 (+ the FLOP count of figure 4): one optimiser step of our L2G method vs the reference.

    Both start from the same weights (the reference's own networks, :mod:`benchmarks.reference_nets`, load
    ours); before timing, their losses on the same batch are compared with every network in eval mode
    (no dropout, BatchNorm's statistics: a deterministic comparison of the computation). Timed: ours as
    ``l2g train`` runs it on ``device`` (``amp`` and ``runtime.channels_last`` of the config, resolved as the
    trainer does: on a CPU with native bf16, ``auto`` means bf16 autocast without channels_last), ours in
    float32 when that differs, and the reference in float32 (the release trains in fp32), with torchvision's
    RoIAlign and with l2g's.
    """
    torch.manual_seed(config.seed)
    method = build_method(config).to(device).train()
    fp32_method = copy.deepcopy(method)
    precision = resolve_precision(config.amp, config.runtime.channels_last, device, training=True)
    precision.prepare(method)
    optimizers = {"ours": build_optimizer(method, pretrained_parameters(method), config.optim),
                  "ours_fp32": build_optimizer(fp32_method, pretrained_parameters(fp32_method), config.optim)}
    classes = config.data.num_classes

    def reference_step(roi_align=None) -> ReferenceL2GStep:
        local = build_reference_net(config.model, classes, fp32_method.local.state_dict()).to(device)
        glob = build_reference_net(config.model, classes, fp32_method.global_net.state_dict()).to(device)
        nets = nn.ModuleDict({"local": local, "global": glob}).train()
        # the same parameter groups as ours: every parameter is new (random init), x10 / x20
        optimizer = build_optimizer(nets, [], config.optim)
        return ReferenceL2GStep(local, glob, optimizer, config.method.lam, config.shape_threshold, roi_align)

    def separable(features, rois, size, scale, ratio, aligned):
        return roi_align_separable(features, rois, size, scale, ratio)

    reference = reference_step()  # torchvision's roi_align, as the release
    reference_l2g_roi = reference_step(separable)  # the same with l2g's RoIAlign: what batching alone gains
    batch = make_batch(config, device, config.seed)
    layout_batch = {k: (v.contiguous(memory_format=torch.channels_last)
                        if precision.channels_last and torch.is_tensor(v) and v.dim() == 4 else v)
                    for k, v in batch.items()}  # as the trainer moves batches
    args = (batch["image"], batch["labels"], batch["boxes"], batch["saliency"])

    modules = (fp32_method, reference.local_net, reference.global_net, reference_l2g_roi.local_net,
               reference_l2g_roi.global_net)
    for module in modules:
        module.eval()
    ours_loss = float(fp32_method.losses(batch)["loss"].detach())
    reference_loss = float(reference.loss(*args).detach())
    reference_l2g_roi_loss = float(reference_l2g_roi.loss(*args).detach())
    for module in modules:
        module.train()

    def step(model: nn.Module, optimizer, chosen: Precision, data: dict) -> None:
        with chosen.autocast():
            loss = model.losses(data)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if chosen.scaler is not None:
            chosen.scaler.scale(loss).backward()
            chosen.scaler.step(optimizer)
            chosen.scaler.update()
        else:
            loss.backward()
            optimizer.step()

    fp32 = resolve_precision("off", "off", device)
    fns = {"ours": lambda: step(method, optimizers["ours"], precision, layout_batch),
           "reference": lambda: reference.step(*args),
           "reference_l2g_roi_align": lambda: reference_l2g_roi.step(*args)}
    if precision.enabled or precision.channels_last:
        fns["ours_fp32"] = lambda: step(fp32_method, optimizers["ours_fp32"], fp32, batch)
    times = interleaved(fns, device, repeats, warmup)

    with FlopCounterMode(display=False) as counter:
        fp32_method.losses(batch)["loss"].backward()
    optimizers["ours_fp32"].zero_grad(set_to_none=True)

    images = config.optim.batch_size
    result = {
        "batch": images, "views_per_image": int(batch["boxes"].shape[1]),
        "global_size": config.data.global_size, "patch_size": config.views.patch_size,
        "backbone": config.model.backbone, "pcm": config.model.pcm,
        "loss_ours": ours_loss, "loss_reference": reference_loss,
        "loss_abs_diff": max(abs(ours_loss - reference_loss), abs(ours_loss - reference_l2g_roi_loss)),
        "torchvision_compiled_ops": has_compiled_ops(),
        "flops_per_step": int(counter.get_total_flops()),
        "ours_precision": precision.describe_layout(), "ours_precision_reason": precision.reason,
        "amp_dtype": str(precision.dtype).replace("torch.", "") if precision.enabled else None,
    }
    for name, samples in times.items():
        result[f"{name}_seconds"] = samples
        result[f"{name}_images_per_s"] = images / median(samples)
    return result


def synthetic_images(sizes: list[tuple[int, int]], num_classes: int, seed: int = 0
                     ) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """Smooth random 8-bit RGB images of the given (H, W) sizes with 1-3 labelled classes each."""
    rng = np.random.default_rng(seed)
    out = []
    for height, width in sizes:
        count = int(rng.integers(1, 4))
        labels = tuple(sorted(rng.choice(num_classes, size=count, replace=False).tolist()))
        low = rng.uniform(0, 255, (max(2, height // 16), max(2, width // 16), 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        out.append((image, labels))
    return out


def inference_speed(config: Config, device: torch.device, sizes: list[tuple[int, int]], repeats: int,
                    warmup: int) -> dict:
    """Figure 2: 8-pass multi-scale + flip attention maps of a few images, ours vs the release's way.

    Both start from the 8-bit image: ours builds the release's inputs (``cams.resize=pil_bicubic``, what
    ``l2g cams``' loader workers do) and runs :func:`l2g.method.attention_maps.image_attention` the way
    ``l2g cams`` does on ``device`` (``cams.amp`` and ``runtime.channels_last`` resolved, the network prepared
    by :func:`l2g.stages.cams.prepare_inference_net`); the reference runs its own network
    (:mod:`benchmarks.reference_nets`, our weights) the release's way, in float32. Raw scores, as the
    release. Recorded: the largest difference between the two sides' maps, and ours in float32 (timed too
    when the default is not float32) against the reference.
    """
    from l2g.stages.cams import cams_precision, prepare_inference_net

    torch.manual_seed(config.seed)
    fp32_net = build_method(config).inference_net().to(device).eval()
    reference_net = build_reference_net(config.model, config.data.num_classes, fp32_net.state_dict()).to(device).eval()
    precision = cams_precision(config, device)
    net = prepare_inference_net(copy.deepcopy(fp32_net), precision)
    images = synthetic_images(sizes, config.data.num_classes, config.seed)
    scales = tuple(config.cams.scales)
    mean, std = config.data.mean, config.data.std

    def ours(model: nn.Module = net, chosen: Precision = precision, batch=images) -> list[dict]:
        out = []
        with chosen.autocast():
            for image, labels in batch:
                inputs = [x.to(device) for x in scaled_inputs(image, scales, mean, std, "pil_bicubic")]
                out.append(image_attention(model, inputs, labels, scales, flip=True, upsample=config.cams.upsample,
                                           size=image.shape[:2]))
        return out

    fp32 = resolve_precision("off", "off", device)

    def reference(batch=images) -> list[dict]:
        return [reference_attention(reference_net, image, labels, scales, device) for image, labels in batch]

    def difference(a: list[dict], b: list[dict]) -> float:
        return max(float(np.abs(x[c] - y[c]).max()) for x, y in zip(a, b, strict=True) for c in x)

    expected = reference()
    result = {
        "image_sizes": [list(s) for s in sizes], "scales": list(scales), "passes": 2 * len(scales),
        "backbone": config.model.backbone, "pcm": config.model.pcm,
        "ours_precision": precision.describe_layout(), "ours_precision_reason": precision.reason,
        "max_abs_diff": difference(ours(), expected), "fp32_max_abs_diff": difference(ours(fp32_net, fp32), expected),
    }
    fns = {"ours": ours, "reference": reference}
    if precision.enabled or precision.channels_last:
        fns["ours_fp32"] = lambda batch=images: ours(fp32_net, fp32, batch)
    times = interleaved(fns, device, repeats, warmup)
    for name, samples in times.items():
        result[f"{name}_seconds"] = samples
        result[f"{name}_seconds_per_image"] = median(samples) / len(images)
    # The same passes where every call meets image sizes no earlier call had: a dataset's images rarely
    # share a size, and oneDNN (CPU) builds its convolution kernels per input shape, a cost the repeats
    # above pay once. Each function gets its own sizes (a shared one would find the other's kernels).
    calls = (warmup + repeats) * len(fns)
    fresh = iter([synthetic_images(_grown(sizes, 1 + call), config.data.num_classes, config.seed)
                  for call in range(calls)])
    fresh_fns = {name: (lambda fn=fn: fn(batch=next(fresh))) for name, fn in fns.items()}
    for name, samples in interleaved(fresh_fns, device, repeats, warmup).items():
        result[f"{name}_new_sizes_seconds_per_image"] = median(samples) / len(images)
    return result


def _grown(sizes: list[tuple[int, int]], pixels: int) -> list[tuple[int, int]]:
    """Every (H, W) grown by ``pixels`` both ways (the scaled inputs of each are new shapes too)."""
    return [(height + pixels, width + pixels) for height, width in sizes]


def _fake_maps(mask: np.ndarray, labels: tuple[int, ...], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Attention-like maps: high on the class's pixels, noisy elsewhere, in [0, 1]."""
    maps = {}
    for c in labels:
        noisy = 0.7 * (mask == c + 1) + rng.uniform(0.0, 0.45, mask.shape)
        maps[c] = (noisy / noisy.max()).astype(np.float32)
    return maps


def sweep_speed(config: Config, workdir: Path, thresholds: tuple[float, ...], repeats: int, warmup: int) -> dict:
    """Figure 3: the threshold sweep of ``l2g eval-cams`` vs the release's per-threshold PNG rereading.

    Attention maps are written once beforehand in both formats (ours as ``l2g cams`` writes them, float16
    ``.npz``; the release's one PNG per class): writing belongs to the attention-map stage on both sides and
    is not timed. Ours is timed with its default workers (``eval.parallel: auto``) and on one worker.
    """
    from l2g.data.cam_files import save_cams
    from l2g.data.images import read_mask
    from l2g.data.splits import split_samples
    from l2g.stages.eval_cams import evaluate_cams, sweep_workers

    config = copy.deepcopy(config)
    config.eval.thresholds = tuple(thresholds)
    samples = split_samples(config, config.cams.split, need_masks=True)
    cams_dir, png_dir = workdir / "cams", workdir / "class_pngs"
    cams_dir.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    pixels = 0
    for sample in samples:
        mask = read_mask(sample.mask_path, config.data.num_classes)
        pixels += mask.size
        maps = _fake_maps(mask, sample.labels, rng)
        save_cams(cams_dir / f"{sample.image_id}.npz", maps, sync_folder=False)
        write_class_pngs(maps, png_dir, sample.image_id)
    items = [(s.image_id, s.mask_path, s.labels) for s in samples]
    num_classes = config.data.num_classes + 1
    serial = copy.deepcopy(config)
    serial.eval.workers = 1
    ours_result = evaluate_cams(config, cams_dir, out_path=workdir / "sweep.json", progress=False)
    reference_mious = reference_sweep(items, png_dir, num_classes, thresholds)
    times = interleaved({
        "ours": lambda: evaluate_cams(config, cams_dir, out_path=workdir / "sweep.json", progress=False),
        "ours_one_thread": lambda: evaluate_cams(serial, cams_dir, out_path=workdir / "sweep.json", progress=False),
        "reference": lambda: reference_sweep(items, png_dir, num_classes, thresholds),
    }, torch.device("cpu"), repeats, warmup)
    return {
        "images": len(samples), "megapixels": pixels / 1e6, "thresholds": list(thresholds),
        "threads": sweep_workers(config.eval.workers, len(samples)),
        "miou_ours": ours_result["miou"], "miou_reference": reference_mious,
        # The release's maps are 8-bit PNGs, ours float16: a small mIoU difference is quantisation.
        "miou_max_abs_diff": max(abs(a - b) for a, b in zip(ours_result["miou"], reference_mious, strict=True)),
        **{f"{name}_seconds": samples for name, samples in times.items()},
        **{f"{name}_median_seconds": median(samples) for name, samples in times.items()},
    }


def demo_run(workdir: Path, overrides: list[str], data_root: Path, methods: str | None = None) -> dict:
    """Figures 4 (memory) and 5 (time): ``python -m l2g demo`` in a child process; its peak resident
    memory is the child's ``ru_maxrss`` (``os.wait4``: the rusage of exactly this child)."""
    out = workdir / "demo_runs"
    command = [sys.executable, "-m", "l2g", "demo", "--out", str(out), "--data", str(data_root), "--quiet"]
    if methods:
        command += ["--methods", methods]
    for item in overrides:
        command += ["--set", item]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    log_path = workdir / "demo.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"demo exited with {process.returncode}: {' '.join(command)}\n{tail}")
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kilobytes on Linux
    return {"command": command, "wall_seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * unit}

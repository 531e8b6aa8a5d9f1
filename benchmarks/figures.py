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
from contextlib import nullcontext
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
from l2g.engine.precision import cpu_bf16_support
from l2g.method.attention_maps import image_attention, scaled_inputs
from l2g.method.methods import build_method
from l2g.method.roi import roi_align_separable
from l2g.optim import build_optimizer

REPO_ROOT = Path(__file__).resolve().parent.parent


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device supports it (CPUs with AVX-512 bf16 run it natively), else fp16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def amp_note(device: torch.device) -> str | None:
    """Why AMP is not measured on ``device`` (a CPU without native bf16: emulated, minutes for a peak), or None."""
    if device.type != "cpu":
        return None
    native, how = cpu_bf16_support()
    return None if native else f"AMP rows and the bf16 matmul peak skipped: {how}"


def _pretrained(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if hasattr(m, "pretrained_parameters") for p in m.pretrained_parameters()]


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


def training_throughput(config: Config, device: torch.device, repeats: int, warmup: int, amp: bool) -> dict:
    """Figure 1 (+ the FLOP count of figure 4): one optimiser step of our L2G method vs the reference.

    Both start from the same weights (the reference's own networks, :mod:`benchmarks.reference_nets`, load
    ours); before timing, their losses on the same batch are compared with every network in eval mode
    (no dropout, BatchNorm's statistics: a deterministic comparison of the computation). Timed: ours fp32,
    the reference fp32 (the release trains in fp32) and, with ``amp``, ours under ``torch.autocast``
    around the library's per-batch loss (bf16, or fp16 with a gradient scaler).
    """
    torch.manual_seed(config.seed)
    method = build_method(config).to(device).train()
    ours_optimizer = build_optimizer(method, _pretrained(method), config.optim)
    classes = config.data.num_classes

    def reference_step(roi_align=None) -> ReferenceL2GStep:
        local = build_reference_net(config.model, classes, method.local.state_dict()).to(device)
        glob = build_reference_net(config.model, classes, method.global_net.state_dict()).to(device)
        nets = nn.ModuleDict({"local": local, "global": glob}).train()
        # the same parameter groups as ours: every parameter is new (random init), x10 / x20
        optimizer = build_optimizer(nets, [], config.optim)
        return ReferenceL2GStep(local, glob, optimizer, config.method.lam, config.shape_threshold, roi_align)

    def separable(features, rois, size, scale, ratio, aligned):
        return roi_align_separable(features, rois, size, scale, ratio)

    reference = reference_step()  # torchvision's roi_align, as the release
    reference_l2g_roi = reference_step(separable)  # the same with l2g's RoIAlign: what batching alone gains
    batch = make_batch(config, device, config.seed)
    args = (batch["image"], batch["labels"], batch["boxes"], batch["saliency"])

    modules = (method, reference.local_net, reference.global_net, reference_l2g_roi.local_net,
               reference_l2g_roi.global_net)
    for module in modules:
        module.eval()
    ours_loss = float(method.losses(batch)["loss"].detach())
    reference_loss = float(reference.loss(*args).detach())
    reference_l2g_roi_loss = float(reference_l2g_roi.loss(*args).detach())
    for module in modules:
        module.train()

    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)

    def ours_step(autocast: bool = False) -> None:
        context = torch.autocast(device.type, dtype=dtype) if autocast else nullcontext()
        with context:
            loss = method.losses(batch)["loss"]
        ours_optimizer.zero_grad(set_to_none=True)
        if autocast:
            scaler.scale(loss).backward()
            scaler.step(ours_optimizer)
            scaler.update()
        else:
            loss.backward()
            ours_optimizer.step()

    fns = {"ours": ours_step, "reference": lambda: reference.step(*args),
           "reference_l2g_roi_align": lambda: reference_l2g_roi.step(*args)}
    if amp:
        fns["ours_amp"] = lambda: ours_step(autocast=True)
    times = interleaved(fns, device, repeats, warmup)

    with FlopCounterMode(display=False) as counter:
        method.losses(batch)["loss"].backward()
    ours_optimizer.zero_grad(set_to_none=True)

    images = config.optim.batch_size
    result = {
        "batch": images, "views_per_image": int(batch["boxes"].shape[1]),
        "global_size": config.data.global_size, "patch_size": config.views.patch_size,
        "backbone": config.model.backbone, "pcm": config.model.pcm,
        "loss_ours": ours_loss, "loss_reference": reference_loss,
        "loss_abs_diff": max(abs(ours_loss - reference_loss), abs(ours_loss - reference_l2g_roi_loss)),
        "torchvision_compiled_ops": has_compiled_ops(),
        "flops_per_step": int(counter.get_total_flops()),
        "amp_dtype": str(dtype).replace("torch.", "") if amp else None,
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
                    warmup: int, amp: bool = False) -> dict:
    """Figure 2: 8-pass multi-scale + flip attention maps of a few images, ours vs the release's way.

    Both start from the 8-bit image: ours builds the release's inputs (``cams.resize=pil_bicubic``, what
    ``l2g cams``' loader workers do) and runs :func:`l2g.method.attention_maps.image_attention`; the reference runs its
    own network (:mod:`benchmarks.reference_nets`, our weights) the release's way. Raw scores, as the
    release; the largest difference between the two sides' maps is recorded. With ``amp``, ours is also
    timed under ``torch.autocast`` (for information: its maps differ from fp32 by the recorded amount).
    """
    torch.manual_seed(config.seed)
    net = build_method(config).inference_net().to(device).eval()
    reference_net = build_reference_net(config.model, config.data.num_classes, net.state_dict()).to(device).eval()
    images = synthetic_images(sizes, config.data.num_classes, config.seed)
    scales = tuple(config.cams.scales)
    mean, std = config.data.mean, config.data.std

    def ours() -> list[dict]:
        out = []
        for image, labels in images:
            inputs = [x.to(device) for x in scaled_inputs(image, scales, mean, std, "pil_bicubic")]
            out.append(image_attention(net, inputs, labels, scales, flip=True, upsample=config.cams.upsample,
                                       size=image.shape[:2]))
        return out

    def reference() -> list[dict]:
        return [reference_attention(reference_net, image, labels, scales, device) for image, labels in images]

    def ours_amp() -> list[dict]:
        with torch.autocast(device.type, dtype=amp_dtype(device)):
            return ours()

    def difference(a: list[dict], b: list[dict]) -> float:
        return max(float(np.abs(x[c] - y[c]).max()) for x, y in zip(a, b, strict=True) for c in x)

    expected = reference()
    result = {
        "image_sizes": [list(s) for s in sizes], "scales": list(scales), "passes": 2 * len(scales),
        "backbone": config.model.backbone, "pcm": config.model.pcm, "max_abs_diff": difference(ours(), expected),
    }
    fns = {"ours": ours, "reference": reference}
    if amp:
        fns["ours_amp"] = ours_amp
        result["amp_dtype"] = str(amp_dtype(device)).replace("torch.", "")
        result["amp_max_abs_diff"] = difference(ours_amp(), expected)
    times = interleaved(fns, device, repeats, warmup)
    for name, samples in times.items():
        result[f"{name}_seconds"] = samples
        result[f"{name}_seconds_per_image"] = median(samples) / len(images)
    return result


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

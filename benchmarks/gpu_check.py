"""The checks to run when a GPU is lent (under 5 minutes on one GPU), and a CPU smoke test of the same code.

    python -m benchmarks.gpu_check                  # on a GPU: the paper's sizes
    python -m benchmarks.gpu_check --smoke          # CPU (CI): tiny sizes, gloo instead of NCCL
    python -m benchmarks.gpu_check --skip-figures   # without the benchmark's GPU figures

1. Training steps of L2G + shape transfer (release semantics), ResNet-38 + PCM at 448 px, batch 3, N = 6
   views of 320 px, random weights: fp32, bf16 autocast, fp16 autocast + gradient scaler. For each:
   finite losses, images/s (median of the timed steps), peak GPU memory.
2. DDP on one GPU: a process group of one (NCCL; gloo on a CPU), the step wrapped in
   DistributedDataParallel, a few steps with an all-reduce of the loss: finite, same loss as without DDP.
3. ``l2g cams``' passes on a VOC-sized image (500 x 375) at scale 2.0 with its flip (the PCM's largest
   affinity), and at the four scales: peak GPU memory and seconds, in fp32 and under autocast, with the
   largest difference of the autocast maps from fp32 (the tolerance cams.amp is on by default for).
4. The benchmark's GPU figures: ``python -m benchmarks.run --size paper --device cuda --demo skip`` in a
   child process (skipped with --skip-figures, and on a CPU).

Writes ``benchmarks/gpu_check.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RELEASE = ["method.name=l2g_shape", "method.background=release", "method.shape_form=release", "model.dropout=0.0"]
PAPER = ["model.backbone=resnet38", "model.pcm=true", "model.pcm_dims=[64,128]", "model.pcm_out=192",
         "model.pretrained=scratch", "data.num_classes=20", "data.global_size=448", "views.n=6",
         "views.patch_size=320", "optim.batch_size=3"]
SMOKE = ["model.backbone=resnet38", "model.width_mult=0.0625", "model.pcm=true", "model.pcm_dims=[4,8]",
         "model.pcm_out=12", "model.pretrained=scratch", "data.num_classes=20", "data.global_size=64",
         "views.n=4", "views.patch_size=48", "optim.batch_size=2"]


def config_for(smoke: bool, device: torch.device):
    from l2g.config import load_config

    return load_config("synth", [*RELEASE, *(SMOKE if smoke else PAPER), f"device={device.type}"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def training_steps(config, device: torch.device, precision: str, steps: int, warmup: int) -> dict:
    """``steps`` timed optimiser steps (after ``warmup``) of the library's L2G step in ``precision``."""
    from benchmarks.figures import make_batch
    from l2g.engine.precision import cuda_bf16_support
    from l2g.method.methods import build_method
    from l2g.optim import build_optimizer

    torch.manual_seed(0)
    method = build_method(config).to(device).train()
    optimizer = build_optimizer(method, [], config.optim)
    batch = make_batch(config, device, seed=0)
    batch["boxes"] = batch["boxes"].cpu()  # as the trainer keeps them (host_keys)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype == torch.bfloat16 and device.type == "cuda" and not cuda_bf16_support(device)[0]:
        return {"skipped": "this GPU has no native bf16 (training uses fp16 + a gradient scaler there)"}
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses, times = [], []
    reset_peak(device)
    for index in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:
            loss = method.losses(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
            losses.append(float(loss.detach()))
    seconds = statistics.median(times)
    return {"losses": losses, "finite": all(np.isfinite(losses)), "seconds_per_step": seconds,
            "images_per_s": config.optim.batch_size / seconds, "peak_memory_bytes": peak_bytes(device)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_one_process(config, device: torch.device, steps: int) -> dict:
    """A process group of one (NCCL on a GPU), the L2G step in DDP; its losses against the plain step's."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from benchmarks.figures import make_batch
    from l2g.method.methods import build_method
    from l2g.optim import build_optimizer

    backend = "nccl" if device.type == "cuda" else "gloo"
    unused: list[str] = []
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, **kwargs)
    try:
        results = {}
        for wrapped in (False, True):
            torch.manual_seed(0)
            method = build_method(config).to(device).train()
            optimizer = build_optimizer(method, [], config.optim)
            batch = make_batch(config, device, seed=0)
            batch["boxes"] = batch["boxes"].cpu()

            class Step(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, data):
                    return self.inner.losses(data)["loss"]

            runner = Step(method)
            if wrapped:
                runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None,
                                                 find_unused_parameters=bool(unused))
            losses = []
            for _ in range(steps):
                loss = runner(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                reduced = loss.detach().clone()
                if wrapped:
                    dist.all_reduce(reduced)
                losses.append(float(reduced))
            if not wrapped:  # parameters the loss never reaches make DDP need find_unused_parameters
                unused = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
            results["ddp" if wrapped else "plain"] = losses
        gap = max(abs(a - b) for a, b in zip(results["ddp"], results["plain"], strict=True))
        return {"backend": backend, "losses": results["ddp"], "finite": bool(np.isfinite(results["ddp"]).all()),
                "max_abs_diff_vs_plain": gap, "find_unused_parameters": bool(unused), "unused": unused[:5]}
    finally:
        dist.destroy_process_group()


def cams_memory(config, device: torch.device, size: tuple[int, int]) -> dict:
    """Peak memory and time of the attention-map passes of one image: scale 2.0 alone, then all four."""
    from l2g.engine.precision import cuda_bf16_support
    from l2g.method.attention_maps import image_attention, scaled_inputs
    from l2g.models.attention_net import build_attention_net

    torch.manual_seed(0)
    net = build_attention_net(config.model, config.data.num_classes).to(device).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    labels = [0, 14]
    low = torch.bfloat16 if device.type == "cpu" or cuda_bf16_support(device)[0] else torch.float16
    out: dict = {"image": list(size), "autocast_dtype": str(low).replace("torch.", "")}
    maps = {}
    for scales in ((2.0,), (0.5, 1.0, 1.5, 2.0)):
        for amp in (False, True):
            inputs = [x.to(device) for x in scaled_inputs(image, scales, config.data.mean, config.data.std)]
            context = torch.autocast(device.type, dtype=low) if amp else contextlib.nullcontext()
            reset_peak(device)
            synchronize(device)
            start = time.perf_counter()
            with context:
                maps[(scales, amp)] = image_attention(net, inputs, labels, scales, size=size)
            synchronize(device)
            key = f"scales {','.join(map(str, scales))}{' autocast' if amp else ''}"
            out[key] = {"seconds": time.perf_counter() - start, "peak_memory_bytes": peak_bytes(device)}
        gap = max(float(np.abs(maps[(scales, True)][c] - maps[(scales, False)][c]).max()) for c in labels)
        out[f"scales {','.join(map(str, scales))} autocast"]["max_abs_diff_vs_fp32"] = gap
    return out


def benchmark_figures(timeout: int) -> dict:
    out = REPO_ROOT / "benchmarks" / "results_gpu.json"
    command = [sys.executable, "-m", "benchmarks.run", "--size", "paper", "--device", "cuda", "--demo", "skip",
               "--repeats", "3", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    return {"command": " ".join(command), "returncode": done.returncode, "seconds": time.perf_counter() - started,
            "table": done.stdout[-4000:], "stderr": done.stderr[-2000:]}


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    smoke = args.smoke or device.type == "cpu"
    if smoke:
        torch.set_num_threads(1)  # two threads on two shared cores thrash
    config = config_for(smoke, device)
    report: dict = {"device": str(device), "smoke": smoke,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "torch": torch.__version__, "settings": [*RELEASE, *(SMOKE if smoke else PAPER)]}
    steps, warmup = (1, 0) if smoke else (args.steps, 2)
    started = time.perf_counter()
    report["training"] = {p: training_steps(config, device, p, steps, warmup) for p in ("fp32", "bf16", "fp16")}
    report["ddp"] = ddp_one_process(config, device, 2)
    report["cams"] = cams_memory(config, device, (48, 64) if smoke else (375, 500))
    if device.type == "cuda" and not args.skip_figures:
        left = max(60, int(args.budget - (time.perf_counter() - started)))
        try:
            report["figures"] = benchmark_figures(left)
        except subprocess.TimeoutExpired:
            report["figures"] = {"skipped": f"benchmarks.run did not finish in {left} s"}
    report["seconds"] = time.perf_counter() - started
    return report


def format_table(report: dict) -> str:
    def gb(value):
        return "-" if value is None else f"{value / 1e9:.2f}"

    lines = [f"device {report['device']} ({report['gpu'] or 'CPU smoke test'}), torch {report['torch']}",
             "| training step | finite | images/s | peak memory GB |", "| --- | --- | --- | --- |"]
    for name, r in report["training"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | |")
        else:
            lines.append(f"| {name} | {r['finite']} | {r['images_per_s']:.2f} | {gb(r['peak_memory_bytes'])} |")
    d = report["ddp"]
    losses = ", ".join(f"{x:.4f}" for x in d["losses"])
    lines.append(f"DDP ({d['backend']}, 1 process, find_unused_parameters={d['find_unused_parameters']}): losses "
                 f"{losses}, finite {d['finite']}, max |DDP - plain| {d['max_abs_diff_vs_plain']:.1e}")
    c = report["cams"]
    lines += ["| cams passes, image " + "x".join(map(str, c["image"])) + " | seconds | peak memory GB | max diff |",
              "| --- | --- | --- | --- |"]
    for key, r in c.items():
        if isinstance(r, dict):
            diff = r.get("max_abs_diff_vs_fp32")
            lines.append(f"| {key} | {r['seconds']:.3f} | {gb(r['peak_memory_bytes'])} | "
                         f"{'' if diff is None else f'{diff:.1e}'} |")
    if "figures" in report:
        lines += ["benchmark figures:", report["figures"].get("table", report["figures"].get("skipped", ""))]
    lines.append(f"{report['seconds']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per precision (default: 5)")
    parser.add_argument("--skip-figures", action="store_true", help="do not run benchmarks.run --size paper")
    parser.add_argument("--budget", type=int, default=280, help="seconds the whole check may take (default: 280)")
    parser.add_argument("--out", default="benchmarks/gpu_check.json", help="JSON output (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    report = run(args)
    table = format_table(report)
    print(table)
    report["table"] = table
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out}")
    ok = all(r.get("finite", True) for r in report["training"].values()) and report["ddp"]["finite"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

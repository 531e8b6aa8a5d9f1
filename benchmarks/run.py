"""The l2g benchmark: every speed figure as a ratio to a reference measured side by side, in one run on one
machine, plus the absolute numbers (medians of interleaved repeats after warm-up). See docs/benchmarks.md.

    python -m benchmarks.run                          # small sizes, CPU-friendly (a few minutes)
    python -m benchmarks.run --size paper --device cuda   # ResNet-38, 448 px, batch 3, N = 6
    python -m benchmarks.run --quick                  # tiny sizes, 2 repeats: checks that it runs
    python -m benchmarks.run --demo full              # also the full synthetic demo (~15 min on 2 cores)

Figures: (1) classification-stage training throughput vs the release's procedure; (2) 8-pass multi-scale
+ flip attention maps vs the release's test script; (3) threshold sweep over 5 thresholds vs rereading
one PNG per class per threshold; (4) achieved FLOP/s of a training step / measured fp32 matmul peak, and
peak resident memory of the demo; (5) the demo's wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import figures
from benchmarks.output import write_report
from benchmarks.timing import matmul_peak, median
from l2g.config import Config, ConfigError, load_config
from l2g.data.synth import SynthSpec, voc_sized_spec, write_dataset
from l2g.engine.precision import resolve_precision
from l2g.method.methods import build_method

THRESHOLDS = (0.10, 0.15, 0.20, 0.25, 0.30)
# The release's semantics on both sides of figure 1: L2G + shape transfer, its background channel and
# its form of Eq. 7. No dropout, so that the two sides' losses can be compared exactly.
METHOD = ["method.name=l2g_shape", "method.background=release", "method.shape_form=release", "model.dropout=0.0"]
# training: on a CPU against the reference with l2g's RoIAlign (equal RoIAlign: torchvision's compiled op does not
# load on CPU torch), on a GPU against the reference as the release runs it.
TARGETS = {"training_cpu": 1.5, "training_gpu_amp": 2.0, "attention_maps": 3.0, "threshold_sweep": 10.0,
           "flops_fraction": 0.40, "demo_peak_rss_gb": 4.0}


@dataclass(frozen=True)
class Size:
    """What one size setting runs (every network setting is a ``--set`` override of the synth preset)."""

    network: list[str]
    train: list[str]
    inference_sizes: list[tuple[int, int]]
    sweep: SynthSpec
    peak_size: int
    repeats: int
    demo_data: SynthSpec
    demo_overrides: list[str] = field(default_factory=list)


QUICK_DEMO = ["data.num_classes=3", "data.resize_short=40", "data.global_size=32", "views.patch_size=24",
              "optim.epochs=1", "optim.batch_size=4", "model.width=4", "cams.scales=[1.0]", "threads=1"]
SIZES = {
    "quick": Size(
        network=["data.num_classes=3", "model.width=8"],
        train=["data.resize_short=56", "data.global_size=48", "views.patch_size=32", "optim.batch_size=2"],
        inference_sizes=[(40, 48), (48, 40)],
        sweep=SynthSpec(num_classes=3, train=6, val=1, min_side=40, max_side=56),
        peak_size=512, repeats=2,
        demo_data=SynthSpec(num_classes=3, train=8, val=2, min_side=40, max_side=56), demo_overrides=QUICK_DEMO),
    "small": Size(
        network=[],  # the synthetic demo's network: small_cnn width 16, 6 classes
        train=[],  # the demo's training shapes: 112 px global views, N = 4 views of 80 px, batch 8
        inference_sizes=[(112, 160), (136, 128), (160, 144), (128, 120)],
        sweep=voc_sized_spec(train=100, val=1),  # VOC-sized maps and masks, 20 classes
        peak_size=2048, repeats=5,
        demo_data=SynthSpec(num_classes=6, train=48, val=8), demo_overrides=["optim.epochs=1"]),
    "paper": Size(
        network=["model.backbone=resnet38", "data.num_classes=20", "model.pcm=true", "model.pcm_dims=[64,128]",
                 "model.pcm_out=192"],
        train=["data.resize_short=512", "data.global_size=448", "views.n=6", "views.patch_size=320",
               "optim.batch_size=3"],
        inference_sizes=[(375, 500), (500, 375)],
        sweep=voc_sized_spec(train=100, val=1),
        peak_size=2048, repeats=5,
        demo_data=SynthSpec(num_classes=6, train=48, val=8), demo_overrides=["optim.epochs=1"]),
}


def network_config(size: Size, device: torch.device, extra: list[str]) -> tuple[Config, str | None]:
    """The benchmark's config, and a note when the paper's backbone is missing and small_cnn stands in."""
    base = [*METHOD, f"device={device.type}", *extra]
    try:
        config = load_config("synth", [*base, *size.network, *size.train])
        build_method(config)  # fails here (not mid-benchmark) when the backbone does not exist
        return config, None
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as error:
        if "model.backbone=resnet38" not in size.network:
            raise
        fallback = [s for s in size.network if not s.startswith("model.backbone=")]
        note = (f"model.backbone: resnet38 is not available in this checkout ({error}); "
                "falling back to small_cnn at the paper's resolution, batch and N")
        print(f"note: {note}", file=sys.stderr)
        return load_config("synth", [*base, *fallback, *size.train]), note


def machine_info(device: torch.device) -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": model, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        # "fp32" convolutions run as TF32 on recent GPUs unless cuDNN's flag is off: say which it was.
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _step(number: int, text: str, started: list[float]) -> None:
    now = time.perf_counter()
    took = f" (previous step {now - started[-1]:.1f} s)" if len(started) > 1 else ""
    started.append(now)
    print(f"[{number}/5] {text}{took}", flush=True)


def run(args: argparse.Namespace) -> dict:
    size_name = "quick" if args.quick else args.size
    size = SIZES[size_name]
    repeats = args.repeats or size.repeats
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.run: --device cuda but torch sees no GPU")
    config, note = network_config(size, device, args.overrides)
    precision = resolve_precision(config.amp, config.runtime.channels_last, device, training=True)
    if any(item.startswith("threads=") for item in args.overrides) and config.threads > 0:
        torch.set_num_threads(config.threads)  # only when asked: the synth preset's threads=2 suits 2 cores only
    report: dict = {"settings": {"size": size_name, "device": str(device), "repeats": repeats,
                                 "warmup": args.warmup, "precision": precision.describe_layout(),
                                 "precision_reason": precision.reason, "demo": args.demo},
                    "machine": machine_info(device), "load_average_start": load_average(), "notes": []}
    if note:
        report["notes"].append(note)
    report["settings"]["backbone"] = config.model.backbone

    started = [time.perf_counter()]
    _step(1, f"training step ({config.model.backbone}, batch {config.optim.batch_size}, N={config.views.n}) "
          f"on {device}", started)
    train = figures.training_throughput(config, device, repeats, args.warmup)
    against = "reference" if device.type == "cuda" else "reference_l2g_roi_align"
    train["ratio_against"] = against
    train["ratio"] = train["ours_images_per_s"] / train[f"{against}_images_per_s"]
    train["target"] = TARGETS["training_gpu_amp"] if device.type == "cuda" else TARGETS["training_cpu"]

    _step(2, "multi-scale + flip attention maps", started)
    inference = figures.inference_speed(config, device, size.inference_sizes, repeats, args.warmup)
    inference["ratio"] = inference["reference_seconds_per_image"] / inference["ours_seconds_per_image"]
    inference["target"] = TARGETS["attention_maps"]

    with tempfile.TemporaryDirectory(prefix="l2g-bench-") as tmp:
        tmp = Path(tmp)
        _step(3, f"threshold sweep ({size.sweep.train} images, {len(THRESHOLDS)} thresholds)", started)
        sweep_root = write_dataset(tmp / "sweep_data", size.sweep, progress=False)
        sweep_config = load_config("synth", [f"data.root={sweep_root}", f"data.num_classes={size.sweep.num_classes}",
                                             "cams.split=train", *args.overrides])
        sweep = figures.sweep_speed(sweep_config, tmp / "sweep", THRESHOLDS, repeats, args.warmup)
        sweep["ratio"] = sweep["reference_median_seconds"] / sweep["ours_median_seconds"]
        sweep["target"] = TARGETS["threshold_sweep"]

        _step(4, "fp32 matmul peak", started)
        peak = matmul_peak(device, size.peak_size if device.type == "cpu" else 8192, torch.float32, repeats=5)
        fp32_seconds = median(train.get("ours_fp32_seconds", train["ours_seconds"]))
        flops = {"flops_per_step": train["flops_per_step"], "step_seconds": fp32_seconds,
                 "achieved_flops_per_s": train["flops_per_step"] / fp32_seconds, "peak": peak}
        flops["fraction"] = flops["achieved_flops_per_s"] / peak["flops_per_s"]
        flops["target"] = TARGETS["flops_fraction"]
        if precision.enabled:
            low = matmul_peak(device, peak["size"], precision.dtype, repeats=5)
            amp_seconds = median(train["ours_seconds"])
            flops["amp"] = {"peak": low, "achieved_flops_per_s": train["flops_per_step"] / amp_seconds,
                            "fraction": train["flops_per_step"] / amp_seconds / low["flops_per_s"]}

        demo = None
        if args.demo != "skip":
            _step(5, f"demo ({args.demo}) in a child process", started)
            demo = run_demo(args.demo, size, tmp)
    report["load_average_end"] = load_average()
    report["seconds"] = time.perf_counter() - started[0]
    report["figures"] = {"1_training_throughput": train, "2_attention_maps": inference, "3_threshold_sweep": sweep,
                         "4_flops": flops}
    if demo is not None:
        demo["target_peak_rss_gb"] = TARGETS["demo_peak_rss_gb"]
        report["figures"]["4_5_demo"] = demo
    report["summary"] = summary(report)
    return report


def run_demo(mode: str, size: Size, tmp: Path) -> dict:
    """The full demo (its own dataset, default settings) or a reduced one (small dataset, 1 epoch)."""
    if mode == "full":
        result = figures.demo_run(tmp, [], tmp / "demo_data")  # the demo writes its own dataset (timed)
        result["mode"] = "full: l2g demo with its defaults, dataset generation included"
    else:
        root = write_dataset(tmp / "demo_data", size.demo_data, progress=False)
        overrides = [f"data.num_classes={size.demo_data.num_classes}", *size.demo_overrides]
        result = figures.demo_run(tmp, overrides, root)
        result["mode"] = (f"quick: reduced demo ({size.demo_data.train} train images, overrides "
                          f"{' '.join(overrides)}); not the full demo's time")
    return result


def summary(report: dict) -> dict[str, float]:
    """The headline numbers, flat: every one is a positive number (what tests/test_benchmarks.py checks)."""
    f = report["figures"]
    train, maps, sweep, flops = (f["1_training_throughput"], f["2_attention_maps"], f["3_threshold_sweep"],
                                 f["4_flops"])
    out = {
        "training_ratio": train["ratio"],
        "training_ours_images_per_s": train["ours_images_per_s"],
        "training_reference_images_per_s": train["reference_images_per_s"],
        "attention_maps_ratio": maps["ratio"],
        "attention_maps_ours_seconds_per_image": maps["ours_seconds_per_image"],
        "attention_maps_reference_seconds_per_image": maps["reference_seconds_per_image"],
        "attention_maps_new_sizes_ratio": (maps["reference_new_sizes_seconds_per_image"]
                                           / maps["ours_new_sizes_seconds_per_image"]),
        "sweep_ratio": sweep["ratio"],
        "sweep_ours_seconds": sweep["ours_median_seconds"],
        "sweep_reference_seconds": sweep["reference_median_seconds"],
        "flops_fraction_of_fp32_peak": flops["fraction"],
        "training_achieved_gflops": flops["achieved_flops_per_s"] / 1e9,
        "fp32_matmul_peak_gflops": flops["peak"]["flops_per_s"] / 1e9,
    }
    if "4_5_demo" in f:
        out["demo_peak_rss_gb"] = f["4_5_demo"]["peak_rss_bytes"] / 1e9
        out["demo_wall_seconds"] = f["4_5_demo"]["wall_seconds"]
    return out


def _met(value: float, target: float, higher: bool = True) -> str:
    return "yes" if (value >= target if higher else value <= target) else "NO"


def format_table(report: dict) -> str:
    f = report["figures"]
    train, maps, sweep, flops = (f["1_training_throughput"], f["2_attention_maps"], f["3_threshold_sweep"],
                                 f["4_flops"])
    ours, against = train["ours_precision"], train["ratio_against"]
    ref_name = "reference with l2g's RoIAlign" if against == "reference_l2g_roi_align" else "reference"
    rows = [("figure", "ours", "reference", "ratio", "target", "met"), ("---",) * 6]
    rows.append((f"1. training step, img/s (ours {ours}; {ref_name}, fp32)", f"{train['ours_images_per_s']:.2f}",
                 f"{train[f'{against}_images_per_s']:.2f}", f"{train['ratio']:.2f}x", f">= {train['target']:g}x",
                 _met(train["ratio"], train["target"])))
    other = "reference" if against != "reference" else "reference_l2g_roi_align"
    other_name = "reference (torchvision's RoIAlign)" if other == "reference" else "reference with l2g's RoIAlign"
    rows.append((f"   (info) against the {other_name}", f"{train['ours_images_per_s']:.2f}",
                 f"{train[f'{other}_images_per_s']:.2f}",
                 f"{train['ours_images_per_s'] / train[f'{other}_images_per_s']:.2f}x", "", ""))
    if "ours_fp32_images_per_s" in train:
        fp32 = train["ours_fp32_images_per_s"]
        rows.append((f"   (info) ours in float32, against the {ref_name}", f"{fp32:.2f}",
                     f"{train[f'{against}_images_per_s']:.2f}", f"{fp32 / train[f'{against}_images_per_s']:.2f}x",
                     "", ""))
    rows.append((f"2. attention maps, {maps['passes']} passes, s/img (ours {maps['ours_precision']}, "
                 f"max diff {maps['max_abs_diff']:.1e})", f"{maps['ours_seconds_per_image']:.4f}",
                 f"{maps['reference_seconds_per_image']:.4f}", f"{maps['ratio']:.2f}x", f">= {maps['target']:g}x",
                 _met(maps["ratio"], maps["target"])))
    if "ours_fp32_seconds_per_image" in maps:
        fp32 = maps["ours_fp32_seconds_per_image"]
        rows.append((f"   (info) ours in float32 (max diff {maps['fp32_max_abs_diff']:.1e})",
                     f"{fp32:.4f}", f"{maps['reference_seconds_per_image']:.4f}",
                     f"{maps['reference_seconds_per_image'] / fp32:.2f}x", "", ""))
    new_ref = maps["reference_new_sizes_seconds_per_image"]
    for name, label in (("ours", f"ours {maps['ours_precision']}"), ("ours_fp32", "ours in float32")):
        if f"{name}_new_sizes_seconds_per_image" in maps:
            value = maps[f"{name}_new_sizes_seconds_per_image"]
            rows.append((f"   (info) {label}, every image a new size", f"{value:.4f}", f"{new_ref:.4f}",
                         f"{new_ref / value:.2f}x", "", ""))
    rows.append((f"3. sweep, {len(sweep['thresholds'])} thresholds, {sweep['images']} images, s",
                 f"{sweep['ours_median_seconds']:.3f}", f"{sweep['reference_median_seconds']:.3f}",
                 f"{sweep['ratio']:.2f}x", f">= {sweep['target']:g}x", _met(sweep["ratio"], sweep["target"])))
    one = sweep["ours_one_thread_median_seconds"]
    rows.append(("   (info) ours on one worker", f"{one:.3f}", f"{sweep['reference_median_seconds']:.3f}",
                 f"{sweep['reference_median_seconds'] / one:.2f}x", "", ""))
    rows.append(("4. training GFLOP/s / fp32 matmul peak", f"{flops['achieved_flops_per_s'] / 1e9:.1f}",
                 f"{flops['peak']['flops_per_s'] / 1e9:.1f} (peak)", f"{100 * flops['fraction']:.1f}%",
                 f">= {100 * flops['target']:g}%", _met(flops["fraction"], flops["target"])))
    if "amp" in flops:
        amp = flops["amp"]
        rows.append((f"   (info) AMP step / {amp['peak']['dtype']} matmul peak",
                     f"{amp['achieved_flops_per_s'] / 1e9:.1f}", f"{amp['peak']['flops_per_s'] / 1e9:.1f} (peak)",
                     f"{100 * amp['fraction']:.1f}%", "", ""))
    demo = f.get("4_5_demo")
    if demo:
        label = "demo" if demo["mode"].startswith("full") else "reduced demo"
        gb = demo["peak_rss_bytes"] / 1e9
        rows.append((f"4. {label} peak resident memory, GB", f"{gb:.2f}", "", "",
                     f"<= {demo['target_peak_rss_gb']:g}", _met(gb, demo["target_peak_rss_gb"], higher=False)))
        rows.append((f"5. {label} wall time, min", f"{demo['wall_seconds'] / 60:.2f}", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines[1] = "| " + " | ".join("-" * w for w in widths) + " |"
    machine = report["machine"]
    footer = [f"machine: {machine['cpu']}, {machine['cpu_cores']} cores, torch {machine['torch']} "
              f"({machine['torch_threads']} threads), device {machine['device']}"
              + (f" ({machine['gpu']}, TF32 convolutions {'on' if machine['cudnn_allow_tf32'] else 'off'})"
                 if "gpu" in machine else ""),
              f"load average at start {report['load_average_start']}, at end {report['load_average_end']}",
              f"checks: training loss |ours - reference| = {train['loss_abs_diff']:.2e}; attention maps max "
              f"|ours - reference| = {maps['max_abs_diff']:.2e}; sweep mIoU max |ours - reference| = "
              f"{sweep['miou_max_abs_diff']:.2e} (reference reads 8-bit PNGs)"]
    kind = "compiled op" if train["torchvision_compiled_ops"] else "pure-PyTorch fallback (compiled ops missing)"
    footer.append(f"reference RoIAlign: torchvision's {kind}")
    start = report["load_average_start"]  # the end value counts this run's own threads
    if start and start[0] > 0.5 * (machine["cpu_cores"] or 1):
        footer.append("warning: the machine was busy when the run started (1-minute load average above half its "
                      "cores): if other jobs shared the cores, these timings are not representative")
    footer += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines + [""] + footer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--size", choices=("small", "paper"), default="small",
                        help="small: the synthetic demo's small CNN (CPU, minutes); paper: ResNet-38 at 448 px, "
                             "batch 3, N=6 (for GPUs; very slow on a CPU). Default: small")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 2 repeats: checks that everything runs, the timings mean little")
    parser.add_argument("--demo", choices=("quick", "full", "skip"), default="quick",
                        help="quick: a reduced demo (small dataset, 1 epoch) for peak memory; full: the real "
                             "'l2g demo' for its wall time too (~15 min on 2 CPU cores); default: quick")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default: 5, quick: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default: 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the benchmarked network, e.g. --set threads=1; --set amp=off "
                             "--set cams.amp=off times float32 only (default: what the library picks here)")
    parser.add_argument("--out", default="benchmarks/results.json", help="JSON output (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit("benchmarks.run: --repeats must be >= 1")
    report = run(args)
    write_report(report, format_table(report), args.out, note=f" ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How the cost of l2g's stages grows with the dataset and the images: VOC-sized synthetic data, a width-reduced
ResNet-38 + PCM on the CPU. See docs/benchmarks.md ("Scale").

    python -m benchmarks.scale                      # ~15-20 min on 2 busy cores
    python -m benchmarks.scale --images 100 200 400 # the issue's dataset sizes (about twice as long)
    python -m benchmarks.scale --quick              # tiny sizes: checks that it runs (CI)

Two axes: the dataset size N (default 50, 100, 200 images of half VOC's size) and the image size (default
8 images with a long side of 125, 250 and 500 px = VOC's). For each point it runs, each in a child process of
its own (peak resident memory = the child's ``ru_maxrss``; time measured inside the child, without its
start-up): the pre-flight check of ``l2g train`` (``split_samples`` with ``data.check_images=decode``,
first with an empty cache, then again: the cache's effect), ``l2g cams`` (8 passes: scales 0.5-2 and
flips, the release's PIL-bicubic inputs), ``l2g eval-cams`` and ``l2g pseudo``. It fits the growth exponent
``b`` of ``seconds = a * N^b`` per stage (target: <= 1.05, i.e. linear) and reports peak memory per N
(target: flat), and the per-pixel exponent along the image axis (the PCM's affinity is quadratic in the
number of pixels). It ends with the peak memory of one VOC-sized image at scale 2.0 with the PCM's
affinity built whole and chunked (``benchmarks/pcm_memory.py``). A fixed number of training steps (448 px
views, batch 2, N = 6) is measured once: its cost does not depend on the dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.output import write_report
from l2g.data.synth import voc_sized_spec, write_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_EXPONENT = 1.05
TARGET_MEMORY_RATIO = 1.15  # peak memory at the largest N / at the smallest
NETWORK = ["data.num_classes=20", "model.backbone=resnet38", "model.width_mult=0.125", "model.pcm=true",
           "model.pcm_dims=[8,16]", "model.pcm_out=24", "model.pretrained=scratch", "method.name=l2g_shape",
           "method.background=release", "method.shape_form=release", "cams.resize=pil_bicubic",
           "cams.source=logits", "data.workers=0", "eval.parallel=processes"]  # one sweep mode at every N
TRAIN = ["data.resize_short=512", "data.global_size=448", "views.n=6", "views.patch_size=320",
         "optim.batch_size=2", "optim.epochs=1", "log_every=1"]
QUICK = ["model.width_mult=0.0625", "model.pcm_dims=[4,8]", "model.pcm_out=12", "data.resize_short=72",
         "data.global_size=64", "views.patch_size=48", "cams.scales=[0.5,1.0]"]


def write_subsets(root: Path, sizes: list[int], steps_images: int) -> None:
    """Split lists ``n<N>`` (the first N training images) and ``steps`` (for the fixed training steps)."""
    sets = root / "ImageSets" / "Segmentation"
    ids = (sets / "train.txt").read_text().split()
    lines = (sets / "train_cls.txt").read_text().splitlines()
    for name, count in [*((f"n{n}", n) for n in sizes), ("steps", steps_images)]:
        (sets / f"{name}.txt").write_text("\n".join(ids[:count]) + "\n")
        (sets / f"{name}_cls.txt").write_text("\n".join(lines[:count]) + "\n")


IN_PROCESS = {"on": False}  # --quick: stages run in this process (peak memory: this process's, cumulative)


def child(stage: str, config_args: list[str], run: Path, split: str, out: Path, env: dict,
          cams: Path | None = None) -> dict:
    """Run one stage in a child process; its own timing, plus its peak resident memory."""
    if IN_PROCESS["on"]:
        import resource

        from benchmarks.stage_child import run_stage

        result = run_stage(stage, str(run), split, str(out), str(cams or out), config_args)
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024)
        return result
    result_file = out.parent / f".{out.name}.result.json"
    command = [sys.executable, "-m", "benchmarks.stage_child", stage, str(run), split, str(out), str(cams or out),
               str(result_file), *config_args]
    log = out.parent / f".{out.name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{stage} failed: {' '.join(command)}\n{log.read_text()[-3000:]}")
    result = json.loads(result_file.read_text())
    result["peak_rss_bytes"] = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return result


def folder_bytes(folder: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in suffixes) if folder.is_dir() else 0


def fit_exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(N)."""
    xs, ys = [math.log(n) for n in sizes], [math.log(max(s, 1e-9)) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def spec_for(long_side: int, images: int):
    """The VOC-sized variant scaled to ``long_side`` (VOC: 500, short sides 333-375)."""
    return replace(voc_sized_spec(train=images, val=1, seed=0), long_side=long_side,
                   min_side=max(8, round(long_side * 333 / 500)), max_side=max(8, round(long_side * 375 / 500)))


STAGES = ("check", "check_cached", "cams", "eval_cams", "pseudo")


def measure(name: str, root: Path, counts: list[int], config_args: list[str], run_dir: Path, work: Path,
            env: dict) -> list[dict]:
    rows = []
    for n in counts:
        row: dict = {"images": n}
        for stage in STAGES:
            out = work / f"{name}_{stage}_{n}"
            print(f"[{name}] N={n}: {stage}", flush=True)
            row[stage] = child(stage, config_args, run_dir, f"n{n}", out, env, work / f"{name}_cams_{n}")
        row["cams_bytes_per_image"] = folder_bytes(work / f"{name}_cams_{n}", (".npz", ".npy")) / n
        row["pseudo_bytes_per_image"] = folder_bytes(work / f"{name}_pseudo_{n}", (".png",)) / n
        rows.append(row)
    return rows


def dataset(work: Path, long_side: int, images: int, counts: list[int], steps_images: int) -> Path:
    root = work / f"data_{long_side}"
    spec = spec_for(long_side, max(images, steps_images))
    if not (root / "COMPLETE").exists():
        print(f"writing {spec.train} images ({long_side} px long side) to {root}", flush=True)
        write_dataset(root, spec, progress=False)
    write_subsets(root, counts, steps_images)
    return root


def run(args: argparse.Namespace) -> dict:
    sizes = sorted(args.images)
    sides = sorted(args.sides)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="l2g-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               L2G_CACHE_DIR=str(work / "decode-cache"))
    if IN_PROCESS["on"]:
        os.environ["L2G_CACHE_DIR"] = env["L2G_CACHE_DIR"]  # the stages' own, emptied by "check"
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    extra = [*NETWORK, *TRAIN, *(QUICK if args.quick else []), *(f"threads={args.threads}",) * bool(args.threads),
             *args.overrides]
    report: dict = {"settings": {"images": sizes, "side": args.side, "sides": sides, "side_images": args.side_images,
                                 "quick": args.quick, "overrides": extra, "steps": args.steps, "threads": args.threads},
                    "machine": machine(), "load_average_start": load_average()}
    started = time.perf_counter()
    steps_images = args.steps * 2  # batch 2, one epoch

    root = dataset(work, args.side, sizes[-1], sizes, steps_images)
    config_args = [f"data.root={root}", *extra]
    run_dir = work / "run"
    print(f"{args.steps} training steps", flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    report["train"] = child("train", config_args, run_dir, "steps", run_dir, env)
    rows = measure(f"side{args.side}", root, sizes, config_args, run_dir, work, env)
    report["dataset_axis"] = {
        "long_side": args.side, "rows": rows,
        "exponents": {stage: fit_exponent(sizes, [r[stage]["seconds"] for r in rows]) for stage in STAGES},
        "memory_ratio": {stage: rows[-1][stage]["peak_rss_bytes"] / rows[0][stage]["peak_rss_bytes"]
                         for stage in ("cams", "eval_cams", "pseudo")},
    }
    side_rows = []
    for side in sides:
        side_root = root if side == args.side else dataset(work, side, args.side_images, [args.side_images],
                                                           steps_images)
        if side == args.side:
            write_subsets(root, [*sizes, args.side_images], steps_images)
        row = measure(f"image{side}", side_root, [args.side_images], [f"data.root={side_root}", *extra], run_dir,
                      work, env)[0]
        row["long_side"] = side
        row["pixels_per_image"] = pixels(side_root, args.side_images)
        side_rows.append(row)
    report["image_axis"] = {"images": args.side_images, "rows": side_rows}
    if len(sides) > 1:
        px = [r["pixels_per_image"] for r in side_rows]
        report["image_axis"]["pixel_exponents"] = {stage: fit_exponent(px, [r[stage]["seconds"] for r in side_rows])
                                                   for stage in ("cams", "eval_cams", "pseudo")}
    print("PCM memory of one image at scale 2.0: whole vs chunked affinity", flush=True)
    report["pcm_memory"] = pcm_memory(args.threads, env, args.quick)
    report["load_average_end"] = load_average()
    report["seconds"] = time.perf_counter() - started
    report["notes"] = notes()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def pixels(root: Path, count: int) -> float:
    from PIL import Image

    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:count]
    total = 0
    for image_id in ids:
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as image:
            total += image.width * image.height
    return total / len(ids)


def pcm_memory(threads: int, env: dict, quick: bool) -> dict:
    """One ResNet-38/8 + PCM pass (plain + mirrored) of a VOC-sized image at scale 2.0, with the affinity built
    whole and chunked (``benchmarks/pcm_memory.py``), each variant in a fresh process: the peak resident memory
    the pass adds. --quick: a tiny image, in this process."""
    from benchmarks import pcm_memory as bench

    results = {}
    for variant in bench.VARIANTS:
        if quick:
            args = argparse.Namespace(variant=variant, height=40, width=48, scale=2.0, width_mult=0.0625,
                                      threads=max(threads, 1), repeats=1)
            results[variant] = bench.child(args)
            continue
        command = [sys.executable, "-m", "benchmarks.pcm_memory", "--variant", variant, "--threads",
                   str(max(threads, 1)), "--repeats", "1"]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=env)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def notes() -> list[str]:
    return []


def machine() -> dict:
    import torch

    from benchmarks.run import machine_info

    return machine_info(torch.device("cpu"))


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _stage_lines(rows: list[dict], key: str) -> list[str]:
    lines = [f"| {key} | stage | seconds | s / image | peak RSS GB | bytes written / image |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        n = row["images"]
        for stage in STAGES:
            r = row[stage]
            written = {"cams": row["cams_bytes_per_image"], "pseudo": row["pseudo_bytes_per_image"]}.get(stage)
            lines.append(f"| {row.get('long_side', n)} | {stage} | {r['seconds']:.2f} | {r['seconds'] / n:.4f} | "
                         f"{r['peak_rss_bytes'] / 1e9:.2f} | {'' if written is None else f'{written:,.0f}'} |")
    return lines


def format_table(report: dict) -> str:
    axis = report["dataset_axis"]
    lines = [f"Dataset size (images of {axis['long_side']} px long side):", *_stage_lines(axis["rows"], "images")]
    exps = ", ".join(f"{k} {v:.2f}" for k, v in axis["exponents"].items())
    met = all(axis["exponents"][k] <= TARGET_EXPONENT for k in ("cams", "eval_cams", "pseudo"))
    lines.append(f"growth exponent b (seconds ~ N^b): {exps}; target <= {TARGET_EXPONENT} for cams, eval_cams, "
                 f"pseudo: {'met' if met else 'NOT met'}")
    mem = ", ".join(f"{k} {v:.2f}" for k, v in axis["memory_ratio"].items())
    flat = all(v <= TARGET_MEMORY_RATIO for v in axis["memory_ratio"].values())
    lines.append(f"peak memory, largest N / smallest N: {mem}; target <= {TARGET_MEMORY_RATIO}: "
                 f"{'met' if flat else 'NOT met'}")
    train = report["train"]
    per_step = train["seconds"] / train["iterations"]
    lines.append(f"training: {train['iterations']} steps (batch 2, N = 6): {per_step:.2f} s/step, peak RSS "
                 f"{train['peak_rss_bytes'] / 1e9:.2f} GB")
    image = report["image_axis"]
    lines += ["", f"Image size ({image['images']} images each; long side in px):",
              *_stage_lines(image["rows"], "long side")]
    if "pixel_exponents" in image:
        exps = ", ".join(f"{k} {v:.2f}" for k, v in image["pixel_exponents"].items())
        lines.append(f"per-pixel exponent (seconds ~ pixels^b): {exps} (the PCM's affinity is quadratic in pixels)")
    pcm = report["pcm_memory"]
    mib = 1 << 20
    whole, chunked, base = (pcm[v]["peak_added"] / mib for v in ("whole", "chunked", "no_pcm"))
    lines += ["", f"PCM memory, one {pcm['whole']['input'][2]}x{pcm['whole']['input'][3]} input pair (an image at "
              f"scale 2.0 and its mirror image), map {pcm['whole']['map']}, affinity "
              f"{pcm['whole']['affinity_entries'] / 1e6:.0f} M entries: peak added by the pass {whole:.0f} MiB "
              f"whole, {chunked:.0f} MiB chunked, {base:.0f} MiB without the PCM (benchmarks/pcm_memory.py)"]
    m = report["machine"]
    lines += ["", f"machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']}, {report['settings']['threads']} "
              f"thread(s) per stage; load average at start {report['load_average_start']}, at end "
              f"{report['load_average_end']}; {report['seconds']:.0f} s"]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[50, 100, 200],
                        help="dataset sizes of the dataset axis (default: 50 100 200)")
    parser.add_argument("--side", type=int, default=250,
                        help="long side (px) of the dataset axis' images (default: 250, half VOC's: one 500 px "
                             "image takes ~10 s of 8-pass inference on a busy CPU core)")
    parser.add_argument("--sides", type=int, nargs="+", default=[125, 250, 500],
                        help="long sides of the image-size axis (default: 125 250 500 = VOC's)")
    parser.add_argument("--side-images", type=int, default=8, help="images per size of the image axis (default: 8)")
    parser.add_argument("--steps", type=int, default=8, help="training steps measured per image size (default: 8)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per child (default: 1: steady timings on a shared machine; 0: the "
                             "synth preset's 2)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny images and network, stages in this process: checks that it runs (CI)")
    parser.add_argument("--workdir", help="where to write the data and runs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every stage")
    parser.add_argument("--out", default="benchmarks/scale_results.json", help="JSON output (default: %(default)s)")
    return parser


def run_in_process(args: argparse.Namespace) -> dict:
    """:func:`run` with the stages in this process: its cache folder and torch threads restored afterwards."""
    import torch

    threads, cache = torch.get_num_threads(), os.environ.get("L2G_CACHE_DIR")
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)
        if cache is None:
            os.environ.pop("L2G_CACHE_DIR", None)
        else:
            os.environ["L2G_CACHE_DIR"] = cache


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.images) < 2 or min(args.images) < 1:
        raise SystemExit("benchmarks.scale: --images needs at least two positive sizes")
    if args.quick:  # tiny, in this process (no start-up per stage): a smoke test of the whole benchmark
        args.images, args.side, args.sides, args.side_images, args.steps = [3, 6], 48, [32, 48], 2, 2
        IN_PROCESS["on"] = True
    report = run_in_process(args) if IN_PROCESS["on"] else run(args)
    write_report(report, format_table(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

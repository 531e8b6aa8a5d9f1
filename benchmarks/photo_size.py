"""Your own photos at photo size: the README's ``l2g run`` command, per stage, at each preset given.

    python -m benchmarks.photo_size --out runs/photo_size --train 200 --val 50 --seeds 3 \\
        --preset pretrained_l2g_cpu --preset pretrained_l2g

The data are the synthetic generator's VOC-sized variant (``l2g synth --variant voc``: 500 px long side, 20
classes), read as a user's own folder: ``data.format custom``, the JPEGs and the label lists, the masks held
back (``data.mask_dir`` names a folder that does not exist), so every stage runs as it does for a user without
masks (Otsu's threshold, predictions instead of mIoU). Each stage runs as its own ``l2g run ... --until STAGE``
under ``/usr/bin/time -v`` (complete stages are skipped, so each process runs one stage): wall time and peak
RSS per stage, optimiser steps of both training stages. Afterwards the held-back masks score the pseudo masks
(train split) and the segmentation network's predictions (val split) as mIoU.

Writes ``<out>/photo_size.json`` (one row per preset and seed, kept across invocations, so a preset's seeds
can be run one at a time with ``--only-seed``) and prints a table with the mean and std over the seeds.
Finished stages are skipped: rerun the command to continue. The run goes on past degenerate pseudo masks
(``--allow-degenerate-masks``); their foreground share is in the row.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

from l2g.stages.pipeline_stages import STAGE_NAMES

HELD_BACK = "held_back"  # a mask folder that does not exist: the masks stay unread by the pipeline


def data_settings(data: Path) -> list[str]:
    """The dataset read as a user's own folder of tagged photos, without its masks."""
    return [f"data.root={data}", "data.format=custom", "data.image_dir=JPEGImages", f"data.mask_dir={HELD_BACK}"]


def timed(command: list[str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; its wall seconds and peak RSS (GB). Output goes to ``log``."""
    with log.open("a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        subprocess.run(["/usr/bin/time", "-v", *command], stdout=out, stderr=out, check=True)
    text = log.read_text()
    last = text[text.rindex("Command being timed"):]
    clock = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", last).group(1).split(":")
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(clock)))
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", last).group(1))
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2 ** 20, 2)}


def run_stages(preset: str, folder: Path, settings: list[str]) -> dict:
    """Every stage of ``l2g run`` in a process of its own; the costs of those run now (kept in stage_costs.json)."""
    costs_file = folder / "stage_costs.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    folder.mkdir(parents=True, exist_ok=True)
    for stage in STAGE_NAMES:
        if stage in costs:
            continue
        command = [sys.executable, "-m", "l2g", "run", preset, "--out", str(folder), "--until", stage,
                   "--allow-degenerate-masks", "--quiet", *[arg for s in settings for arg in ("--set", s)]]
        print(f"  {preset} {folder.name}: {stage}", flush=True)
        costs[stage] = timed(command, folder.parent / f"{folder.name}.log")
        costs_file.write_text(json.dumps(costs, indent=1))
    return costs


def score(predicted: Path, masks: Path, ids: list[str], num_classes: int) -> float | None:
    """mIoU of the PNG masks in ``predicted`` against the held-back ``masks`` (None: no prediction there)."""
    from l2g.data.images import read_mask
    from l2g.evaluation.confusion import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes + 1)
    for image_id in ids:
        if not (predicted / f"{image_id}.png").is_file():
            return None
        matrix.update(read_mask(predicted / f"{image_id}.png", num_classes),
                      read_mask(masks / f"{image_id}.png", num_classes))
    return matrix.metrics()["miou"]


def split_ids(data: Path, split: str) -> list[str]:
    return (data / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def foreground_share(pseudo: Path) -> float:
    """The share of the labelled pixels of the pseudo masks in ``pseudo`` that are foreground."""
    from l2g.stages.threshold import pseudo_mask_foreground

    foreground, total = pseudo_mask_foreground(pseudo)
    return foreground / total


def measure(preset: str, seed: int, out: Path, data: Path, overrides: list[str]) -> dict:
    folder = out / preset / f"seed{seed}"
    costs = run_stages(preset, folder, [*data_settings(data), f"seed={seed}", *overrides])
    num_classes = len((data / "classes.txt").read_text().split())
    train_ids, val_ids = split_ids(data, "train"), split_ids(data, "val")
    evaluation = json.loads(next((folder / "seg").glob("eval_*.json")).read_text())
    return {
        "preset": preset, "seed": seed, "photos": len(train_ids), "stages": costs,
        "minutes": round(sum(c["seconds"] for c in costs.values()) / 60, 1),
        "peak_rss_gb": max(c["peak_rss_gb"] for c in costs.values()),
        "cls_steps": json.loads((folder / "cls" / "train_metrics.json").read_text())["iterations"],
        "seg_steps": json.loads((folder / "seg" / "train_metrics.json").read_text())["iterations"],
        "threshold": json.loads((folder / "cls" / "threshold.json").read_text()).get("threshold"),
        "pseudo_foreground": round(foreground_share(folder / "cls" / "pseudo"), 3),
        "pseudo_miou": score(folder / "cls" / "pseudo", data / "SegmentationClassAug", train_ids, num_classes),
        "prediction_miou": score(Path(evaluation["predictions"]), data / "SegmentationClassAug", val_ids,
                                 num_classes),
    }


def summarise(rows: list[dict]) -> dict:
    """Per preset: mean and std over its seeds of the time, memory and quality figures."""
    keys = ["minutes", "peak_rss_gb", "pseudo_miou", "prediction_miou"]
    summary: dict = {}
    for preset in dict.fromkeys(row["preset"] for row in rows):
        mine = [row for row in rows if row["preset"] == preset]
        summary[preset] = {"seeds": [row["seed"] for row in mine]}
        for key in keys:
            values = [row[key] for row in mine if row[key] is not None]
            summary[preset][key] = (statistics.mean(values) if values else None,
                                    statistics.stdev(values) if len(values) > 1 else 0.0)
        for stage in STAGE_NAMES:
            summary[preset][f"{stage}_seconds"] = statistics.mean(row["stages"][stage]["seconds"] for row in mine)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/photo_size")
    parser.add_argument("--data", help="an l2g synth --variant voc folder (default: <out>/data, written once)")
    parser.add_argument("--train", type=int, default=200, help="photos to train on (default: 200)")
    parser.add_argument("--val", type=int, default=50, help="photos to predict and score (default: 50)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seed", type=int, help="run this seed alone (its rows only)")
    parser.add_argument("--preset", action="append", help="repeatable (default: pretrained_l2g_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides, every run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "COMPLETE").is_file():
        subprocess.run([sys.executable, "-m", "l2g", "synth", "--variant", "voc", "--train", str(args.train),
                        "--val", str(args.val), "--out", str(data), "--quiet"], check=True)
    seeds = [args.only_seed] if args.only_seed is not None else range(args.seeds)
    report = out / "photo_size.json"
    rows = json.loads(report.read_text())["rows"] if report.is_file() else []  # earlier invocations' rows
    for preset in args.preset or ["pretrained_l2g_cpu"]:
        for seed in seeds:
            row = measure(preset, seed, out, data, args.overrides)
            rows = [*(r for r in rows if (r["preset"], r["seed"]) != (preset, seed)), row]
    summary = summarise(rows)
    report.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    for row in rows:
        print(json.dumps({key: value for key, value in row.items() if key != "stages"}))
    for preset, figures in summary.items():
        print(f"{preset} (seeds {figures['seeds']})")
        for key, value in figures.items():
            if isinstance(value, tuple) and value[0] is not None:
                scale = 100 if key.endswith("miou") else 1
                print(f"  {key:<18}{scale * value[0]:8.2f} +- {scale * value[1]:.2f}")
            elif isinstance(value, float):
                print(f"  {key:<18}{value:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The two choices of the own-images path, measured on the synthetic benchmark over seeds:

1. the background threshold without masks: Otsu's rule on the maps, and "masks for 20 images" (the best
   threshold on a random 20 of the train split, 10 draws), against the oracle (the best threshold on every
   mask of the split), as pseudo-label mIoU on the whole train split;
2. the segmentation network: DeepLabV3+ on the ImageNet EfficientNet-Lite0 encoder (pretrained_l2g's
   default) against ``deeplab_small`` from scratch (the synth preset's), both trained on the same pseudo
   masks of each seed, as val mIoU.

    python -m benchmarks.own_images --out runs/own_images --seeds 3

For each seed it runs ``l2g run synth`` (method ``--method``, default l2g_shape; the pseudo masks at the
sweep's best threshold, deeplab_small trained and scored on val), then ``l2g seg train`` + ``l2g seg eval``
of the Lite0 DeepLabV3+ on the same pseudo masks, and scores the threshold rules on the run's maps.
Writes ``<out>/own_images.json`` and prints a table. Finished runs are skipped (rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

LITE0 = ["seg.arch=deeplabv3plus_efficientnet_lite0", "seg.pretrained=null", "seg.aspp_rates=[2, 4, 6]",
         "seg.lr=0.005"]  # rates scaled to the ~7-10-cell stride-16 maps of 112-160 px images
SUBSET, DRAWS = 20, 10
GRID = [round(0.05 + 0.01 * i, 2) for i in range(91)]  # 0.05 .. 0.95: Otsu may land above the default 0.60


def l2g(*args: str) -> None:
    command = [sys.executable, "-m", "l2g", *args]
    print("$ l2g " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def threshold_rules(run: Path, seed: int) -> dict:
    """Oracle, Otsu and 20-mask thresholds of one run's maps, each scored on the whole train split."""
    from l2g.config import load_config
    from l2g.evaluation.sweep import ThresholdSweep
    from l2g.evaluation.sweep_files import score_chunk
    from l2g.stages.common import split_samples
    from l2g.stages.threshold import otsu_threshold, strongest_attention_histogram

    config = load_config(run / "config.yaml")
    samples = split_samples(config, config.cams.split, need_masks=True, check_images="exists")
    cams = run / "cams"
    classes = config.data.num_classes

    def sweep(subset) -> dict:
        result = ThresholdSweep(classes + 1, GRID)
        result.merge(score_chunk([(s.image_id, str(s.mask_path)) for s in subset], str(cams), classes, GRID))
        return result.results(["background", *[f"c{i}" for i in range(classes)]])

    full = sweep(samples)
    miou_at = {round(entry["threshold"], 2): entry["miou"] for entry in full["per_threshold"]}
    otsu = otsu_threshold(strongest_attention_histogram(cams, [s.image_id for s in samples]))
    rng = np.random.default_rng(seed)
    subset_mious = []
    for _ in range(DRAWS):
        picked = [samples[i] for i in rng.choice(len(samples), size=min(SUBSET, len(samples)), replace=False)]
        subset_mious.append(miou_at[round(sweep(picked)["best"]["threshold"], 2)])
    return {"oracle_threshold": full["best"]["threshold"], "oracle": full["best"]["miou"],
            "otsu_threshold": otsu, "otsu": miou_at[round(otsu, 2)],
            "masks20_mean": float(np.mean(subset_mious)), "masks20_min": float(np.min(subset_mious))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/own_images")
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seed", type=int, help="run this seed alone (e.g. in a second process); its row only")
    parser.add_argument("--method", default="l2g_shape")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides, every run")
    args = parser.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    if not (data / "ImageSets").is_dir():
        l2g("synth", "--out", str(data))
    rows = []
    for seed in [args.only_seed] if args.only_seed is not None else range(args.seeds):
        folder = out / f"seed{seed}"
        common = [f"data.root={data}", f"seed={seed}", "threads=1", *args.overrides]
        l2g("run", "synth", "--out", str(folder), *sets([f"method.name={args.method}", *common]), "--quiet")
        lite = folder / "seg_lite0"
        if not (lite / "eval_val.json").is_file():
            l2g("seg", "train", "synth", "--out", str(lite), "--pseudo", str(folder / "cls" / "pseudo"),
                *sets([*common, *LITE0]), "--quiet", "--overwrite")
            l2g("seg", "eval", "--run", str(lite), "--quiet")
        row = {"seed": seed, **threshold_rules(folder / "cls", seed)}
        for name, run in (("deeplab_small", folder / "seg"), ("deeplabv3plus_lite0", lite)):
            row[name] = json.loads((run / "eval_val.json").read_text())["miou"]
            row[f"{name}_minutes"] = json.loads((run / "train_metrics.json").read_text())["minutes"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ["oracle", "otsu", "masks20_mean", "masks20_min", "deeplab_small", "deeplabv3plus_lite0"]
    summary = {key: (statistics.mean(r[key] for r in rows), statistics.stdev(r[key] for r in rows)
                     if len(rows) > 1 else 0.0) for key in keys}
    gaps = {rule: [r["oracle"] - r[rule] for r in rows] for rule in ("otsu", "masks20_mean")}
    seg_gain = [r["deeplabv3plus_lite0"] - r["deeplab_small"] for r in rows]
    (out / "own_images.json").write_text(json.dumps({"rows": rows, "summary": summary, "gaps": gaps,
                                                     "seg_gain": seg_gain}, indent=1))
    for key, (mean, std) in summary.items():
        print(f"{key:<22}{100 * mean:6.1f} +- {100 * std:.1f}")
    for rule, values in gaps.items():
        per_seed = [round(100 * v, 1) for v in values]
        print(f"oracle - {rule:<13}{100 * statistics.mean(values):6.1f} (per seed {per_seed})")
    per_seed = [round(100 * v, 1) for v in seg_gain]
    print(f"lite0 - small         {100 * statistics.mean(seg_gain):6.1f} (per seed {per_seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

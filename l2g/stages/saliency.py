"""``l2g saliency``: class-agnostic saliency maps for a folder of images (for L2G + shape transfer)."""

from __future__ import annotations

import argparse

from l2g.cli import add_quiet

EPILOG = """examples:
  l2g saliency --images data/VOCdevkit/VOC2012/JPEGImages --out data/VOCdevkit/VOC2012/saliency \\
      --list data/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt
  l2g saliency --images my_data/images --out my_data/saliency --method fine_grained

Maps are 8-bit grey PNGs named like the images (<name>.png), which is what data.saliency_dir expects.
Existing maps are kept, so an interrupted run continues where it stopped (--overwrite redraws them).
Methods: mbd (minimum barrier distance, default; about 0.2 s per 500x375 image on one core),
fine_grained and spectral_residual (OpenCV contrib; faster, much less accurate on the synthetic set).
Maps of a trained detector (e.g. PoolNet) are better where you have them: any 8-bit PNG with the
image's name works."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "saliency", help="class-agnostic saliency maps for datasets that have none",
        description="Write a class-agnostic saliency map (8-bit PNG, same name as the image) for every image "
                    "of a folder, with a classical training-free method.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of images (.jpg .png .jpeg .bmp .webp .tif)")
    parser.add_argument("--out", required=True, help="folder to write <name>.png maps to")
    parser.add_argument("--method", default="mbd", choices=("mbd", "fine_grained", "spectral_residual"),
                        help="saliency method (default: mbd)")
    parser.add_argument("--list", dest="id_list", help="only the ids of this split list (one id per line)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    add_quiet(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from l2g.data.saliency import write_saliency_maps
    from l2g.data.voc_layout import read_id_list

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    ids = read_id_list(args.id_list) if args.id_list else None
    summary = write_saliency_maps(args.images, args.out, method=args.method, ids=ids, overwrite=args.overwrite,
                                  workers=args.workers, progress=not args.quiet)
    print(f"{args.out}: {summary.written} map(s) written, {summary.skipped} already there "
          f"({summary.images} images)")
    return 0

"""Commands of the segmentation stage: ``l2g seg train``, ``l2g seg eval`` (stages 5-6), ``l2g predict``
and ``l2g export-voc``. Each handler calls the function of :mod:`l2g.api` that a script would call."""

from __future__ import annotations

import argparse

from l2g.cli.options import Command, add_overrides, add_quiet, add_run, add_training_run

SEG_EPILOG = """examples:
  l2g seg train synth --out runs/seg --pseudo runs/l2g_shape/pseudo
  l2g seg train voc12_resnet38_l2g_shape --out runs/seg --pseudo runs/voc/pseudo \\
      --set seg.pretrained=weights/resnet101-63fe2227.pth
  l2g seg train synth --out runs/seg --pseudo runs/x/pseudo --resume      # continue after a kill
  l2g seg train synth --out runs/seg --pseudo runs/x/pseudo --resume auto # continue, or start when new
  l2g seg train synth --out runs/seg --pseudo runs/x/pseudo --overwrite   # delete that run, start over
  # 8 GPUs (seg.batch_size is per process: 8 x 2 = a global batch of 16)
  torchrun --standalone --nproc_per_node=8 -m l2g seg train voc12_resnet38_l2g_shape --out runs/seg \\
      --pseudo runs/voc/pseudo --set seg.batch_size=2
  # the same surviving a lost worker: torchrun restarts the group, which continues from its checkpoint
  torchrun --standalone --nproc_per_node=8 --max-restarts=3 -m l2g seg train voc12_resnet38_l2g_shape \
      --out runs/seg --pseudo runs/voc/pseudo --set seg.batch_size=2
  l2g seg eval --run runs/seg                                           # mIoU on seg.val_split
  l2g seg eval --run runs/seg --crf --set seg.test_scales=[0.5,0.75,1.0]

seg train writes its run folder with --out (--run and --run-dir are other names of it); seg eval reads
one with --run (under torchrun: --run-dir).

Networks (seg.arch): deeplab_v2_resnet101 (default, ASPP 6/12/18/24), deeplab_v1_vgg16 (LargeFOV),
deeplabv3_resnet101 (torchvision), deeplab_small (width-reduced, for CPUs). All have output stride 8.
seg.pretrained is a local file (torchvision ImageNet ResNet-101 / VGG-16, or COCO-pretrained DeepLab
weights); it is recorded with its sha256 in <run>/init.json. Nothing is downloaded."""

PREDICT_EPILOG = """examples:
  l2g predict photo.jpg --run runs/seg --out masks/
  l2g predict photos/ more/*.png --run runs/seg --out masks/ --crf
  l2g predict photos/ --run runs/mine --out masks/      # the folder l2g run wrote: its seg/ run

Writes <out>/<name>.png (label mask, VOC palette) and <out>/<name>_overlay.jpg. Grey, RGBA (composited on
white), palette and 16-bit images are converted; EXIF rotation is applied; an image whose long side
exceeds seg.max_side (default 2048) is downscaled for the network and its mask upscaled back. Files that
are not images or are truncated are listed at the end (exit code 2); the others are still written."""

EXPORT_EPILOG = """examples:
  l2g export-voc --run runs/seg --out results/voc12_test.tar.gz            # VOC2012 test, comp6
  l2g export-voc --run runs/seg --out val.tar.gz --split val --crf

Writes results/VOC2012/Segmentation/<competition>_<split>_cls/<id>.png for every id of
<data.root>/ImageSets/Segmentation/<split>.txt (indexed PNGs: pixel value = class index, VOC palette) into
the archive; upload it to the evaluation server (host.robots.ox.ac.uk:8080). comp6 (default) is for
networks that used data beyond VOC, e.g. ImageNet weights; comp5 for VOC data only. The masks are kept
in <run>/voc_results/<split>/ and a rerun reuses them."""


def _add_inference(p: argparse.ArgumentParser) -> None:
    """--checkpoint and --crf of the commands that segment images with a trained run."""
    p.add_argument("--checkpoint", help="checkpoint (default: <run>/checkpoints/final.pt)")
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None,
                   help="dense CRF on the predictions (default: seg.crf.enabled)")


def seg_train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("config", help="YAML config file or preset name (e.g. synth); its seg section is used")
    add_training_run(t, "seg.epochs, seg.test_*, data.root, runtime.*")
    t.add_argument("--pseudo", help="folder of pseudo masks <id>.png (default: seg.pseudo_dir)")
    add_overrides(t)
    add_quiet(t)


def seg_eval_arguments(e: argparse.ArgumentParser) -> None:
    add_run(e, "segmentation run folder ('l2g seg train'), or the folder 'l2g run' wrote (its seg/ is used)")
    e.add_argument("--split", help="split to evaluate (default: seg.val_split)")
    _add_inference(e)
    e.add_argument("--out", help="output JSON (default: <run>/eval_<split>.json)")
    add_overrides(e)
    add_quiet(e)


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders")
    add_run(p, "segmentation run folder ('l2g seg train'), or the folder 'l2g run' wrote (its seg/ is used)")
    p.add_argument("--out", required=True, help="output folder")
    _add_inference(p)
    add_overrides(p)
    add_quiet(p)


def export_voc_arguments(x: argparse.ArgumentParser) -> None:
    add_run(x, "segmentation run folder ('l2g seg train'), or the folder 'l2g run' wrote (its seg/ is used)")
    x.add_argument("--out", required=True, help="archive to write (.tar.gz, .tgz or .tar)")
    x.add_argument("--split", default="test", help="split of data.root to export (default: test)")
    x.add_argument("--competition", default="comp6", choices=("comp5", "comp6"),
                   help="comp6 (default): trained with data beyond VOC (ImageNet weights); comp5: VOC data only")
    _add_inference(x)
    add_overrides(x)
    add_quiet(x)


def _seg_train(args: argparse.Namespace) -> int:
    from l2g import api
    from l2g.engine import distributed

    final = api.train_segmentation(api.load_config(args.config, args.overrides), args.out, args.pseudo,
                                   resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if distributed.current().is_main:
        print(final)
    return 0


def _seg_eval(args: argparse.Namespace) -> int:
    from l2g import api
    from l2g.engine import distributed
    from l2g.stages.seg_eval import format_metrics

    metrics = api.evaluate_segmentation(args.run, split=args.split, checkpoint=args.checkpoint, crf=args.crf,
                                        out_path=args.out, overrides=args.overrides, progress=not args.quiet)
    if distributed.current().is_main:
        print(format_metrics(metrics))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from l2g import api
    from l2g.engine import distributed

    result = api.predict(args.run, args.images, args.out, checkpoint=args.checkpoint, crf=args.crf,
                         overrides=args.overrides, progress=not args.quiet)
    if distributed.current().is_main:
        for source, mask, summary in result.written:
            print(f"{source} -> {mask}: {summary}")
    if result.failed:
        from l2g.data.errors import listed

        raise ValueError(f"{len(result.failed)} of {len(result.failed) + len(result.written)} input(s) could not "
                         f"be segmented:\n{listed(result.failed)}")
    return 0


def _export_voc(args: argparse.Namespace) -> int:
    import tarfile

    from l2g import api
    from l2g.engine import distributed
    from l2g.stages.voc_export import VOC_TEST_IMAGES

    out = api.export_voc(args.run, args.out, split=args.split, competition=args.competition,
                         checkpoint=args.checkpoint, crf=args.crf, overrides=args.overrides, progress=not args.quiet)
    if distributed.current().is_main:
        with tarfile.open(out) as archive:
            count = sum(1 for member in archive if member.isfile())
        note = f" (VOC2012 test has {VOC_TEST_IMAGES})" if args.split == "test" and count != VOC_TEST_IMAGES else ""
        print(f"{out}: {count} masks{note}")
    return 0


SEG_TRAIN_DESCRIPTION = ("Train into a run folder: config.yaml, init.json, train_log.jsonl, "
                         "checkpoints/step-<iterations>.pt (every epoch and every runtime.checkpoint_every "
                         "iterations; the newest runtime.keep_checkpoints kept), train_metrics.json, "
                         "checkpoints/final.pt. Runs under torchrun (one process per GPU).")

COMMANDS = (
    Command("seg", "train or evaluate the segmentation network (DeepLab)",
            "The segmentation stage: a DeepLab trained on pseudo masks.", epilog=SEG_EPILOG,
            subcommands=(
                Command("train", "train a DeepLab on pseudo masks", SEG_TRAIN_DESCRIPTION, seg_train_arguments,
                        _seg_train, SEG_EPILOG),
                Command("eval", "mIoU of a trained segmentation run",
                        "Evaluate on a split with ground truth: per-class IoU, mIoU, pixel accuracy -> "
                        "<run>/eval_<split>.json; predicted masks -> <run>/predictions/<split>/.",
                        seg_eval_arguments, _seg_eval, SEG_EPILOG),
            ), subcommand_metavar="SEG_COMMAND"),
    Command("predict", "masks and overlays for any images with a trained segmentation run",
            "Segment image files (or folders of them) with a trained run, on CPU or GPU.", predict_arguments,
            _predict, PREDICT_EPILOG),
    Command("export-voc", "the PASCAL VOC evaluation server's archive of a split's masks",
            "Segment every image of a split with a trained segmentation run and write the archive the VOC "
            "evaluation server takes.", export_voc_arguments, _export_voc, EXPORT_EPILOG),
)

"""``l2g export-voc``: a split's masks in the layout of the PASCAL VOC evaluation server, as one archive.

The server (host.robots.ox.ac.uk, VOC2012 segmentation) takes a tar archive holding
``results/VOC2012/Segmentation/<competition>_<split>_cls/<id>.png`` for every image of the split (1456
for VOC2012 test): one indexed PNG per image at the image's size, pixel value = class index (0
background, 1..20 the classes), with the VOC colour map as its palette (the devkit's own format). The
competition is ``comp5`` for networks trained on VOC data only and ``comp6`` for those that used other
data too, such as ImageNet-pretrained weights (so comp6 is the usual one for WSSS methods).

Masks come from :func:`l2g.segmentation.inference.segment` with the run's inference settings (as ``l2g
seg eval``), images read in their stored orientation (as the server's ground truth). They are written
to ``<run>/voc_results/<split>/`` first: resumable (stage markers, as ``l2g cams``), and under torchrun
each process segments a share; rank 0 then writes the archive atomically.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from tqdm import tqdm

from l2g import atomic
from l2g.config import Config
from l2g.data.errors import listed
from l2g.data.image_files import find_image
from l2g.data.images import read_image
from l2g.data.layout import SPLIT_DIR, DatasetError, read_id_list
from l2g.data.palette import save_mask
from l2g.engine import distributed, markers
from l2g.engine.run_paths import RunFolder
from l2g.segmentation.inference import segment
from l2g.segmentation.loading import load_seg_checkpoint
from l2g.stages.common import set_threads

COMPETITIONS = ("comp5", "comp6")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
VOC_TEST_IMAGES = 1456  # VOC2012 segmentation test
MAX_LISTED = 10


def results_folder(competition: str, split: str) -> str:
    """The folder the server reads, relative to the archive's root."""
    return f"results/VOC2012/Segmentation/{competition}_{split}_cls"


def split_images(config: Config, split: str) -> list[tuple[str, Path]]:
    """(id, image path) of every id of ``<root>/ImageSets/Segmentation/<split>.txt`` (no labels needed)."""
    root = Path(config.data.root)
    ids = read_id_list(root / SPLIT_DIR / f"{split}.txt")
    image_dir = Path(config.data.folders()[0].replace("{split}", split))
    image_dir = image_dir if image_dir.is_absolute() else root / image_dir
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    found, missing = [], []
    for image_id in ids:
        path = find_image(image_dir, image_id)
        if path is None:
            missing.append(f"{image_dir / image_id}.jpg")
        else:
            found.append((image_id, path))
    if missing:
        raise DatasetError(f"{len(missing)} image(s) of split {split!r} not found (the server needs every one):"
                           f"\n{listed(missing, MAX_LISTED)}")
    return found


def export_voc(config: Config, run_dir: str | Path, out: str | Path, *, split: str = "test",
               competition: str = "comp6", checkpoint: str | Path | None = None, crf: bool | None = None,
               progress: bool = True) -> Path:
    """Segment every image of ``split`` and write the server's archive to ``out``; returns ``out``."""
    out = Path(out)
    if competition not in COMPETITIONS:
        raise ValueError(f"competition {competition!r}: must be one of {', '.join(COMPETITIONS)} (comp5: trained on "
                         "VOC data only; comp6: other data too, e.g. ImageNet weights)")
    if not out.name.endswith(ARCHIVE_SUFFIXES):
        raise ValueError(f"{out}: the archive name must end with {', '.join(ARCHIVE_SUFFIXES)}")
    run_dir = Path(run_dir)
    ctx = distributed.setup(config.device)
    set_threads(config)
    checkpoint = Path(checkpoint) if checkpoint else RunFolder(run_dir).final
    model, _ = load_seg_checkpoint(checkpoint, config.seg, config.data.num_classes + 1, ctx.device)
    images = distributed.main_first(lambda: split_images(config, split))
    staging = run_dir / "voc_results" / split
    folder = results_folder(competition, split)
    use_crf = config.seg.crf.enabled if crf is None else crf
    seg = config.seg
    inputs = {"checkpoint_sha256": markers.file_digest(checkpoint), "split": split, "competition": competition,
              "crf": use_crf, "test_scales": list(seg.test_scales), "test_flip": seg.test_flip,
              "max_side": seg.max_side, "mean": list(config.data.mean), "std": list(config.data.std)}
    files = [f"{folder}/{image_id}.png" for image_id, _ in images]
    state = distributed.main_first(lambda: markers.begin(staging, "voc-export", inputs, files))
    if state != "done":
        todo = [(i, p) for i, p in distributed.shard(images, ctx)
                if state == "fresh" or not (staging / folder / f"{i}.png").exists()]
        with distributed.agreed():
            for image_id, path in tqdm(todo, desc=f"export-voc {split}", disable=not (progress and ctx.is_main)):
                mask = segment(model, read_image(path), config, ctx.device, crf=use_crf).mask
                save_mask(staging / folder / f"{image_id}.png", mask)  # indexed PNG, VOC palette, atomic
        distributed.main_first(lambda: markers.mark_done(staging, "voc-export", inputs, files))
    if ctx.is_main:
        write_archive(out, staging, files)
    distributed.barrier()
    return out


def write_archive(out: Path, staging: Path, files: list[str]) -> None:
    """The tar (gzip for .tar.gz/.tgz) of ``files`` (relative to ``staging``), in order, written atomically."""
    mode = "w" if out.name.endswith(".tar") else "w:gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(out, "wb") as handle, tarfile.open(fileobj=handle, mode=mode) as archive:
        for name in files:
            archive.add(staging / name, arcname=name, recursive=False)

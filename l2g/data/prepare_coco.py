"""``l2g prepare coco``: MS COCO 2014 instance annotations -> semantic palette masks and label lists.

Input (``--root``, as COCO ships it)::

    annotations/instances_train2014.json, annotations/instances_val2014.json
    train2014/COCO_train2014_000000000009.jpg ...       val2014/...

Output (under ``--out``, default the root; image ids are the file names without suffix)::

    SegmentationClass/<id>.png                  palette PNG: 0 background, 1..80 classes, (255 crowd with
                                                --crowd ignore)
    ImageSets/Segmentation/<split>.txt          kept image ids (sorted)
    ImageSets/Segmentation/<split>_cls.txt      ``<id> <c> ...``, c = 0-based class index (mask value - 1)
    classes.txt                                 the 80 names in class-index order

Rules (each one a choice; documented here and in docs/datasets.md):

- Categories: COCO's ids (1..90 with gaps) sorted ascending are mapped to 1..K (K = 80).
- Only non-crowd instances are drawn and labelled. Crowd regions are background by default, or 255
  (ignored by evaluation) with ``crowd="ignore"``.
- Overlaps: instances are drawn from the largest to the smallest (pixel area; ties by annotation id), so
  the smaller instance wins where two overlap. A small object in front of a large one (a cup on a table,
  a person on a bed) is usually annotated whole inside the larger region, so drawing it last keeps it
  visible; "the later annotation wins" would depend on annotation order, which means nothing.
- Image-level labels: the classes of the image's non-crowd instances. An image with none (no
  annotation, only crowd regions, or only degenerate polygons with fewer than 3 points) is dropped, as
  the paper does (82,081 train / 40,137 val images remain there).

Resumable: a mask that exists is not recomputed; masks are written atomically, so a killed run leaves
only whole masks. The options a folder was converted with are stored in
``SegmentationClass/.l2g-prepare-coco.json``; converting again with other options needs
``overwrite=True``. Hostile input is refused with a DatasetError naming the JSON file and the
annotation: malformed JSON, unknown image or category ids, polygons with odd or non-finite coordinates
or far outside the image, RLEs whose size or pixel count disagrees with the image, images whose
declared size exceeds the decompression-bomb limit.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from l2g.atomic import remove_partials, write_text
from l2g.data.coco_json import MAX_LISTED_PROBLEMS, CocoImage, Instance, read_instances
from l2g.data.errors import DatasetError, listed
from l2g.data.labels import write_class_list, write_id_list
from l2g.data.layout import CLASS_NAMES_FILE, SPLIT_DIR
from l2g.data.palette import IGNORE_INDEX, save_mask
from l2g.data.pool import map_tasks

__all__ = ["CocoImage", "Instance", "instance_mask", "prepare_coco", "read_instances", "semantic_mask"]

EXPECTED_COUNTS = {"train2014": 82_081, "val2014": 40_137}
DEFAULT_SPLITS = ("train2014", "val2014")
CROWD_MODES = ("background", "ignore")
MASK_DIR = "SegmentationClass"
OPTIONS_FILE = ".l2g-prepare-coco.json"
OVERLAP_RULE = "smaller instance on top (drawn from the largest area to the smallest, ties by annotation id)"
BYTES_PER_MASK = 16_384  # a generous estimate of one palette PNG of a 640x480 COCO image (most are < 8 KB)


# --- rasterising -------------------------------------------------------------------------------------------


def instance_mask(instance: Instance, height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of one checked instance (pycocotools does the rasterising)."""
    from pycocotools import mask as mask_utils

    segmentation = instance.segmentation
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}
    with warnings.catch_warnings():  # pycocotools 2.0 passes copy=False to np.array (numpy 2 deprecation)
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def semantic_mask(image: CocoImage, crowd: str = "background") -> np.ndarray:
    """The (H, W) uint8 class mask of an image: 0 background, 1..K classes (smaller instance on top),
    255 on crowd regions not covered by an instance when ``crowd="ignore"``."""
    mask = np.zeros((image.height, image.width), dtype=np.uint8)
    if crowd == "ignore":
        for instance in image.instances:
            if instance.crowd:
                mask[instance_mask(instance, image.height, image.width)] = IGNORE_INDEX
    drawn = []
    for instance in image.instances:
        if not instance.crowd:
            region = instance_mask(instance, image.height, image.width)
            drawn.append((-int(region.sum()), instance.ann_id, instance.label, region))
    for _, _, label, region in sorted(drawn, key=lambda item: (item[0], item[1])):
        mask[region] = label
    return mask


def _write_mask(task: tuple[CocoImage, Path, str]) -> None:
    image, path, crowd = task
    save_mask(path, semantic_mask(image, crowd))


# --- the command -------------------------------------------------------------------------------------------


@dataclass
class CocoSummary:
    split: str
    images: int
    kept: int
    written: int
    skipped: int
    degenerate_polygons: int


def _check_options(mask_dir: Path, crowd: str, overwrite: bool) -> None:
    """Refuse to mix masks converted with other options unless ``overwrite``; record the options."""
    path = mask_dir / OPTIONS_FILE
    options = {"crowd": crowd, "overlap": OVERLAP_RULE, "categories": "sorted ids -> 1..K"}
    if path.exists() and not overwrite:
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != options:
            raise DatasetError(
                f"{path}: the masks in {mask_dir} were converted with other options ({recorded}); pass "
                "--overwrite to convert them again"
            )
    write_text(path, json.dumps(options, indent=2) + "\n")


def _check_images(root: Path, image_dir: str, split: str, images: list[CocoImage]) -> None:
    folder = root / image_dir.replace("{split}", split)
    missing = [str(folder / image.file_name) for image in images if not (folder / image.file_name).is_file()]
    if missing:
        shown = listed([f"{path}: image not found" for path in missing], MAX_LISTED_PROBLEMS)
        raise DatasetError(f"{folder}: {len(missing)} image(s) of split {split!r} missing:\n{shown}")


def _check_disk(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    needed = count * BYTES_PER_MASK
    if needed > free:
        raise DatasetError(
            f"{folder}: {count:,} masks need about {needed / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB free"
        )


def prepare_coco(
    root: str | Path,
    *,
    splits: tuple[str, ...] = DEFAULT_SPLITS,
    annotations: str | Path | None = None,
    out: str | Path | None = None,
    image_dir: str = "{split}",
    crowd: str = "background",
    overwrite: bool = False,
    count_check: bool = True,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[CocoSummary]]:
    """Convert ``<annotations>/instances_<split>.json`` of every split; returns the output root and one
    summary per split. See the module docstring for the rules and the layout written.

    Every JSON is read and checked, and the kept counts compared with the paper's (82,081 / 40,137 for
    train2014 / val2014; a DatasetError unless ``count_check=False``), before any mask is written.
    """
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd must be one of {', '.join(CROWD_MODES)}, got {crowd!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: COCO root not found")
    annotations_dir = Path(annotations) if annotations is not None else root / "annotations"
    out = Path(out) if out is not None else root
    parsed = {}
    for split in splits:
        coco = read_instances(annotations_dir / f"instances_{split}.json")
        if parsed and coco.class_names != next(iter(parsed.values())).class_names:
            raise DatasetError(f"{coco.path}: categories differ from those of {next(iter(parsed.values())).path}")
        parsed[split] = coco
    kept = {split: [image for image in coco.images if image.labels()] for split, coco in parsed.items()}
    for split, images in kept.items():
        _check_images(root, image_dir, split, images)
    mismatches = [f"{split}: {len(images):,} images kept, the paper has {EXPECTED_COUNTS[split]:,}"
                  for split, images in kept.items() if len(images) != EXPECTED_COUNTS.get(split, len(images))]
    if mismatches:
        text = "; ".join(mismatches)
        if count_check:
            raise DatasetError(f"{annotations_dir}: {text}. Check the annotation files; pass --no-count-check "
                               "for a subset or another COCO-format dataset")
        log(f"warning: {text}")

    mask_dir = out / MASK_DIR
    mask_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(mask_dir)
    _check_options(mask_dir, crowd, overwrite)
    write_id_list(out / CLASS_NAMES_FILE, next(iter(parsed.values())).class_names)
    summaries = []
    for split, images in kept.items():
        tasks = [(image, mask_dir / f"{image.stem}.png", crowd) for image in images
                 if overwrite or not (mask_dir / f"{image.stem}.png").exists()]
        _check_disk(mask_dir, len(tasks))
        written = map_tasks(_write_mask, tasks, workers, chunksize=16)
        for _ in tqdm(written, total=len(tasks), desc=f"coco {split} masks", disable=not progress):
            pass
        write_id_list(out / SPLIT_DIR / f"{split}.txt", [image.stem for image in images])
        write_class_list(out / SPLIT_DIR / f"{split}_cls.txt", {image.stem: image.labels() for image in images})
        summaries.append(CocoSummary(split, len(parsed[split].images), len(images), len(tasks),
                                     len(images) - len(tasks), parsed[split].degenerate_polygons))
    return out, summaries


def summary_table(summaries: list[CocoSummary]) -> str:
    rows = [("split", "images", "kept", "dropped", "masks written", "already there")]
    for s in summaries:
        rows.append((s.split, f"{s.images:,}", f"{s.kept:,}", f"{s.images - s.kept:,}", f"{s.written:,}",
                     f"{s.skipped:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

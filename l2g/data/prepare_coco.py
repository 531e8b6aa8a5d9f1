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
- Only non-crowd instances are drawn and labelled. Crowd regions are background by default (what the
  WSSS COCO masks commonly used do), or 255 = ignored by evaluation with ``crowd="ignore"``.
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
import math
import multiprocessing
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from l2g.data.atomic import atomic_write_text, remove_partials
from l2g.data.errors import DatasetError
from l2g.data.labels import write_class_list, write_id_list
from l2g.data.palette import IGNORE_INDEX, save_mask
from l2g.data.pil_open import MAX_PIXELS
from l2g.data.voc_layout import CLASS_NAMES_FILE, SPLIT_DIR

EXPECTED_COUNTS = {"train2014": 82_081, "val2014": 40_137}
DEFAULT_SPLITS = ("train2014", "val2014")
CROWD_MODES = ("background", "ignore")
MASK_DIR = "SegmentationClass"
OPTIONS_FILE = ".l2g-prepare-coco.json"
OVERLAP_RULE = "smaller instance on top (drawn from the largest area to the smallest, ties by annotation id)"
BYTES_PER_MASK = 16_384  # a generous estimate of one palette PNG of a 640x480 COCO image (most are < 8 KB)
MAX_LISTED_PROBLEMS = 20


@dataclass
class Instance:
    """One annotation: its id, class (1..K), whether it is a crowd region, and its checked segmentation
    (a list of polygons with at least 3 points each, or an RLE dict)."""

    ann_id: int
    label: int
    crowd: bool
    segmentation: list | dict


@dataclass
class CocoImage:
    image_id: int
    file_name: str
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem

    def labels(self) -> tuple[int, ...]:
        """0-based classes of the non-crowd instances."""
        return tuple(sorted({inst.label - 1 for inst in self.instances if not inst.crowd}))


@dataclass
class CocoSplit:
    """The checked content of one instances JSON."""

    path: Path
    class_names: list[str]
    category_ids: list[int]
    images: list[CocoImage]
    degenerate_polygons: int = 0


# --- reading and checking the JSON ------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rle_string_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string, decoded here so they can be checked before
    pycocotools (whose C decoder writes past the mask when the runs add up to more than H*W) sees them.

    Format: each run is a little-endian sequence of 5-bit groups stored as chr(48 + group); bit 0x20 of
    a group means "more groups follow"; bit 0x10 of the last group is the sign; from the third run on,
    the value is a difference to the run two places before.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("the string ends in the middle of a run")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"character {text[position]!r} is not part of the RLE alphabet")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError("a negative run length")
        counts.append(value)
    return counts


def _polygon_problem(polygons: list, height: int, width: int) -> tuple[str | None, list, int]:
    """(what is wrong or None, the polygons with >= 3 points, how many shorter ones were dropped)."""
    kept, dropped = [], 0
    for polygon in polygons:
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            return "a polygon is not a list of finite numbers", [], 0
        if len(polygon) % 2:
            return f"a polygon has an odd number of coordinates ({len(polygon)})", [], 0
        xs, ys = polygon[0::2], polygon[1::2]
        if xs and (min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height):
            return f"polygon coordinates lie far outside the {width}x{height} image", [], 0
        if len(polygon) < 6:
            dropped += 1  # fewer than 3 points: no area (pycocotools would read 4 numbers as a box)
        else:
            kept.append([float(v) for v in polygon])
    return None, kept, dropped


def _rle_problem(rle: dict, height: int, width: int) -> str | None:
    """What is wrong with an RLE segmentation, or None."""
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and size == [height, width]):
        return f"RLE size {size!r} differs from the image size [{height}, {width}]"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "RLE counts must be non-negative integers"
    elif isinstance(counts, str):
        try:
            counts = rle_string_counts(counts)
        except ValueError as error:
            return f"compressed RLE counts are malformed ({error})"
    else:
        return "RLE counts must be a list of integers or a compressed string"
    if sum(counts) != height * width:
        return f"RLE runs cover {sum(counts)} pixels, the image has {height * width}"
    return None


def _load_json(path: Path) -> dict:
    try:
        with path.open("rb") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{path}: not a readable COCO annotation JSON ({error})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no {key!r} list")
    return data


def _categories(path: Path, raw: list) -> tuple[list[int], list[str]]:
    """The category ids, sorted, and their names."""
    names: dict[int, str] = {}
    for index, category in enumerate(raw):
        if not (isinstance(category, dict) and _is_int(category.get("id")) and isinstance(category.get("name"), str)):
            raise DatasetError(f"{path}: categories[{index}] needs an integer 'id' and a string 'name'")
        if category["id"] in names:
            raise DatasetError(f"{path}: category id {category['id']} listed twice")
        names[category["id"]] = category["name"].strip()
    if not names:
        raise DatasetError(f"{path}: no categories")
    if len(names) >= IGNORE_INDEX:
        raise DatasetError(f"{path}: {len(names)} categories do not fit in a uint8 mask (at most {IGNORE_INDEX - 1})")
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def _images(path: Path, raw: list, problems: list[str]) -> dict[int, CocoImage]:
    images: dict[int, CocoImage] = {}
    stems: dict[str, int] = {}
    for index, image in enumerate(raw):
        if not isinstance(image, dict):
            problems.append(f"{path}: images[{index}] is not an object")
            continue
        image_id, name = image.get("id"), image.get("file_name")
        height, width = image.get("height"), image.get("width")
        where = f"{path}: image {image_id!r}"
        if not (_is_int(image_id) and isinstance(name, str) and _is_int(height) and _is_int(width)):
            problems.append(f"{path}: images[{index}] needs integer 'id', 'height', 'width' and a 'file_name'")
        elif image_id in images:
            problems.append(f"{where} listed twice")
        elif not name or "/" in name or "\\" in name or name.startswith("."):
            problems.append(f"{where}: file_name {name!r} must be a plain file name")
        elif height < 1 or width < 1:
            problems.append(f"{where}: size {width}x{height} has no pixels")
        elif height * width > MAX_PIXELS:
            problems.append(f"{where}: declared size {width}x{height} exceeds the limit of {MAX_PIXELS} pixels "
                            "(decompression-bomb guard)")
        elif Path(name).stem in stems:
            problems.append(f"{where}: file name {name!r} has the same id as image {stems[Path(name).stem]}")
        else:
            images[image_id] = CocoImage(image_id, name, height, width)
            stems[Path(name).stem] = image_id
    return images


def _instance(
    path: Path, annotation: object, images: dict[int, CocoImage], label_of: dict[int, int], problems: list[str]
) -> tuple[CocoImage, Instance | None, int] | None:
    """(image, checked instance or None when it has no area, dropped short polygons) of one annotation;
    None when the annotation is broken (the problem is appended to ``problems``)."""
    if not isinstance(annotation, dict):
        problems.append(f"{path}: an annotation is not an object")
        return None
    ann_id, category = annotation.get("id"), annotation.get("category_id")
    where = f"{path}: annotation {ann_id!r}"
    image_id = annotation.get("image_id")
    image = images.get(image_id) if _is_int(image_id) else None
    crowd = annotation.get("iscrowd", 0)
    segmentation = annotation.get("segmentation")
    if not _is_int(ann_id):
        problem = "an annotation has no integer 'id'"
    elif image is None:
        problem = f"unknown image_id {image_id!r}"
    elif not _is_int(category) or category not in label_of:
        problem = f"unknown category_id {category!r}"
    elif not _is_int(crowd) or crowd not in (0, 1):
        problem = f"iscrowd must be 0 or 1, got {crowd!r}"
    elif isinstance(segmentation, list):
        problem, polygons, dropped = _polygon_problem(segmentation, image.height, image.width)
        if problem is None:
            instance = Instance(ann_id, label_of[category], bool(crowd), polygons) if polygons else None
            return image, instance, dropped
    elif isinstance(segmentation, dict):
        problem = _rle_problem(segmentation, image.height, image.width)
        if problem is None:
            return image, Instance(ann_id, label_of[category], bool(crowd), segmentation), 0
    else:
        problem = "segmentation must be a list of polygons or an RLE object"
    problems.append(f"{where}: {problem}" if _is_int(ann_id) else f"{path}: {problem}")
    return None


def read_instances(path: str | Path) -> CocoSplit:
    """Read and check one ``instances_*.json``; every problem is listed in one DatasetError."""
    path = Path(path)
    data = _load_json(path)
    category_ids, class_names = _categories(path, data["categories"])
    label_of = {category: index + 1 for index, category in enumerate(category_ids)}
    problems: list[str] = []
    images = _images(path, data["images"], problems)
    seen_annotations: set[int] = set()
    degenerate = 0
    for annotation in data["annotations"]:
        checked = _instance(path, annotation, images, label_of, problems)
        if checked is None:
            continue
        image, instance, dropped = checked
        degenerate += dropped
        if instance is None:
            continue
        if instance.ann_id in seen_annotations:
            problems.append(f"{path}: annotation {instance.ann_id} listed twice")
            continue
        seen_annotations.add(instance.ann_id)
        image.instances.append(instance)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n{listed}{more}")
    ordered = sorted(images.values(), key=lambda image: image.file_name)
    return CocoSplit(path, class_names, category_ids, ordered, degenerate)


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
    atomic_write_text(path, json.dumps(options, indent=2) + "\n")


def _check_images(root: Path, image_dir: str, split: str, images: list[CocoImage]) -> None:
    folder = root / image_dir.replace("{split}", split)
    missing = [str(folder / image.file_name) for image in images if not (folder / image.file_name).is_file()]
    if missing:
        shown = "\n".join(f"  - {path}: image not found" for path in missing[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(missing) - MAX_LISTED_PROBLEMS} more" if len(missing) > MAX_LISTED_PROBLEMS else ""
        raise DatasetError(f"{folder}: {len(missing)} image(s) of split {split!r} missing:\n{shown}{more}")


def _check_disk(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    needed = count * BYTES_PER_MASK
    if needed > free:
        raise DatasetError(
            f"{folder}: {count:,} masks need about {needed / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB free"
        )


def _run(tasks: list[tuple[CocoImage, Path, str]], workers: int) -> Iterator[None]:
    """Write the masks, in this process or in ``workers`` processes; yields once per mask written."""
    if workers <= 1:
        for task in tasks:
            _write_mask(task)
            yield None
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_write_mask, tasks, chunksize=16)


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
        for _ in tqdm(_run(tasks, workers), total=len(tasks), desc=f"coco {split} masks", disable=not progress):
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

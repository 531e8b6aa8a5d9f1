"""Reading and checking a COCO ``instances_*.json`` before anything is drawn from it.

Every problem is collected and raised as one ``DatasetError`` naming the JSON file and the image or
annotation at fault: malformed JSON, missing keys or wrong types, unknown image or category ids,
duplicate ids, polygons with odd or non-finite coordinates or far outside the image, RLEs whose size or
pixel count disagrees with the image, declared image sizes beyond the decompression-bomb limit.
Polygons with fewer than 3 points have no area and are dropped (counted, not an error).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from l2g.data.errors import DatasetError
from l2g.data.palette import IGNORE_INDEX
from l2g.data.pil_open import MAX_PIXELS

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

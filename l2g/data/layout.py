"""Reading a dataset, whatever its layout (VOC, COCO, custom, synth: ``data.format`` names the folders), with
every problem found before training starts.

The VOC layout, the one the others vary (paths relative to ``<root>``)::

    JPEGImages/<id>.jpg                      RGB images (.jpg; the other suffixes of
                                             l2g.data.image_files are accepted when the .jpg is absent);
                                             folder configurable (``image_dir``)
    SegmentationClassAug/<id>.png            label masks: 0 = background, 1..C = classes, 255 = ignore
                                             (palette or 8-bit grey PNG); folder name configurable
    saliency/<id>.png                        8-bit grey saliency maps (class-agnostic), same name as the
                                             image; folder name configurable
    ImageSets/Segmentation/<split>.txt       one image id per line (blank lines and lines starting
                                             with ``#`` are skipped)
    ImageSets/Segmentation/<split>_cls.txt   the authors' ``train_cls.txt`` format: ``<id> <c> <c> ...``
                                             where each ``c`` is a 0-based FOREGROUND class index
                                             (0..C-1), i.e. the mask value minus 1; path configurable
    classes.txt                              optional: the C foreground class names, one per line (a
                                             first line ``background`` / ``_background_`` is skipped)

Every configurable path may be given relative to ``<root>`` or absolute, and may contain ``{split}``
(e.g. ``image_dir="{split}"`` for COCO's ``train2014/`` and ``val2014/`` folders). When ``<split>.txt``
is absent, the ids of the label list (class list or CSV, in file order) are the split.

Image-level labels come from one of the sources of ``l2g.data.labels`` (``labels=``): ``cls_txt``,
``csv``, ``npy``, ``xml``, ``masks``, or ``auto``, which takes the first that exists of
``ImageSets/Segmentation/<split>_cls.txt``, ``<split>_cls.txt``, ``<split>.csv``, ``cls_labels.npy``,
``Annotations/`` and the mask folder (an explicit ``cls_list`` is typed by its suffix: .npy, .csv, else
cls_txt). Deriving labels from XML or masks reads one file per image: ``l2g prepare voc`` does it once
and writes ``<split>_cls.txt``.

Why validate up front: a missing or broken file otherwise surfaces as a crash in a data-loader worker
hours into training. ``load_split`` checks the whole split and raises a single ``DatasetError`` that
lists the problems, each starting with the path of the offending file (the decoding checks are
:mod:`l2g.data.split_checks`; the label readers, one per source, :mod:`l2g.data.labels`).
"""

from __future__ import annotations

from pathlib import Path

from l2g.config.text_files import content_lines
from l2g.data.errors import DatasetError, DatasetWarning
from l2g.data.image_files import IMAGE_SUFFIXES, find_image
from l2g.data.label_sources import label_reader
from l2g.data.labels import (
    VOC_CLASSES,
    LabelTable,
    check_num_classes,
    derived_labels,
    read_class_list,
    read_class_names,
)
from l2g.data.palette import bad_mask_values, mask_value_error
from l2g.data.pil_open import PIL_ERRORS, decoded_size
from l2g.data.registry import (
    CHECK_MODES,
    LABEL_SOURCE_NAMES,
    LABEL_SOURCES,
    SPLIT_FOLDER,
)
from l2g.data.sample import Sample
from l2g.data.split_checks import check_masks, decode_check, raise_problems, warn_resized

__all__ = [
    "CHECK_MODES", "DatasetError", "DatasetWarning", "PIL_ERRORS", "Sample", "bad_mask_values", "check_masks",
    "class_names",
    "decoded_size", "find_image", "load_split", "mask_value_error", "read_class_list", "read_id_list",
    "split_is_listed", "split_labels",
]

IMAGE_DIR = "JPEGImages"
SPLIT_DIR = Path(SPLIT_FOLDER)
CLASS_NAMES_FILE = "classes.txt"


def read_id_list(path: str | Path) -> list[str]:
    """The image ids of a split file, one per line, in file order.

    Raises DatasetError for a missing file, a file without ids, a line with more than one word and an
    id listed twice (a duplicate would silently weight that image twice).
    """
    path = Path(path)
    first_seen: dict[str, int] = {}
    for number, text in content_lines(path):
        if len(text.split()) != 1:
            raise DatasetError(f"{path}:{number}: expected one image id per line, got {text!r}")
        if text in first_seen:
            raise DatasetError(
                f"{path}:{number}: image id {text!r} listed twice (first on line {first_seen[text]})"
            )
        first_seen[text] = number
    if not first_seen:
        raise DatasetError(f"{path}: no image ids (the file is empty)")
    return list(first_seen)


def _names_path(root: Path, classes_file: str | Path | None) -> Path:
    return _resolve(root, classes_file) if classes_file is not None else root / CLASS_NAMES_FILE


def class_names(root: str | Path, num_classes: int, classes_file: str | Path | None = None) -> list[str]:
    """The C foreground class names from the classes file (default ``<root>/classes.txt``), else
    ``["class0", "class1", ...]``. A classes file given explicitly must exist."""
    check_num_classes(num_classes)
    path = _names_path(Path(root), classes_file)
    if not path.exists():
        if classes_file is not None:
            raise DatasetError(f"{path}: classes file not found")
        return [f"class{index}" for index in range(num_classes)]
    return read_class_names(path, num_classes)


def _fill(path: str | Path, split: str) -> str:
    """``path`` with ``{split}`` replaced (plain replacement: other braces stay as they are)."""
    return str(path).replace("{split}", split)


def _resolve(root: Path, path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the dataset root."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def _file_kind(path: Path) -> str:
    """The label source of an explicitly given label file, from its suffix."""
    suffix = path.suffix.lower()
    return {".npy": "npy", ".csv": "csv"}.get(suffix, "cls_txt")


def _label_source(root: Path, split: str, labels: str, cls_list: str | Path | None, mask_dir: str) -> tuple[
    str | None, Path | None, list[Path]
]:
    """(source kind, path, paths tried) of the split's labels; kind None when ``auto`` finds nothing."""
    if labels not in LABEL_SOURCE_NAMES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_SOURCE_NAMES)}, got {labels!r}")
    if cls_list is not None:
        path = _resolve(root, _fill(cls_list, split))
        kind = _file_kind(path) if labels == "auto" else labels
        if LABEL_SOURCES[kind].suffix is not None:
            raise ValueError(f"a label file (cls_list={cls_list}) cannot be used with labels={kind}")
        return kind, path, [path]
    kinds = [labels] if labels != "auto" else list(LABEL_SOURCES)
    tried = []
    for kind in kinds:
        for candidate in LABEL_SOURCES[kind].defaults:
            path = _resolve(root, candidate.format(split=split, mask_dir=mask_dir))
            tried.append(path)
            if path.exists():
                return kind, path, tried
    if labels != "auto":
        return labels, tried[0], tried  # explicitly asked for: its absence is reported by the reader
    return None, None, tried


def _label_names(root: Path, num_classes: int, classes_file: str | Path | None, kind: str) -> list[str] | None:
    """Class names for sources that label by name (csv, xml); None where indices are used instead."""
    path = _names_path(root, classes_file)
    if not LABEL_SOURCES[kind].named:
        return None
    if path.exists():
        return read_class_names(path, num_classes)
    if classes_file is not None:
        raise DatasetError(f"{path}: classes file not found")
    if kind == "xml":
        if num_classes == len(VOC_CLASSES):
            return list(VOC_CLASSES)
        raise DatasetError(f"{path}: labels from Annotations XML need the class names, and the file is missing")
    return None


def _split_ids(root: Path, split: str, table: LabelTable | None, tried: list[Path]) -> list[str]:
    """The ids of the split: its id list, else the label list's ids (CSV or class list)."""
    split_path = root / SPLIT_DIR / f"{split}.txt"
    if split_path.exists():
        return read_id_list(split_path)
    if table is not None and table.kind != "npy":
        return list(table.labels)
    if table is not None:
        raise DatasetError(f"{split_path}: split list not found (labels from a cls_labels.npy need it)")
    looked = ", ".join(str(path) for path in tried)
    raise DatasetError(f"{split_path}: split list not found, and no label list to take the ids from ({looked})")


def _optional_dir(root: Path, name: str | Path, what: str, needed: bool, problems: list[str]) -> Path | None:
    """The resolved folder, or None when it is missing (a problem only when its files are needed)."""
    folder = _resolve(root, name)
    if folder.is_dir():
        return folder
    if needed:
        problems.append(f"{folder}: {what} folder not found")
    return None


def _optional_file(
    folder: Path | None, image_id: str, what: str, needed: bool, problems: list[str]
) -> Path | None:
    """``<folder>/<id>.png`` when it exists; a missing one is a problem only when needed."""
    if folder is None:
        return None
    path = folder / f"{image_id}.png"
    if path.is_file():
        return path
    if needed:
        problems.append(f"{path}: {what} for image id {image_id!r} not found")
    return None


def _image_dir(root: Path, image_dir: str | Path, split: str) -> Path:
    folder = _resolve(root, _fill(image_dir, split))
    if folder.is_dir():
        return folder
    hint = ""
    for nested in ("VOC2012", "VOCdevkit/VOC2012"):
        if (root / nested / IMAGE_DIR).is_dir():
            hint = f" (did you mean data.root={root / nested}?)"
    raise DatasetError(f"{folder}: image folder not found{hint}")


def split_is_listed(root: str | Path, split: str, cls_list: str | Path | None = None) -> bool:
    """Whether ``split`` has an id list or a label list of its own (a mask or annotation folder shared by
    every split does not list one)."""
    root = Path(root)
    if (root / SPLIT_DIR / f"{split}.txt").is_file():
        return True
    if cls_list is not None:
        return _resolve(root, _fill(cls_list, split)).is_file()
    candidates = (SPLIT_DIR / f"{split}_cls.txt", Path(f"{split}_cls.txt"), Path(f"{split}.csv"))
    return any((root / candidate).is_file() for candidate in candidates)


def split_labels(
    root: str | Path,
    split: str,
    num_classes: int,
    *,
    labels: str = "auto",
    cls_list: str | Path | None = None,
    mask_dir: str | Path = "SegmentationClassAug",
    classes_file: str | Path | None = None,
    problems: list[str] | None = None,
) -> tuple[list[str], LabelTable]:
    """The split's ids and their labels from the chosen source, without looking at images.

    Per-image sources (xml, masks) read every file; their problems are raised together as one
    DatasetError. Ids without labels are not an error here (``load_split`` reports them). Given a list
    of ``problems``, the problems of the labels' rows and files (a CSV's bad rows, unreadable XML files)
    are added to it instead of raised, and the labels that could be read are returned.
    """
    root = Path(root)
    kind, path, tried = _label_source(root, split, labels, cls_list, _fill(mask_dir, split))
    if kind is None:
        split_path = root / SPLIT_DIR / f"{split}.txt"
        looked = ", ".join(str(p) for p in tried)
        if not split_path.exists():
            raise DatasetError(f"{split_path}: split list not found, and no labels to take the ids from "
                               f"(looked for {looked})")
        raise DatasetError(f"{root}: no image-level labels for split {split!r} (looked for {looked}); "
                           "run 'l2g prepare voc' or set data.cls_list / data.labels")
    if LABEL_SOURCES[kind].suffix is None:
        names = _label_names(root, num_classes, classes_file, kind)
        table = label_reader(kind)(path, num_classes, names, str(_names_path(root, classes_file)), problems)
        return _split_ids(root, split, table, tried), table
    ids = _split_ids(root, split, None, tried)
    names = _label_names(root, num_classes, classes_file, kind)
    read, suffix = label_reader(kind), LABEL_SOURCES[kind].suffix
    found: list[str] = []
    derived = derived_labels(ids, lambda i: path / f"{i}{suffix}", lambda p: read(p, num_classes, names), found)
    if problems is not None:
        problems.extend(found)
    else:
        raise_problems(root, split, found)
    return ids, LabelTable(derived, path, kind)


def load_split(
    root: str | Path,
    split: str,
    num_classes: int,
    *,
    cls_list: str | Path | None = None,
    mask_dir: str | Path = "SegmentationClassAug",
    saliency_dir: str | Path = "saliency",
    need_masks: bool = False,
    need_saliency: bool = False,
    check_images: str = "exists",
    image_dir: str | Path = IMAGE_DIR,
    labels: str = "auto",
    classes_file: str | Path | None = None,
    image_view: str = "stored",
    decode_masks: bool = False,
) -> list[Sample]:
    """The samples of ``split``, after checking the whole split on disk.

    Reads the id list (or falls back to the label list's ids), the labels (``labels`` source, see the
    module docstring) and resolves every path. All problems are collected and raised as one DatasetError,
    by kind (the label list's bad rows, files not found, files that cannot be used; the first 20 of each
    listed, plus the count of the rest): a bad row of a CSV label list (an unknown class name, an image
    listed twice; its images are still checked), an id without an image, an id without labels, a needed
    mask or saliency map that is missing. ``check_images="decode"`` also decodes every image, mask and saliency
    map (in parallel threads, and only once per file version: :mod:`l2g.data.file_checks`), and reports
    unreadable files, masks whose size differs from their image (when masks are needed) and mask values
    outside 0..C and 255. A saliency map whose size differs from its image is only warned
    about (one DatasetWarning for the whole split): it is resized at load time by ``read_saliency``.
    ``image_view`` ("stored" or "displayed": EXIF orientation applied) is how the images are read, and the
    size masks and saliency maps must have. ``decode_masks`` decodes the masks there are (size, values) even
    when they are not needed, for a split that a later stage scores against the masks some images have.
    """
    check_num_classes(num_classes)
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, got {check_images!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    mask_dir, saliency_dir = _fill(mask_dir, split), _fill(saliency_dir, split)
    images = _image_dir(root, image_dir, split)  # first: a root one level too high is the likeliest mistake
    label_problems: list[str] = []
    ids, table = split_labels(root, split, num_classes, labels=labels, cls_list=cls_list, mask_dir=mask_dir,
                              classes_file=classes_file, problems=label_problems)
    listed_labels = LABEL_SOURCES[table.kind].suffix is None  # per-image sources named their own failures

    problems: list[str] = []  # files not found
    masks = _optional_dir(root, mask_dir, "mask", need_masks, problems)
    saliency = _optional_dir(root, saliency_dir, "saliency", need_saliency, problems)
    samples = []
    for image_id in ids:
        image_path = _image_path(images, image_id, table, problems)
        if image_id not in table.labels and listed_labels:
            problems.append(f"{table.path}: no labels for image id {image_id!r}")
        mask_path = _optional_file(masks, image_id, "mask", need_masks, problems)
        saliency_path = _optional_file(saliency, image_id, "saliency map", need_saliency, problems)
        if image_path is not None:
            samples.append(Sample(image_id, image_path, table.labels.get(image_id, ()), mask_path, saliency_path,
                                  image_view))

    unusable: list[str] = []
    check = need_masks or decode_masks  # a mask not needed is only checked where there is one
    resized = decode_check(samples, num_classes, check, unusable, root) if check_images == "decode" else []
    raise_problems(root, split, problems, labels=label_problems, unusable=unusable)
    warn_resized(resized)  # only for a split that loads: the error would list what matters first
    return samples


def _image_path(images: Path, image_id: str, table: LabelTable, problems: list[str]) -> Path | None:
    """The image of ``image_id``: the file a CSV row names, else ``<id>.<suffix>``; None (+ a problem) if absent."""
    listed = table.files.get(image_id)
    if listed is not None:
        path = images / listed
        if path.is_file():
            return path
        problems.append(f"{path}: image listed in {table.path} not found")
        return None
    path = find_image(images, image_id)
    if path is None:
        tried = ", ".join(IMAGE_SUFFIXES[1:])
        problems.append(f"{images / image_id}.jpg: image for id {image_id!r} not found (also tried {tried})")
    return path



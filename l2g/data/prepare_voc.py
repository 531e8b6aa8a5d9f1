"""``l2g prepare voc``: check a PASCAL VOC 2012 (+ SBD) copy and write the label lists training reads.

Input: the layout users already have (``--root`` may be ``VOCdevkit/VOC2012``, ``VOCdevkit`` or the
folder holding ``VOCdevkit``)::

    JPEGImages/                       17,125 images
    SegmentationClassAug/             the SBD-augmented masks (12,031 PNGs = train_aug + val)
    SegmentationClass/                VOC's own masks (optional)
    Annotations/                      VOC XML (optional: one way to get image-level labels)
    ImageSets/Segmentation/           train.txt, val.txt (VOC), train_aug.txt (IRN/SEAM ship it; derived
                                      here from SegmentationClassAug minus val when absent)
    saliency/                         optional: PoolNet maps or ``l2g saliency`` output (L2G + shape)

Output, for every split: ``ImageSets/Segmentation/<split>_cls.txt`` (the ``train_cls.txt`` form), plus
``train_aug.txt`` when it was derived and ``classes.txt`` (the 20 VOC names) when absent. All writes are
atomic. Rerunning is cheap and safe: an existing ``<split>_cls.txt`` that covers the split is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from l2g.data.errors import DatasetError, listed
from l2g.data.labels import (
    VOC_CLASSES,
    LabelTable,
    derived_labels,
    mask_labels,
    read_class_list,
    read_class_names,
    read_npy_labels,
    write_class_list,
    write_id_list,
    xml_labels,
)
from l2g.data.layout import (
    CLASS_NAMES_FILE,
    IMAGE_DIR,
    SPLIT_DIR,
    load_split,
    read_id_list,
)
from l2g.data.registry import ANNOTATIONS_DIR, LABEL_SOURCE_NAMES, NPY_LABELS_FILE

EXPECTED_COUNTS = {"train_aug": 10_582, "train": 1_464, "val": 1_449}
DEFAULT_SPLITS = ("train_aug", "train", "val")
NUM_CLASSES = len(VOC_CLASSES)
MAX_SHOWN = 5


@dataclass
class SplitSummary:
    """What ``prepare_voc`` found and wrote for one split."""

    split: str
    images: int
    labels_from: str
    list_derived: bool
    cls_written: bool
    masks: int
    saliency: int


def find_voc_root(root: str | Path) -> Path:
    """The folder that holds ``JPEGImages``: ``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root)
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for candidate in candidates:
        if (candidate / IMAGE_DIR).is_dir():
            return candidate
    tried = ", ".join(str(c / IMAGE_DIR) for c in candidates)
    raise DatasetError(f"{root}: no PASCAL VOC 2012 here (looked for {tried})")


def _split_ids(root: Path, split: str, mask_dir: Path, log: Callable[[str], None]) -> tuple[list[str], bool]:
    """The ids of ``split`` and whether the list was derived (train_aug from the augmented masks)."""
    path = root / SPLIT_DIR / f"{split}.txt"
    if path.exists():
        return read_id_list(path), False
    if split != "train_aug":
        raise DatasetError(f"{path}: split list not found")
    val_path = root / SPLIT_DIR / "val.txt"
    if not mask_dir.is_dir():
        raise DatasetError(
            f"{path}: not found, and no {mask_dir} to derive it from (train_aug = the SBD-augmented masks "
            "minus val): put SegmentationClassAug (or IRN's/SEAM's train_aug.txt) in place"
        )
    val = set(read_id_list(val_path))
    ids = sorted(p.stem for p in mask_dir.glob("*.png") if not p.name.startswith(".") and p.stem not in val)
    if not ids:
        raise DatasetError(f"{mask_dir}: no masks outside val to derive {path.name} from")
    write_id_list(path, ids)
    log(f"derived {path} from {mask_dir} minus {val_path.name}: {len(ids)} ids")
    return ids, True


def count_problems(counts: dict[str, int]) -> list[str]:
    """One line per split whose id count differs from the official PASCAL VOC 2012 + SBD count."""
    return [
        f"{split}: {count:,} images, expected {EXPECTED_COUNTS[split]:,}"
        for split, count in counts.items()
        if split in EXPECTED_COUNTS and count != EXPECTED_COUNTS[split]
    ]


def _covers(table: dict[str, tuple[int, ...]], ids: list[str]) -> list[str]:
    """The ids missing from ``table``."""
    return [image_id for image_id in ids if image_id not in table]


def _derive(ids: list[str], path_of, read, desc: str, progress: bool) -> dict[str, tuple[int, ...]]:
    """Labels read per image, every failure collected into one DatasetError."""
    problems: list[str] = []
    labels = derived_labels(ids, path_of, read, problems, progress, desc)
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) while deriving labels ({desc}):\n{listed(problems, 20)}")
    return labels


def _candidates(root: Path, split: str, labels: str, cls_labels: Path | None, mask_dir: Path) -> list[tuple[str, Path]]:
    """(kind, path) label sources to try for a split, in order: the given file, the split's own
    ``<split>_cls.txt``, ``cls_labels.npy``, the Annotations XML, the masks; only the first of the chosen
    kind unless ``labels`` is auto."""
    given = [("npy" if cls_labels.suffix.lower() == ".npy" else "cls_txt", cls_labels)] if cls_labels else []
    pool = [*given, ("cls_txt", root / SPLIT_DIR / f"{split}_cls.txt"), ("npy", root / NPY_LABELS_FILE),
            ("xml", root / ANNOTATIONS_DIR), ("masks", mask_dir)]
    if labels == "auto":
        return list(dict.fromkeys(pool))
    return [candidate for candidate in pool if candidate[0] == labels][:1]


def _labels_for(
    ids: list[str], kind: str, path: Path, progress: bool, split: str
) -> dict[str, tuple[int, ...]]:
    if kind == "cls_txt":
        return read_class_list(path, NUM_CLASSES)
    if kind == "npy":
        return read_npy_labels(path, NUM_CLASSES).labels
    if kind == "xml":
        return _derive(ids, lambda i: path / f"{i}.xml", lambda p: xml_labels(p, list(VOC_CLASSES)),
                       f"{split}: labels from XML", progress)
    return _derive(ids, lambda i: path / f"{i}.png", lambda p: mask_labels(p, NUM_CLASSES),
                   f"{split}: labels from masks", progress)


def split_labels_from_sources(
    root: Path, split: str, ids: list[str], labels: str, cls_labels: Path | None, mask_dir: Path, progress: bool
) -> tuple[LabelTable, list[str]]:
    """The first source that labels every id of the split, and notes on the sources passed over.

    With ``labels="auto"`` a source that does not exist or misses ids is passed over; an explicitly
    chosen source that misses ids is an error naming how many and which.
    """
    notes = []
    for kind, path in _candidates(root, split, labels, cls_labels, mask_dir):
        if not path.exists():
            if labels != "auto":
                raise DatasetError(f"{path}: not found (labels={labels})")
            continue
        table = _labels_for(ids, kind, path, progress, split)
        missing = _covers(table, ids)
        if not missing:
            return LabelTable({i: table[i] for i in ids}, path, kind), notes
        shown = ", ".join(missing[:MAX_SHOWN])
        message = f"{path} ({kind}) has no labels for {len(missing):,} of the {len(ids):,} {split} ids (e.g. {shown})"
        if labels != "auto":
            raise DatasetError(message)
        notes.append(message)
    tried = "; ".join(notes) or "no label source exists"
    raise DatasetError(
        f"{root}: no image-level labels cover split {split!r} ({tried}). Give --cls-labels (train_cls.txt or "
        f"cls_labels.npy), or put Annotations/ or {mask_dir.name}/ in place"
    )


def _class_names_file(root: Path, log: Callable[[str], None]) -> None:
    """Write classes.txt with the 20 VOC names when absent; check an existing one."""
    path = root / CLASS_NAMES_FILE
    if path.exists():
        names = read_class_names(path, NUM_CLASSES)
        if tuple(names) != VOC_CLASSES:
            log(f"note: {path} differs from the standard VOC class names; it is used as it is")
        return
    write_id_list(path, VOC_CLASSES)
    log(f"wrote {path}")


def prepare_voc(
    root: str | Path,
    *,
    splits: tuple[str, ...] = DEFAULT_SPLITS,
    labels: str = "auto",
    cls_labels: str | Path | None = None,
    mask_dir: str = "SegmentationClassAug",
    saliency_dir: str = "saliency",
    count_check: bool = True,
    check_images: str = "exists",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[SplitSummary]]:
    """Check the VOC copy under ``root`` and write every split's ``<split>_cls.txt``; returns the VOC root
    (the folder with JPEGImages, what ``data.root`` must be) and one summary per split.

    Raises DatasetError when a split's id count differs from 10,582 / 1,464 / 1,449 (train_aug / train /
    val) unless ``count_check=False`` (then a "warning:" line is logged), when no label source covers a split,
    and for every problem ``load_split`` finds (missing images, unreadable files with ``check_images=
    "decode"``).
    """
    if labels not in LABEL_SOURCE_NAMES or labels == "csv":
        raise ValueError(f"labels must be one of auto, cls_txt, npy, xml, masks for VOC, got {labels!r}")
    voc = find_voc_root(root)
    masks = voc / mask_dir
    cls_path = Path(cls_labels) if cls_labels is not None else None
    if cls_path is not None and not cls_path.is_file():
        raise DatasetError(f"{cls_path}: label file not found")
    _class_names_file(voc, log)

    ids_of, derived = {}, {}
    for split in splits:
        ids_of[split], derived[split] = _split_ids(voc, split, masks, log)
    mismatches = count_problems({split: len(ids) for split, ids in ids_of.items()})
    if mismatches:
        text = "; ".join(mismatches)
        if count_check:
            raise DatasetError(
                f"{voc}: split sizes differ from PASCAL VOC 2012 + SBD ({text}). Check the split lists; pass "
                "--no-count-check for a subset or a custom copy"
            )
        log(f"warning: split sizes differ from PASCAL VOC 2012 + SBD ({text})")

    summaries = []
    for split in splits:
        ids = ids_of[split]
        table, notes = split_labels_from_sources(voc, split, ids, labels, cls_path, masks, progress)
        for note in notes:
            log(f"{split}: passed over {note}")
        target = voc / SPLIT_DIR / f"{split}_cls.txt"
        written = table.path != target
        if written:
            write_class_list(target, table.labels)
        samples = load_split(voc, split, NUM_CLASSES, labels="cls_txt", mask_dir=mask_dir,
                             saliency_dir=saliency_dir, check_images=check_images)
        summary = SplitSummary(
            split, len(samples), table.source, derived[split], written,
            sum(s.mask_path is not None for s in samples), sum(s.saliency_path is not None for s in samples),
        )
        if summary.saliency < summary.images:
            log(f"note: {split}: {summary.saliency:,} of {summary.images:,} images have a saliency map in "
                f"{voc / saliency_dir}; L2G + shape needs one per training image (l2g saliency writes them)")
        summaries.append(summary)
    return voc, summaries


def summary_table(summaries: list[SplitSummary]) -> str:
    """A plain-text table of the splits: images, label source, masks, saliency maps."""
    rows = [("split", "images", "masks", "saliency", "labels from")]
    for s in summaries:
        source = s.labels_from + (" -> written" if s.cls_written else " (kept)")
        rows.append((s.split, f"{s.images:,}", f"{s.masks:,}", f"{s.saliency:,}", source))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                     for row in rows)

"""Tiny PASCAL VOC-, COCO- and custom-layout datasets written by the tests (a few 32-48 px images).

Every maker returns the ground truth it wrote, so tests compare what the readers return with what is
known to be on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from l2g.data.labels import VOC_CLASSES
from l2g.data.palette import save_mask

HEIGHT, WIDTH = 32, 40


def write_rgb(path: Path, seed: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def voc_mask(classes: tuple[int, ...]) -> np.ndarray:
    """A mask with one vertical band per 0-based class (value class + 1) and a 255 border row."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for index, c in enumerate(classes):
        mask[4:-4, 4 + 10 * index : 12 + 10 * index] = c + 1
    mask[0] = 255
    return mask


def voc_xml(classes: tuple[int, ...], extra_part: bool = True) -> str:
    """A VOC annotation with one object per class (the first one also marked difficult, with a part)."""
    objects = []
    for index, c in enumerate(classes):
        part = "<part><name>head</name></part>" if extra_part and index == 0 else ""
        difficult = 1 if index == 0 else 0
        objects.append(f"<object><name>{VOC_CLASSES[c]}</name><difficult>{difficult}</difficult>{part}</object>")
    return f"<annotation><filename>x.jpg</filename>{''.join(objects)}</annotation>"


def make_voc(base: Path, train: int = 4, extra_aug: int = 3, val: int = 3, saliency: bool = True) -> dict:
    """``base/VOCdevkit/VOC2012`` with VOC's train/val lists (no train_aug.txt), SegmentationClassAug for
    train_aug + val, Annotations, saliency maps, and beside the root the label files users download:
    ``train_cls.txt`` (train_aug), IRN's and SEAM's ``cls_labels.npy``. Returns the truth."""
    voc = base / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    ids = [f"2007_{index:06d}" for index in range(1, train + extra_aug + val + 1)]
    train_ids, aug_ids, val_ids = ids[:train], ids[train : train + extra_aug], ids[train + extra_aug :]
    labels = {}
    for seed, image_id in enumerate(ids):
        classes = tuple(sorted(rng.choice(20, size=int(rng.integers(1, 3)), replace=False).tolist()))
        labels[image_id] = classes
        write_rgb(voc / "JPEGImages" / f"{image_id}.jpg", seed)
        save_mask(voc / "SegmentationClassAug" / f"{image_id}.png", voc_mask(classes))
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(classes))
        if saliency:
            (voc / "saliency").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((HEIGHT, WIDTH), 200, np.uint8)).save(voc / "saliency" / f"{image_id}.png")
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(train_ids) + "\n")
    (sets / "val.txt").write_text("\n".join(val_ids) + "\n")
    train_aug = sorted(train_ids + aug_ids)
    downloads = base / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / "train_cls.txt").write_text(
        "".join(" ".join([i, *map(str, labels[i])]) + "\n" for i in train_aug))
    vectors = {i: np.isin(np.arange(20), labels[i]).astype(np.float32) for i in ids}
    np.save(downloads / "irn_cls_labels.npy", {np.int32(int(i.replace("_", ""))): v for i, v in vectors.items()})
    np.save(downloads / "seam_cls_labels.npy", dict(vectors))
    return {"voc": voc, "labels": labels, "train": train_ids, "train_aug": train_aug, "val": val_ids,
            "downloads": downloads}


# --- COCO ------------------------------------------------------------------------------------------------

COCO_CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
COCO_NAMES = ["person", "car", "toothbrush"]  # sorted category ids 1, 3, 90 -> classes 1, 2, 3


def square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_of(mask: np.ndarray, compressed: bool) -> dict:
    """The COCO RLE of a bool mask: uncompressed (counts list, column-major runs) or compressed string."""
    from pycocotools import mask as mask_utils

    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def make_coco(root: Path, split: str = "train2014", first_id: int = 1) -> dict:
    """``root/annotations/instances_<split>.json`` + ``root/<split>/*.jpg``: five 32x40 images.

    1: a large car square with a small person square inside it (the small one listed FIRST);
    2: a toothbrush polygon and a crowd region of persons (uncompressed RLE) beside it;
    3: only a crowd region -> dropped; 4: no annotation -> dropped;
    5: a compressed-RLE car and a degenerate 2-point polygon (dropped polygon).
    Returns the expected kept ids, labels and some pixel checks.
    """
    def name(index: int) -> str:
        return f"COCO_{split}_{first_id + index:012d}"

    images = [{"id": first_id + i, "file_name": f"{name(i)}.jpg", "height": HEIGHT, "width": WIDTH} for i in range(5)]
    for i in range(5):
        write_rgb(root / split / f"{name(i)}.jpg", i)
    crowd = np.zeros((HEIGHT, WIDTH), bool)
    crowd[2:10, 25:38] = True
    car = np.zeros((HEIGHT, WIDTH), bool)
    car[10:20, 5:30] = True
    annotations = [
        {"id": 11, "image_id": first_id, "category_id": 1, "iscrowd": 0, "segmentation": [square(12, 12, 18, 18)]},
        {"id": 12, "image_id": first_id, "category_id": 3, "iscrowd": 0, "segmentation": [square(2, 2, 38, 30)]},
        {"id": 21, "image_id": first_id + 1, "category_id": 90, "iscrowd": 0, "segmentation": [square(2, 2, 20, 28)]},
        {"id": 22, "image_id": first_id + 1, "category_id": 1, "iscrowd": 1, "segmentation": rle_of(crowd, False)},
        {"id": 31, "image_id": first_id + 2, "category_id": 1, "iscrowd": 1, "segmentation": rle_of(crowd, False)},
        {"id": 51, "image_id": first_id + 4, "category_id": 3, "iscrowd": 0, "segmentation": rle_of(car, True)},
        {"id": 52, "image_id": first_id + 4, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 5, 5]]},
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}))
    return {
        "kept": [name(0), name(1), name(4)],
        "labels": {name(0): (0, 1), name(1): (2,), name(4): (1,)},
        "dropped": [name(2), name(3)],
        "crowd": crowd,
        "car": car,
        "json": path,
    }


OWN_CLASSES = ("cat", "dog", "bird")
OWN_SIZE = (40, 48)  # (H, W) as every viewer shows the photos
EXIF_ORIENTATION = 0x0112


def own_image(classes: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like (H, W, 3) image with one coloured square per class on a noisy grey background, and its
    mask (value class + 1)."""
    rng = np.random.default_rng(seed)
    height, width = OWN_SIZE
    image = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    colours = ((220, 40, 40), (40, 200, 40), (40, 60, 220))
    for slot, c in enumerate(classes):
        top, left = 6 + int(rng.integers(0, 8)), 4 + 22 * slot + int(rng.integers(0, 4))
        image[top : top + 18, left : left + 16] = colours[c]
        mask[top : top + 18, left : left + 16] = c + 1
    return image, mask


def make_own_images(root: Path, count: int = 12, masks: int = 0, val: int = 0, rotated: str | None = "img00",
                    names: tuple[str, ...] = OWN_CLASSES) -> dict:
    """The README's "your own tagged images" layout: ``images/`` (``.jpg`` and ``.png``), ``classes.txt`` and
    ``train.csv`` with class names; masks for the first ``masks`` images only (``masks/<id>.png``); ``val``
    more images in ``val.csv``. Image ``rotated`` is stored turned on its side with EXIF orientation 6
    (rotate 90 degrees clockwise to display), as phones write portrait photos. Returns the truth."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    truth: dict = {"labels": {}, "masks": {}, "files": {}}
    rows = {"train": ["image,labels"], "val": ["image,labels"]}
    for index in range(count + val):
        image_id = f"img{index:02d}"
        classes = (index % 3,) if index % 4 else (index % 3, (index + 1) % 3)
        classes = tuple(sorted(classes))
        image, mask = own_image(classes, index)
        name = f"{image_id}.{'png' if index % 5 == 4 else 'jpg'}"
        picture = Image.fromarray(image)
        if image_id == rotated:  # stored turned 90 degrees anticlockwise; EXIF 6 turns it back for display
            stored = picture.transpose(Image.Transpose.ROTATE_90)
            exif = stored.getexif()
            exif[EXIF_ORIENTATION] = 6
            stored.save(images / name, exif=exif.tobytes(), quality=95)
        else:
            picture.save(images / name, **({"quality": 95} if name.endswith("jpg") else {}))
        split = "train" if index < count else "val"
        rows[split].append(f"{name},{';'.join(names[c] for c in classes)}")
        truth["labels"][image_id], truth["files"][image_id] = classes, name
        if index < masks:
            save_mask(root / "masks" / f"{image_id}.png", mask)
        truth["masks"][image_id] = mask
    (root / "train.csv").write_text("\n".join(rows["train"]) + "\n")
    if val:
        (root / "val.csv").write_text("\n".join(rows["val"]) + "\n")
    return truth

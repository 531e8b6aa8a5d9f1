"""The embedded synthetic benchmark: a seeded generator writing a small dataset in PASCAL VOC layout.

What it models (the phenomenon the paper is about):
- every object has a large BODY and a small PART (a "head") at its rim. The part is highly
  discriminative: a saturated colour and a ring unique to the class. The body is only weakly
  discriminative, as fur or skin is in real photos: classes come in families of two that share one
  body texture (a noisy low-contrast stripe pattern whose hue and orientation depend on the family),
  and the same textures appear on background distractors that belong to no class. So a whole-image
  classifier learns to rely on the part and its CAM is strong on parts and weak on bodies, while a
  view that misses the part still carries the label, so the body has to be learnt there.
- distractors in the background: part-less blobs wearing a family's body texture.
- multi-label images with PASCAL VOC's statistics (about 60% single-class, 30% two, 10% three).
- a VOC-sized variant (:func:`voc_sized_spec`, ``l2g synth --variant voc``) for measuring cost at scale:
  500 px long side, 20 classes with VOC 2012's class frequencies and label counts, any number of images.
- a simulated class-agnostic saliency detector, imperfect on purpose: soft and jittered boundaries,
  objects missed, distractors detected, a few empty maps.

Nothing here knows about the method; the parameters are fixed a priori, not tuned to any result.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from l2g.data.palette import save_mask

Rendered = tuple[np.ndarray, np.ndarray, np.ndarray, list[int], np.ndarray]
PARTS_DIR = "parts"  # binary PNGs of the discriminative parts, for diagnostics only
CLASS_NAMES = ("ant", "bee", "crab", "duck", "eel", "frog", "gnu", "hare")
# PASCAL VOC 2012 trainval (classification): images per class, aeroplane .. tvmonitor (the published dataset
# statistics, rounded); person is in about a third of the images. Mean labels per image: about 1.45.
VOC_CLASS_IMAGES = (670, 552, 765, 508, 706, 421, 1161, 1080, 1119, 303, 538, 1286, 482, 526, 4087, 527, 325, 507,
                    544, 575)
VOC_LABEL_COUNTS = (0.65, 0.25, 0.07, 0.03)  # P(1, 2, 3, 4 classes): mean 1.48


@dataclass
class SynthSpec:
    num_classes: int = 6
    train: int = 360
    val: int = 60
    min_side: int = 112
    max_side: int = 160
    seed: int = 0
    jpeg_quality: int = 92
    miss_rate: float = 0.12  # saliency misses an object
    distractor_hit_rate: float = 0.35  # saliency fires on a distractor
    empty_rate: float = 0.04  # saliency map empty
    family_size: int = 2  # classes sharing one body texture
    label_counts: tuple[float, ...] = (0.6, 0.3, 0.1)  # P(1, 2, 3, ... classes), as in VOC
    # None: every class equally likely; else one weight per class (e.g. VOC_CLASS_IMAGES)
    class_weights: tuple[float, ...] | None = None
    # None: height and width each drawn in [min_side, max_side]; else VOC-like: this long side, the short
    # side drawn in [min_side, max_side], landscape with probability ``landscape``
    long_side: int | None = None
    landscape: float = 0.7


def voc_sized_spec(train: int = 100, val: int = 20, seed: int = 0) -> SynthSpec:
    """The VOC-sized variant: 500 px long side, short side 333-375 (VOC's common sizes), 20 classes drawn
    with VOC 2012's class frequencies and label counts; everything else as the default generator."""
    return SynthSpec(num_classes=20, train=train, val=val, min_side=333, max_side=375, seed=seed,
                     label_counts=VOC_LABEL_COUNTS, class_weights=tuple(float(c) for c in VOC_CLASS_IMAGES),
                     long_side=500)


def class_names(spec: SynthSpec) -> list[str]:
    """The generator's class names: its own eight, VOC's twenty for a 20-class dataset, else class0, ..."""
    if spec.num_classes <= len(CLASS_NAMES):
        return list(CLASS_NAMES[: spec.num_classes])
    if spec.num_classes == 20:
        from l2g.data.labels import VOC_CLASSES

        return list(VOC_CLASSES)
    return [f"class{c}" for c in range(spec.num_classes)]


def _image_size(spec: SynthSpec, rng: np.random.Generator) -> tuple[int, int]:
    if spec.long_side is None:
        h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
        return h, w
    short = int(rng.integers(spec.min_side, spec.max_side + 1))
    return (short, spec.long_side) if rng.random() < spec.landscape else (spec.long_side, short)


def _draw_classes(spec: SynthSpec, rng: np.random.Generator) -> list[int]:
    counts = list(range(1, len(spec.label_counts) + 1))
    count = int(rng.choice(counts, p=list(spec.label_counts)))
    if spec.class_weights is None:
        return sorted(rng.choice(spec.num_classes, size=count, replace=False).tolist())
    weights = np.asarray(spec.class_weights, dtype=np.float64)
    if weights.shape != (spec.num_classes,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class_weights: expected {spec.num_classes} non-negative weights, got {spec.class_weights}")
    return sorted(rng.choice(spec.num_classes, size=count, replace=False, p=weights / weights.sum()).tolist())


def family_texture(family: int, families: int) -> tuple[float, float]:
    """The body hue and stripe angle of a family, spread evenly."""
    return (family / families + 0.07) % 1.0, np.pi * family / families


def class_style(c: int, num_classes: int, family_size: int = 2) -> dict:
    """Fixed per-class appearance: the family's body texture, a class-unique part colour and ring."""
    families = -(-num_classes // family_size)
    body_hue, angle = family_texture(c // family_size, families)
    return {
        "body_hue": body_hue,
        "angle": angle,
        "part_rgb": np.array(colorsys.hsv_to_rgb((c / num_classes + 0.5) % 1.0, 1.0, 1.0)) * 255,
        "ring_rgb": np.array([255.0, 255.0, 255.0]) if c % 2 == 0 else np.array([20.0, 20.0, 20.0]),
    }


def _blob(h: int, w: int, cy: float, cx: float, ry: float, rx: float, rot: float, rng) -> np.ndarray:
    """A boolean ellipse with a wobbly outline."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    theta = np.arctan2(v, u)
    wobble = 1 + 0.12 * np.sin(3 * theta + rng.uniform(0, 6.28)) + 0.06 * np.sin(5 * theta + rng.uniform(0, 6.28))
    return (u / rx) ** 2 + (v / ry) ** 2 <= wobble**2


def _stripes(h: int, w: int, hue: float, angle: float, rng, contrast: float = 0.18) -> np.ndarray:
    """A noisy low-contrast stripe texture of one hue, (h, w, 3) float in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(6.0, 9.0)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.28))
    sat, val = rng.uniform(0.25, 0.45), rng.uniform(0.5, 0.7)
    base = np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val)) * 255
    texture = base[None, None] * (1 + contrast * wave[..., None])
    return texture + rng.normal(0, 10, (h, w, 3))


def _background(h: int, w: int, rng) -> np.ndarray:
    low = rng.uniform(60, 170, (3, 3, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return smooth + rng.normal(0, 12, (h, w, 3))


def render(spec: SynthSpec, rng: np.random.Generator) -> Rendered:
    """One sample: RGB uint8 image, uint8 label mask, uint8 saliency map, sorted 0-based classes, and a
    boolean map of the visible discriminative parts (for diagnostics: where does a CAM look?)."""
    h, w = _image_size(spec, rng)
    image = _background(h, w, rng)
    mask = np.zeros((h, w), np.uint8)
    parts = np.zeros((h, w), bool)
    salient = np.zeros((h, w), np.float32)
    side = min(h, w)
    families = -(-spec.num_classes // spec.family_size)
    # Distractors first (behind the objects): a family's body texture without a part.
    for _ in range(int(rng.integers(1, 4))):
        r = side * rng.uniform(0.10, 0.2)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        blob = _blob(h, w, cy, cx, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, 3.14), rng)
        hue, angle = family_texture(int(rng.integers(families)), families)
        image[blob] = _stripes(h, w, hue + rng.normal(0, 0.03), angle + rng.normal(0, 0.15), rng)[blob]
        if rng.random() < spec.distractor_hit_rate:
            salient[blob] = 1.0
    classes = _draw_classes(spec, rng)
    for c in rng.permutation(classes):
        style = class_style(int(c), spec.num_classes, spec.family_size)
        ry = side * rng.uniform(0.18, 0.30)
        rx = ry * rng.uniform(0.55, 0.9)
        cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
        rot = rng.uniform(0, np.pi)
        body = _blob(h, w, cy, cx, ry, rx, rot, rng)
        texture = _stripes(h, w, style["body_hue"] + rng.normal(0, 0.03), style["angle"] + rng.normal(0, 0.15), rng)
        # The part sits on the rim of the body, along its long axis.
        sign = rng.choice([-1.0, 1.0])
        py, px = cy + sign * 0.85 * ry * np.cos(rot), cx - sign * 0.85 * ry * np.sin(rot)
        pr = ry * rng.uniform(0.28, 0.36)
        yy, xx = np.mgrid[0:h, 0:w]
        dist = np.sqrt((yy - py) ** 2 + (xx - px) ** 2)
        part = dist <= pr
        ring = part & (dist >= pr * 0.55) & (dist <= pr * 0.75)
        image[body] = texture[body]
        image[part] = style["part_rgb"] + rng.normal(0, 8, (int(part.sum()), 3))
        image[ring] = style["ring_rgb"]
        region = body | part
        mask[region] = int(c) + 1
        parts[region] = part[region]  # a later object hides the parts it covers
        if rng.random() >= spec.miss_rate:
            salient[region] = 1.0
        else:
            salient[region] = 0.0
    saliency = _imperfect_saliency(salient, rng, spec.empty_rate)
    return np.clip(image, 0, 255).astype(np.uint8), mask, saliency, classes, parts


def _imperfect_saliency(salient: np.ndarray, rng, empty_rate: float) -> np.ndarray:
    """Soft, slightly wrong boundaries like a real detector's; sometimes nothing at all."""
    if rng.random() < empty_rate:
        return np.zeros_like(salient, dtype=np.uint8)
    picture = Image.fromarray((salient * 255).astype(np.uint8))
    size = int(rng.choice([3, 5]))
    picture = picture.filter(ImageFilter.MaxFilter(size) if rng.random() < 0.5 else ImageFilter.MinFilter(size))
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0)))
    return np.asarray(picture, dtype=np.uint8)


def write_dataset(root: str | Path, spec: SynthSpec | None = None, progress: bool = True) -> Path:
    """Write the dataset under ``root`` in VOC layout (train and val splits). Returns the root."""
    from tqdm import tqdm

    spec = spec or SynthSpec()
    if len(spec.label_counts) > spec.num_classes:
        raise ValueError(f"label_counts allows {len(spec.label_counts)} classes per image, the dataset has "
                         f"{spec.num_classes}")
    root = Path(root)
    for folder in ("JPEGImages", "SegmentationClassAug", "saliency", PARTS_DIR, "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(class_names(spec)) + "\n")
    rng = np.random.default_rng(spec.seed)
    for split, count in (("train", spec.train), ("val", spec.val)):
        ids, lines = [], []
        for index in tqdm(range(count), desc=f"synth {split}", disable=not progress):
            image_id = f"{split}_{index:05d}"
            image, mask, saliency, classes, parts = render(spec, rng)
            Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=spec.jpeg_quality)
            save_mask(root / "SegmentationClassAug" / f"{image_id}.png", mask)
            Image.fromarray(saliency).save(root / "saliency" / f"{image_id}.png")
            Image.fromarray(parts.astype(np.uint8) * 255).save(root / PARTS_DIR / f"{image_id}.png")
            ids.append(image_id)
            lines.append(" ".join([image_id, *map(str, classes)]))
        sets = root / "ImageSets" / "Segmentation"
        (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
        (sets / f"{split}_cls.txt").write_text("\n".join(lines) + "\n")
    (root / "COMPLETE").write_text(f"{spec}\n")  # written last: the dataset is whole
    return root

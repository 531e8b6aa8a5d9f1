"""The synthetic generator: the default output is pinned (other measurements depend on it), and the VOC-sized
variant has VOC's sizes, classes and label statistics."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from l2g.cli import main
from l2g.data.labels import VOC_CLASSES
from l2g.data.synth import VOC_CLASS_IMAGES, SynthSpec, _draw_classes, _image_size, render, voc_sized_spec


def full_digest(spec: SynthSpec, count: int) -> str:
    rng = np.random.default_rng(spec.seed)
    h = hashlib.sha256()
    for _ in range(count):
        image, mask, saliency, classes, parts = render(spec, rng)
        for array in (image, mask, saliency, np.asarray(classes, np.int64), parts):
            h.update(np.ascontiguousarray(array).tobytes())
            h.update(str(array.shape).encode())
    return h.hexdigest()


# Computed from the generator before the VOC-sized variant was added (images, masks, saliency maps, classes
# and parts of the first samples): the default output must not move. The images go through Pillow's resize and
# filters, so a different Pillow build could change them; then check the masks and classes first.
@pytest.mark.parametrize(("spec", "count", "expected"), [
    (SynthSpec(), 3, "97c508ff8fe512fc0efde08b45470b5c9beb8a631f71fc05b54b69e932764e88"),
    (SynthSpec(num_classes=3, min_side=40, max_side=56, seed=5), 4,
     "6198a170dfbffd693c31fc3ea1bb398d00a856602a624b3b5095bded3cc56d17"),
])
def test_the_default_generator_output_is_unchanged(spec, count, expected):
    assert full_digest(spec, count) == expected


def test_the_voc_sized_variant_has_voc_sizes_classes_and_label_statistics():
    spec = voc_sized_spec()
    rng = np.random.default_rng(0)
    sizes = [_image_size(spec, rng) for _ in range(400)]
    assert all(max(s) == 500 and 333 <= min(s) <= 375 for s in sizes)
    assert 0.6 < np.mean([h < w for h, w in sizes]) < 0.8  # mostly landscape, as VOC
    draws = [_draw_classes(spec, rng) for _ in range(2000)]
    counts = Counter(len(d) for d in draws)
    assert set(counts) == {1, 2, 3, 4} and counts[1] > counts[2] > counts[3] > counts[4]
    assert 1.35 < np.mean([len(d) for d in draws]) < 1.6  # VOC 2012: about 1.45 labels per image
    share = Counter(c for d in draws for c in d)
    assert share.most_common(1)[0][0] == VOC_CLASSES.index("person") == int(np.argmax(VOC_CLASS_IMAGES))
    image, mask, saliency, classes, parts = render(spec, np.random.default_rng(1))
    assert image.shape[:2] == mask.shape == saliency.shape == parts.shape and max(mask.shape) == 500
    assert set(np.unique(mask)) <= {0, *(c + 1 for c in classes)}


def test_synth_cli_writes_the_voc_variant(tmp_path):
    root = tmp_path / "voc_synth"
    assert main(["synth", "--variant", "voc", "--train", "3", "--val", "1", "--out", str(root), "--quiet"]) == 0
    assert (root / "classes.txt").read_text().split() == list(VOC_CLASSES)
    lines = (root / "ImageSets" / "Segmentation" / "train_cls.txt").read_text().splitlines()
    assert len(lines) == 3 and all(0 <= int(c) < 20 for line in lines for c in line.split()[1:])

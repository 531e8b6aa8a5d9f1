"""Tests for l2g.data.layout and l2g.data.images: reading a VOC-layout dataset, checked up front."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g.data.images import read_image, read_mask, read_saliency
from l2g.data.layout import (
    DatasetError,
    DatasetWarning,
    Sample,
    class_names,
    load_split,
    read_class_list,
    read_id_list,
)
from l2g.data.palette import save_mask

C = 3
HEIGHT, WIDTH = 6, 8
# id -> 0-based foreground classes; the masks below contain exactly these classes (value = class + 1).
LABELS = {"2007_000001": (0, 2), "2007_000002": (1,), "2007_000003": (2,)}


def write_image(path: Path, size=(HEIGHT, WIDTH), seed=0) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_mask(path: Path, classes, size=(HEIGHT, WIDTH)) -> None:
    mask = np.zeros(size, dtype=np.uint8)
    for column, c in enumerate(classes):
        mask[:, column] = c + 1
    mask[0, -1] = 255
    save_mask(path, mask)


def write_saliency(path: Path, size=(HEIGHT, WIDTH)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, 255, dtype=np.uint8)).save(path)


def write_lists(root: Path, labels: dict, split: str = "train") -> None:
    folder = root / "ImageSets" / "Segmentation"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.txt").write_text("# ids\n" + "\n".join(labels) + "\n\n")
    lines = [" ".join([image_id, *map(str, classes)]) for image_id, classes in labels.items()]
    (folder / f"{split}_cls.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A three-image dataset with images, masks, saliency maps, the split and the class list."""
    root = tmp_path / "voc"
    for seed, (image_id, classes) in enumerate(LABELS.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", seed=seed)
        write_mask(root / "SegmentationClassAug" / f"{image_id}.png", classes)
        write_saliency(root / "saliency" / f"{image_id}.png")
    write_lists(root, LABELS)
    return root


def load(root: Path, **kwargs) -> list[Sample]:
    """load_split with the test's defaults, failing the test on any warning not asked for."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_split(root, "train", C, **kwargs)


def error_of(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load(root, **kwargs)
    return str(info.value)


# --- a good dataset ------------------------------------------------------------------------------------


def test_good_dataset_loads_labels_and_paths(dataset):
    samples = load(dataset, need_masks=True, need_saliency=True, check_images="decode")
    assert [s.image_id for s in samples] == list(LABELS)
    first = samples[0]
    assert first.labels == (0, 2)
    assert first.image_path == dataset / "JPEGImages" / "2007_000001.jpg"
    assert first.mask_path == dataset / "SegmentationClassAug" / "2007_000001.png"
    assert first.saliency_path == dataset / "saliency" / "2007_000001.png"
    assert [s.labels for s in samples] == list(LABELS.values())


def test_optional_files_absent_give_none(dataset):
    (dataset / "SegmentationClassAug" / "2007_000002.png").unlink()
    samples = load(dataset)
    assert samples[1].mask_path is None
    assert samples[0].mask_path is not None
    assert load(dataset, saliency_dir="nowhere")[0].saliency_path is None


def test_png_image_accepted_when_jpg_absent(dataset):
    (dataset / "JPEGImages" / "2007_000002.jpg").unlink()
    write_image(dataset / "JPEGImages" / "2007_000002.png")
    assert load(dataset, check_images="decode")[1].image_path.suffix == ".png"


def test_configurable_folders_and_absolute_class_list(dataset, tmp_path):
    (dataset / "SegmentationClassAug").rename(dataset / "Masks")
    (dataset / "saliency").rename(dataset / "sal_pfan")
    cls_file = tmp_path / "elsewhere_cls.txt"
    cls_file.write_text("2007_000001 1\n2007_000002 0\n2007_000003 2 0\n")
    samples = load(dataset, cls_list=cls_file, mask_dir="Masks", saliency_dir="sal_pfan", need_masks=True)
    assert [s.labels for s in samples] == [(1,), (0,), (0, 2)]
    assert samples[0].mask_path == dataset / "Masks" / "2007_000001.png"
    assert samples[0].saliency_path == dataset / "sal_pfan" / "2007_000001.png"


def test_split_list_absent_falls_back_to_class_list_ids(dataset):
    (dataset / "ImageSets" / "Segmentation" / "train.txt").unlink()
    (dataset / "ImageSets" / "Segmentation" / "train_cls.txt").write_text("2007_000003 2\n2007_000001 0 2\n")
    samples = load(dataset)
    assert [s.image_id for s in samples] == ["2007_000003", "2007_000001"]
    assert samples[1].labels == (0, 2)


def test_split_can_be_a_subset_of_the_class_list(dataset):
    (dataset / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000002\n")
    assert [s.image_id for s in load(dataset)] == ["2007_000002"]


# --- missing files ---------------------------------------------------------------------------------------


def test_missing_image_is_named(dataset):
    (dataset / "JPEGImages" / "2007_000002.jpg").unlink()
    message = error_of(dataset)
    assert "2007_000002.jpg" in message and "not found" in message
    assert "1 problem(s)" in message


def test_all_problems_are_collected(dataset):
    (dataset / "JPEGImages" / "2007_000001.jpg").unlink()
    (dataset / "JPEGImages" / "2007_000003.jpg").unlink()
    message = error_of(dataset)
    assert "2 problem(s)" in message
    assert "2007_000001.jpg" in message and "2007_000003.jpg" in message


def test_at_most_twenty_problems_are_listed(tmp_path):
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    write_lists(root, {f"img{i:02d}": (0,) for i in range(25)})
    message = error_of(root)
    assert "25 problem(s)" in message and "and 5 more" in message
    assert "img19.jpg" in message and "img20.jpg" not in message


def test_id_missing_from_class_list(dataset):
    (dataset / "ImageSets" / "Segmentation" / "train_cls.txt").write_text("2007_000001 0\n2007_000003 2\n")
    message = error_of(dataset)
    assert "train_cls.txt" in message and "no labels for image id '2007_000002'" in message


def test_missing_mask_is_an_error_only_when_masks_are_needed(dataset):
    (dataset / "SegmentationClassAug" / "2007_000003.png").unlink()
    load(dataset)
    message = error_of(dataset, need_masks=True)
    assert "SegmentationClassAug/2007_000003.png" in message and "mask" in message and "not found" in message


def test_missing_saliency_is_an_error_only_when_needed(dataset):
    (dataset / "saliency" / "2007_000001.png").unlink()
    load(dataset)
    message = error_of(dataset, need_saliency=True)
    assert "saliency/2007_000001.png" in message and "saliency map" in message and "not found" in message


def test_missing_split_and_class_list(dataset):
    for name in ("train.txt", "train_cls.txt"):
        (dataset / "ImageSets" / "Segmentation" / name).unlink()
    message = error_of(dataset)
    assert "train.txt" in message and "train_cls.txt" in message


# --- broken files (check_images="decode") ------------------------------------------------------------------


def test_garbage_jpeg_is_reported_when_decoding(dataset):
    bad = dataset / "JPEGImages" / "2007_000002.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    load(dataset)  # "exists" only looks for the file
    message = error_of(dataset, check_images="decode")
    assert str(bad) in message and "unreadable" in message
    with pytest.raises(DatasetError, match="2007_000002.jpg"):
        read_image(bad)


def test_truncated_jpeg_is_reported_when_decoding(dataset):
    bad = dataset / "JPEGImages" / "2007_000002.jpg"
    write_image(bad, size=(64, 64))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a valid header, then the stream stops mid-scan
    message = error_of(dataset, check_images="decode")
    assert str(bad) in message and "truncated" in message
    with pytest.raises(DatasetError, match="2007_000002.jpg"):
        read_image(bad)


def test_mask_value_outside_classes(dataset):
    path = dataset / "SegmentationClassAug" / "2007_000002.png"
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[2, 2] = 7
    save_mask(path, mask)
    load(dataset, need_masks=True)  # "exists" does not read masks
    message = error_of(dataset, need_masks=True, check_images="decode")
    assert str(path) in message and "[7]" in message and "0..3" in message
    with pytest.raises(DatasetError, match=r"2007_000002\.png.*\[7\]"):
        read_mask(path, C)


def test_mask_of_another_size(dataset):
    path = dataset / "SegmentationClassAug" / "2007_000001.png"
    save_mask(path, np.zeros((HEIGHT + 1, WIDTH), dtype=np.uint8))
    message = error_of(dataset, need_masks=True, check_images="decode")
    assert str(path) in message and "7x8" in message and "6x8" in message


def test_saliency_of_another_size_warns_and_is_resized(dataset):
    path = dataset / "saliency" / "2007_000003.png"
    write_saliency(path, size=(3, 4))
    with pytest.warns(DatasetWarning, match="1 saliency map.*2007_000003.png"):
        samples = load_split(dataset, "train", C, need_saliency=True, check_images="decode")
    assert len(samples) == 3
    saliency = read_saliency(samples[2].saliency_path, (HEIGHT, WIDTH))
    assert saliency.shape == (HEIGHT, WIDTH) and saliency.dtype == np.float32
    np.testing.assert_allclose(saliency, 1.0)


def test_unreadable_saliency_is_reported(dataset):
    path = dataset / "saliency" / "2007_000001.png"
    path.write_bytes(b"\x89PNG garbage")
    assert str(path) in error_of(dataset, check_images="decode")


# --- list files ------------------------------------------------------------------------------------------


def test_class_id_out_of_range(tmp_path):
    path = tmp_path / "train_cls.txt"
    path.write_text("a 0\nb 1 23\n")
    with pytest.raises(DatasetError) as info:
        read_class_list(path, 20)
    message = str(info.value)
    assert message.startswith(f"{path}:2:")
    assert "class id 23 outside the 20 configured classes" in message


def test_class_id_out_of_range_through_load_split(dataset):
    (dataset / "ImageSets" / "Segmentation" / "train_cls.txt").write_text("2007_000001 3\n")
    message = error_of(dataset)
    assert "train_cls.txt:1:" in message and "class id 3 outside the 3 configured classes" in message


def test_non_integer_class(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("a 0\nb dog\n")
    with pytest.raises(DatasetError, match=r"cls\.txt:2: class 'dog' is not an integer"):
        read_class_list(path, 20)


def test_duplicate_id_in_class_list(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("a 0\nb 1\n\na 2\n")
    with pytest.raises(DatasetError, match=r"cls\.txt:4: image id 'a' listed twice \(first on line 1\)"):
        read_class_list(path, 20)


def test_duplicate_id_in_split_list(dataset):
    path = dataset / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("2007_000001\n2007_000002\n2007_000001\n")
    message = error_of(dataset)
    assert message.startswith(f"{path}:3:") and "listed twice" in message


def test_empty_lists(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("# only a comment\n\n")
    with pytest.raises(DatasetError, match=r"cls\.txt: no image ids"):
        read_class_list(path, 20)
    with pytest.raises(DatasetError, match=r"cls\.txt: no image ids"):
        read_id_list(path)
    with pytest.raises(DatasetError, match=r"missing\.txt: file not found"):
        read_id_list(tmp_path / "missing.txt")


def test_image_without_classes_and_unsorted_classes(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("a\nb 5 1 5\n")
    assert read_class_list(path, 20) == {"a": (), "b": (1, 5)}


def test_class_names(dataset):
    assert class_names(dataset, C) == ["class0", "class1", "class2"]
    (dataset / "classes.txt").write_text("cat\ndog\nbird\n")
    assert class_names(dataset, C) == ["cat", "dog", "bird"]
    with pytest.raises(DatasetError, match=r"classes\.txt: 3 class names for 4 configured classes"):
        class_names(dataset, 4)


# --- images.py -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_read_image_converts_to_rgb(tmp_path, mode):
    path = tmp_path / "img.png"
    Image.new(mode, (WIDTH, HEIGHT)).save(path)
    image = read_image(path)
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8


def test_read_image_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nothing\.jpg: image not found"):
        read_image(tmp_path / "nothing.jpg")


def test_read_saliency_scales_to_unit_range(tmp_path):
    path = tmp_path / "sal.png"
    Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8)).save(path)
    np.testing.assert_allclose(read_saliency(path), [[0.0, 0.2, 1.0]], rtol=1e-6)
    assert read_saliency(path, (1, 3)).shape == (1, 3)


def test_read_mask_keeps_ignore_and_classes(dataset):
    mask = read_mask(dataset / "SegmentationClassAug" / "2007_000001.png", C)
    assert mask.dtype == np.uint8 and mask.shape == (HEIGHT, WIDTH)
    assert set(np.unique(mask).tolist()) == {0, 1, 3, 255}


@pytest.mark.parametrize("first", ["background", "_background_", "Background"])
def test_class_names_accept_a_leading_background_line(dataset, first):
    """The VOC convention (and labelme's _background_): C + 1 lines, the first naming the background."""
    (dataset / "classes.txt").write_text(f"{first}\ncat\ndog\nbird\n")
    assert class_names(dataset, C) == ["cat", "dog", "bird"]
    with pytest.raises(DatasetError, match=r"the first naming the background, so 3 class names for 2 configured"):
        class_names(dataset, 2)
    # C lines of which the first is the background: data.num_classes counted the background
    with pytest.raises(DatasetError, match=r"names the background .* data.num_classes counts the foreground"):
        class_names(dataset, 4)

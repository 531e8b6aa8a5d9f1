"""Hostile inputs (property-based, hypothesis): truncated, zero-byte, corrupted, wrong-mode, huge-dimension
and mislabelled files, label lists with unknown ids, masks with values outside 0..C and 255, malformed
COCO annotations. Each one is either rejected with a DatasetError that names the file, or handled as
documented (e.g. RGBA -> RGB, 16-bit grey -> 8 bits); none escapes as another exception and none
yields wrong labels. Example counts are small so the suite stays fast.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from dataset_makers import COCO_CATEGORIES, HEIGHT, WIDTH, make_voc, rle_of, square
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from l2g.cli import main
from l2g.data import pil_open
from l2g.data.coco_json import read_instances
from l2g.data.csv_labels import read_csv_labels
from l2g.data.errors import DatasetError
from l2g.data.images import SALIENCY_MODES, read_image, read_mask, read_saliency
from l2g.data.labels import (
    VOC_CLASSES,
    mask_labels,
    read_class_list,
    read_npy_labels,
    write_class_list,
    xml_labels,
)
from l2g.data.layout import load_split
from l2g.data.palette import IGNORE_INDEX, load_mask, save_mask
from l2g.data.prepare_coco import semantic_mask
from l2g.data.prepare_voc import prepare_voc

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMIT = 1_000_000  # pixels: keeps "huge" headers from allocating much in the tests


@contextmanager
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def random_rgb(seed: int, height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- corrupted bytes --------------------------------------------------------------------------------------


@st.composite
def damaged_files(draw):
    """(format, bytes, how they were damaged) of a small image file."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]))
    image = random_rgb(draw(st.integers(0, 1000)), draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    data = encoded(image, fmt)
    damage = draw(st.sampled_from(["truncate", "zero", "flip", "garbage"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "zero":
        data = b""
    elif damage == "flip":
        flipped = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            flipped[position] ^= draw(st.integers(1, 255))
        data = bytes(flipped)
    else:
        data = draw(st.binary(max_size=200))
    return fmt, data, damage


def read_or_error(reader, path: Path):
    """The reader's result, or its DatasetError (checked to name the file); anything else fails the test."""
    try:
        return reader(path)
    except DatasetError as error:
        assert str(path) in str(error)
        return error


@FEW
@given(damaged_files())
def test_damaged_images_masks_and_saliency_never_crash(damaged):
    fmt, data, damage = damaged
    with scratch() as folder, mock.patch.object(pil_open, "MAX_PIXELS", SMALL_LIMIT):
        path = folder / f"file.{fmt.lower()}"
        path.write_bytes(data)
        image = read_or_error(read_image, path)
        if not isinstance(image, DatasetError):
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        if damage == "zero":
            assert isinstance(image, DatasetError)
        mask = read_or_error(lambda p: read_mask(p, 20), path)
        assert isinstance(mask, DatasetError) or (mask.ndim == 2 and mask.dtype == np.uint8)
        saliency = read_or_error(read_saliency, path)
        assert isinstance(saliency, DatasetError) or (saliency.min() >= 0 and saliency.max() <= 1)


@FEWER
@given(damaged_files())
def test_damaged_image_in_a_split_is_named_by_load_split(damaged):
    fmt, data, damage = damaged
    assume(damage in ("zero", "garbage"))  # always undecodable
    with scratch() as root:
        (root / "JPEGImages").mkdir()
        for index in range(3):
            random_rgb(index, 8, 8).save(root / "JPEGImages" / f"im{index}.png")
        bad = root / "JPEGImages" / "im1.png"
        bad.write_bytes(data)
        write_class_list(root / "ImageSets" / "Segmentation" / "train_cls.txt", {f"im{i}": (0,) for i in range(3)})
        assert len(load_split(root, "train", 2)) == 3  # "exists" does not open files
        with pytest.raises(DatasetError, match=r"1 problem\(s\)") as info:
            load_split(root, "train", 2, check_images="decode")
        assert str(bad) in str(info.value)


# --- modes ------------------------------------------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMAT_OF = {"CMYK": "TIFF", "I": "TIFF", "F": "TIFF"}


def image_in_mode(mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (5, 7)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size, dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 100000, size, dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.random(size, dtype=np.float32))
    channels = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    array = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
    if mode == "1":
        return Image.fromarray(array[..., 0] > 127)
    if mode in ("L", "P"):
        image = Image.fromarray(array[..., 0], "L")
        if mode == "P":
            image = image.convert("P")  # a palette image whose indices are not grey levels
        return image
    return Image.fromarray(array, mode)


@FEW
@given(st.sampled_from(MODES), st.integers(0, 100))
def test_every_mode_is_read_as_documented(mode, seed):
    image = image_in_mode(mode, seed)
    with scratch() as folder:
        path = folder / f"x.{FORMAT_OF.get(mode, 'PNG').lower()}"
        image.save(path)
        with Image.open(path) as stored:
            stored_mode = stored.mode
            stored_copy = stored.copy()
        # read_image: 8-bit modes as PIL converts them (alpha dropped), 16-bit scaled, I/F refused
        if stored_mode in ("I", "F"):
            with pytest.raises(DatasetError, match="has no known value range"):
                read_image(path)
        else:
            rgb = read_image(path)
            if stored_mode.startswith("I;16"):
                wide = np.asarray(stored_copy, dtype=np.float64)
                np.testing.assert_array_equal(rgb[..., 0], np.rint(wide / 257).astype(np.uint8))
            elif stored_mode == "RGBA":
                np.testing.assert_array_equal(rgb, np.asarray(stored_copy)[..., :3])
            else:
                np.testing.assert_array_equal(rgb, np.asarray(stored_copy.convert("RGB")))
        # masks: only palette and 8-bit grey, read as indices
        if stored_mode in ("P", "L"):
            np.testing.assert_array_equal(load_mask(path), np.asarray(stored_copy))
        else:
            with pytest.raises(DatasetError, match=f"must be a palette or 8-bit PNG, got mode {stored_mode}"):
                load_mask(path)
        # saliency: 8-bit modes only
        if stored_mode in SALIENCY_MODES:
            saliency = read_saliency(path)
            np.testing.assert_allclose(saliency * 255, np.asarray(stored_copy.convert("L"), np.float32), atol=1e-3)
        else:
            with pytest.raises(DatasetError, match="must be an 8-bit image"):
                read_saliency(path)


@pytest.mark.parametrize(
    ("which", "mode", "refused"),
    [("image", "I;16", False), ("image", "RGBA", False), ("image", "F", True), ("image", "I", True),
     ("saliency", "RGB", False), ("saliency", "I;16", True), ("saliency", "F", True)],
)
def test_unusable_modes_are_caught_up_front_by_load_split(tmp_path, which, mode, refused):
    """A file whose mode the readers refuse fails the up-front check, not a data-loader worker later."""
    root = tmp_path / "root"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "saliency").mkdir()
    random_rgb(0, 5, 7).save(root / "JPEGImages" / "a.png")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "saliency" / "a.png")
    fmt = FORMAT_OF.get(mode, "PNG")
    if which == "image":
        (root / "JPEGImages" / "a.png").unlink()
        target = root / "JPEGImages" / f"a.{'tif' if fmt == 'TIFF' else 'png'}"
    else:
        target = root / "saliency" / "a.png"  # saliency maps are found by name; the content decides the mode
    image_in_mode(mode, 0).save(target, format=fmt)
    write_class_list(root / "ImageSets" / "Segmentation" / "train_cls.txt", {"a": (0,)})
    if refused:
        with pytest.raises(DatasetError) as info:
            load_split(root, "train", 1, check_images="decode")
        assert str(target) in str(info.value) and "1 problem(s)" in str(info.value)
    else:
        assert len(load_split(root, "train", 1, check_images="decode")) == 1


# --- huge dimensions --------------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A real 4x4 PNG whose header (with a valid CRC) claims another size."""
    data = bytearray(encoded(random_rgb(0, 4, 4), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encoded(random_rgb(0, 8, 8), "JPEG"))
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@FEW
@given(st.sampled_from(["png", "jpg"]), st.integers(1, 2**16 - 1), st.integers(1, 2**16 - 1))
def test_headers_claiming_huge_sizes_are_refused_before_decoding(fmt, width, height):
    data = png_claiming(width, height) if fmt == "png" else jpeg_claiming(width, height)
    with scratch() as folder, mock.patch.object(pil_open, "MAX_PIXELS", SMALL_LIMIT):
        path = folder / f"bomb.{fmt}"
        path.write_bytes(data)
        for reader in (read_image, read_saliency, lambda p: read_mask(p, 20)):
            result = read_or_error(reader, path)
            if width * height > SMALL_LIMIT:  # refused from the header alone, by our limit or PIL's own
                assert isinstance(result, DatasetError)
                assert "refused" in str(result)
                assert f"{width}x{height}" in str(result) or f"({width * height} pixels)" in str(result)
            elif fmt == "png" and width * height > 64:  # more pixels than the 4x4 image's data hold
                assert isinstance(result, DatasetError)
            # (libjpeg fills a few missing rows of a JPEG without an error: such a header is not caught)


def test_the_real_limit_refuses_a_100k_square_png(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    with pytest.raises(DatasetError, match="refused"):
        read_image(path)
    assert path.stat().st_size < 200  # a 120-byte file claiming 10^10 pixels


# --- masks and label lists --------------------------------------------------------------------------------


@FEW
@given(st.integers(1, 30), st.lists(st.sampled_from([0, 1, 2, 5, 20, 21, 30, 100, 254, 255]), min_size=1, max_size=40))
def test_mask_values_outside_the_classes_are_rejected_exactly(num_classes, values):
    mask = np.array(values, dtype=np.uint8).reshape(1, -1)
    bad = sorted({v for v in values if v > num_classes and v != IGNORE_INDEX})
    with scratch() as folder:
        path = folder / "m.png"
        save_mask(path, mask)
        if bad:
            with pytest.raises(DatasetError, match=rf"mask values {bad}".replace("[", r"\[").replace("]", r"\]")):
                read_mask(path, num_classes)
            with pytest.raises(DatasetError):
                mask_labels(path, num_classes)
        else:
            np.testing.assert_array_equal(read_mask(path, num_classes), mask)
            assert mask_labels(path, num_classes) == tuple(sorted({v - 1 for v in values if 1 <= v <= num_classes}))


WORDS = st.one_of(st.integers(-3, 25).map(str), st.sampled_from(["dog", "1.5", "0x1", "", "٣", "1_0", "+3"]))


@FEW
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "2007_000032"]), st.lists(WORDS, max_size=4)),
                max_size=6), st.integers(1, 20))
def test_class_lists_are_parsed_exactly_or_rejected_at_the_right_line(rows, num_classes):
    text = "".join(" ".join([image_id, *words]) + "\n" for image_id, words in rows)
    expected, failure = {}, None
    for number, (image_id, words) in enumerate(rows, start=1):
        words = [w for w in words if w]
        if image_id in expected:
            failure = number
            break
        if not all(re.fullmatch(r"-?[0-9]+", w) for w in words):  # plain ASCII integers only
            failure = number
            break
        classes = {int(w) for w in words}
        if any(not 0 <= c < num_classes for c in classes):
            failure = number
            break
        expected[image_id] = tuple(sorted(classes))
    with scratch() as folder:
        path = folder / "train_cls.txt"
        path.write_text(text, encoding="utf-8")
        if failure is None and expected:
            assert read_class_list(path, num_classes) == expected
        else:
            with pytest.raises(DatasetError) as info:
                read_class_list(path, num_classes)
            where = f"{path}:{failure}:" if failure is not None else f"{path}: no image ids"
            assert str(info.value).startswith(where)


VOC_IDS = st.builds(lambda y, n: f"{y}_{n:06d}", st.integers(2007, 2012), st.integers(0, 999_999))
LABEL_SETS = st.lists(st.integers(0, 19), max_size=4).map(lambda c: tuple(sorted(set(c))))


@FEW
@pytest.mark.filterwarnings("ignore::l2g.data.errors.DatasetWarning")  # rows without labels: warned, accepted
@given(st.dictionaries(VOC_IDS, LABEL_SETS, min_size=1, max_size=6))
def test_every_label_format_round_trips(labels):
    with scratch() as folder:
        write_class_list(folder / "cls.txt", labels)
        assert read_class_list(folder / "cls.txt", 20) == labels
        vectors = {i: np.isin(np.arange(20), c).astype(np.float32) for i, c in labels.items()}
        np.save(folder / "irn.npy", {np.int32(int(i.replace("_", ""))): v for i, v in vectors.items()})
        np.save(folder / "seam.npy", vectors)
        assert read_npy_labels(folder / "irn.npy", 20).labels == labels
        assert read_npy_labels(folder / "seam.npy", 20).labels == labels
        rows = "".join(f"{i}.jpg,{';'.join(VOC_CLASSES[c] for c in cs)}\n" for i, cs in labels.items())
        (folder / "l.csv").write_text("image,labels\n" + rows)
        assert read_csv_labels(folder / "l.csv", 20, list(VOC_CLASSES)).labels == labels
        for image_id, classes in labels.items():
            objects = "".join(f"<object><name>{VOC_CLASSES[c]}</name></object>" for c in classes)
            (folder / f"{image_id}.xml").write_text(f"<annotation>{objects}</annotation>")
            assert xml_labels(folder / f"{image_id}.xml", list(VOC_CLASSES)) == classes


@FEWER
@given(st.integers(0, 10_000), st.data())
def test_truncated_or_corrupted_npy_is_named(seed, data):
    with scratch() as folder:
        path = folder / "cls_labels.npy"
        np.save(path, {"2007_000032": np.eye(20, dtype=np.float32)[seed % 20]})
        raw = path.read_bytes()
        cut = data.draw(st.integers(0, len(raw) - 1))
        path.write_bytes(raw[:cut])
        with pytest.raises(DatasetError) as info:
            read_npy_labels(path, 20)
        assert str(path) in str(info.value)


# --- prepare voc with one hostile file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_voc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_voc(tmp_path_factory.mktemp("hostile_voc"), train=2, extra_aug=1, val=2, saliency=False)


HOSTILE_VOC = ["image_zero", "image_garbage", "image_rgba", "image_png_named_jpg", "mask_value", "mask_rgb",
               "mask_truncated", "xml_unknown_name", "xml_broken", "cls_unknown_id", "cls_duplicate"]


@FEWER
@given(kind=st.sampled_from(HOSTILE_VOC), index=st.integers(0, 4))
def test_prepare_voc_rejects_or_handles_each_hostile_file(pristine_voc, kind, index):
    with scratch() as base:
        shutil.copytree(pristine_voc["voc"].parents[1], base / "data")
        voc = base / "data" / "VOCdevkit" / "VOC2012"
        image_id = sorted(pristine_voc["labels"])[index]
        image = voc / "JPEGImages" / f"{image_id}.jpg"
        mask = voc / "SegmentationClassAug" / f"{image_id}.png"
        xml = voc / "Annotations" / f"{image_id}.xml"
        labels, given, named = "auto", None, None
        if kind == "image_zero":
            image.write_bytes(b"")
            named = image
        elif kind == "image_garbage":
            image.write_bytes(b"GIF89a" + bytes(range(50)))
            named = image
        elif kind == "image_rgba":
            Image.fromarray(np.zeros((HEIGHT, WIDTH, 4), np.uint8), "RGBA").save(image, format="PNG")
        elif kind == "image_png_named_jpg":
            random_rgb(0, HEIGHT, WIDTH).save(image, format="PNG")  # content is sniffed, the name ignored
        elif kind == "mask_value":
            save_mask(mask, np.full((HEIGHT, WIDTH), 21, np.uint8))
            labels, named = "masks", mask
        elif kind == "mask_rgb":
            Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(mask)
            labels, named = "masks", mask
        elif kind == "mask_truncated":
            mask.write_bytes(mask.read_bytes()[:40])
            labels, named = "masks", mask
        elif kind == "xml_unknown_name":
            xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
            labels, named = "xml", xml
        elif kind == "xml_broken":
            xml.write_text("<annotation><object><name>dog</name>")
            labels, named = "xml", xml
        else:
            given = base / "train_cls.txt"
            lines = [f"{i} {' '.join(map(str, c))}" for i, c in sorted(pristine_voc["labels"].items())]
            lines[index] = f"{image_id} 20" if kind == "cls_unknown_id" else lines[index - 1 if index else 1]
            given.write_text("\n".join(lines) + "\n")
            labels, named = "cls_txt", given
        run = lambda: prepare_voc(base / "data", labels=labels, cls_labels=given,  # noqa: E731
                                  count_check=False, check_images="decode", progress=False, log=lambda _: None)
        if named is None:
            _, summaries = run()
            for split in ("train_aug", "train", "val"):
                written = read_class_list(voc / "ImageSets" / "Segmentation" / f"{split}_cls.txt", 20)
                assert written == {i: pristine_voc["labels"][i] for i in pristine_voc[split]}
        else:
            with pytest.raises(DatasetError) as info:
                run()
            assert str(named) in str(info.value) or named.name in str(info.value)


# --- COCO annotations -------------------------------------------------------------------------------------

HOSTILE_VALUES = [None, -1, 0, 2**40, 1.5, float("nan"), float("inf"), "x", "", [], {}, [[]], [[1, 2, 3]],
                  [[1, 2, 3, 4]], [["a", 1, 2, 3, 4, 5]], {"size": [HEIGHT, WIDTH], "counts": "\x00\x01"},
                  {"size": [HEIGHT, WIDTH], "counts": [-5, 5]}, {"size": [1, 1]}, True, [[1e300] * 6]]
FIELDS = {"images": ["id", "file_name", "height", "width"],
          "annotations": ["id", "image_id", "category_id", "iscrowd", "segmentation"],
          "categories": ["id", "name"]}


def valid_coco() -> dict:
    car = np.zeros((HEIGHT, WIDTH), bool)
    car[3:9, 4:20] = True
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": HEIGHT, "width": WIDTH},
                   {"id": 2, "file_name": "b.jpg", "height": HEIGHT, "width": WIDTH}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [square(2, 2, 20, 20)]},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 1, "segmentation": rle_of(car, False)},
            {"id": 3, "image_id": 2, "category_id": 90, "iscrowd": 0, "segmentation": rle_of(car, True)},
        ],
        "categories": [dict(c) for c in COCO_CATEGORIES],
    }


@FEW
@given(section=st.sampled_from(sorted(FIELDS)), item=st.integers(0, 2), data=st.data(),
       value=st.sampled_from(HOSTILE_VALUES), delete=st.booleans())
def test_malformed_coco_annotations_are_named_or_drawn_safely(section, item, data, value, delete):
    coco = valid_coco()
    entry = coco[section][item % len(coco[section])]
    key = data.draw(st.sampled_from(FIELDS[section]))
    if delete:
        entry.pop(key)
    else:
        entry[key] = value
    with scratch() as folder:
        path = folder / "instances_x.json"
        path.write_text(json.dumps(coco))
        try:
            split = read_instances(path)
        except DatasetError as error:
            assert str(path) in str(error)
            return
        for image in split.images:
            mask = semantic_mask(image, "ignore")
            assert mask.shape == (image.height, image.width)
            assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


@FEW
@given(st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=24), st.integers(1, 12), st.integers(1, 12))
def test_random_compressed_rle_never_reaches_pycocotools_unchecked(counts, height, width):
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": height, "width": width}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation":
                             {"size": [height, width], "counts": counts}}],
            "categories": [{"id": 1, "name": "thing"}]}
    with scratch() as folder:
        path = folder / "instances_x.json"
        path.write_text(json.dumps(coco))
        try:
            split = read_instances(path)
        except DatasetError as error:
            assert "annotation 1" in str(error) and str(path) in str(error)
            return
        mask = semantic_mask(split.images[0])
        assert mask.shape == (height, width) and set(np.unique(mask).tolist()) <= {0, 1}


def test_prepare_coco_cli_names_a_broken_annotation(tmp_path, capsys):
    from dataset_makers import make_coco

    truth = make_coco(tmp_path / "coco", "train2014")
    data = json.loads(truth["json"].read_text())
    data["annotations"][0]["segmentation"] = [[0, 0, 5]]
    truth["json"].write_text(json.dumps(data))
    code = main(["prepare", "coco", "--root", str(tmp_path / "coco"), "--splits", "train2014", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "instances_train2014.json: annotation 11: a polygon has an odd number of coordinates (3)" in err

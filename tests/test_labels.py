"""Image-level label formats (cls_txt, csv, IRN/SEAM npy, XML, masks), the label-source choice of
load_split, and the plain custom dataset (data.format=custom)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from dataset_makers import voc_mask, voc_xml, write_rgb
from PIL import Image

from l2g.config import ConfigError, load_config
from l2g.data.csv_labels import read_csv_labels
from l2g.data.errors import DatasetError, DatasetWarning
from l2g.data.label_sources import label_reader
from l2g.data.labels import (
    VOC_CLASSES,
    mask_labels,
    npy_key_to_id,
    read_npy_labels,
    write_class_list,
    xml_labels,
)
from l2g.data.layout import load_split
from l2g.data.palette import save_mask
from l2g.data.registry import LABEL_SOURCES
from l2g.data.splits import split_cls_list, split_samples

LABELS = {"2007_000032": (0, 14), "2008_000002": (19,), "2011_003276": ()}


# --- npy ------------------------------------------------------------------------------------------------


def vectors(labels: dict, num_classes: int = 20) -> dict:
    return {i: np.isin(np.arange(num_classes), c).astype(np.float32) for i, c in labels.items()}


def test_irn_int_keys_and_seam_string_keys(tmp_path):
    irn, seam = tmp_path / "irn.npy", tmp_path / "seam.npy"
    np.save(irn, {np.int32(int(i.replace("_", ""))): v for i, v in vectors(LABELS).items()})
    np.save(seam, vectors(LABELS))
    assert read_npy_labels(irn, 20).labels == LABELS
    assert read_npy_labels(seam, 20).labels == LABELS
    assert npy_key_to_id(2007000032) == "2007_000032" and npy_key_to_id(9) == "9"
    assert npy_key_to_id(b"abc") == "abc"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"a": np.zeros(19)}, r"key 'a': label vector of shape \(19,\), expected \(20,\)"),
        ({"a": np.full(20, 0.5)}, r"key 'a': label values must be 0 or 1, got \[0.5\]"),
        ({"a": np.full(20, np.nan)}, r"label values must be 0 or 1, got \[nan\]"),
        ({2007000032: np.zeros(20), "2007_000032": np.zeros(20)}, "present twice"),
        ({}, "the dict is empty"),
        ({(1, 2): np.zeros(20)}, "neither an int nor a string"),
    ],
)
def test_bad_npy_tables_are_named(tmp_path, table, message):
    path = tmp_path / "cls_labels.npy"
    np.save(path, table)
    with pytest.raises(DatasetError, match=message) as info:
        read_npy_labels(path, 20)
    assert str(path) in str(info.value)


def test_npy_that_is_not_a_dict(tmp_path):
    path = tmp_path / "cls_labels.npy"
    np.save(path, np.zeros((3, 20)))
    with pytest.raises(DatasetError, match=r"expected a dict .* got array of shape \(3, 20\)"):
        read_npy_labels(path, 20)


class _Exploit:
    """An object whose unpickling would run a command (what a hostile .npy can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_npy_with_a_hostile_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "cls_labels.npy"
    np.save(path, np.array({"2007_000032": _Exploit(marker)}, dtype=object), allow_pickle=True)
    assert pickle.loads(pickle.dumps(_Exploit(tmp_path / "check"))) is None  # the payload really works...
    assert (tmp_path / "check").exists()
    with pytest.raises(DatasetError, match="refusing to load pathlib"):
        read_npy_labels(path, 20)
    assert not marker.exists()  # ...but was not run by the reader


# --- csv ------------------------------------------------------------------------------------------------


def test_csv_with_names_header_quotes_and_bom(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('\ufeffimage,labels\ncat.jpg,cat\n"pair.png", dog ; cat ;\n# a comment\nbare,bird\n',
                    encoding="utf-8")
    table = read_csv_labels(path, 3, ["cat", "dog", "bird"])
    assert table.labels == {"cat": (0,), "pair": (0, 1), "bare": (2,)}
    assert table.files == {"cat": "cat.jpg", "pair": "pair.png"}  # "bare" is an id


def test_csv_lists_every_bad_row_at_once_and_warns_about_empty_labels(tmp_path):
    """Two unknown names and a bad row: one error naming all three, not one per rerun. Rows without labels
    are accepted (an image that shows none of the classes) but warned about, by name."""
    path = tmp_path / "train.csv"
    path.write_text("image,labels\na.jpg,cat;dgo\nb.jpg,brid\nc.jpg,cat,dog\nok.jpg,dog\n")
    with pytest.raises(DatasetError) as caught:
        read_csv_labels(path, 3, ["cat", "dog", "bird"])
    message = str(caught.value)
    assert message.startswith(f"{path}: 3 problem(s):")
    assert f"{path}:2: unknown class name 'dgo' (did you mean 'dog'?)" in message
    assert f"{path}:3: unknown class name 'brid' (did you mean 'bird'?)" in message
    assert f"{path}:4: expected 2 columns" in message
    path.write_text("image,labels\nempty.jpg,\nbare\nok.jpg,dog\n")
    with pytest.warns(DatasetWarning, match=rf"2 image\(s\) without labels.*{path.name}:2: empty\.jpg, .*:3: bare"):
        assert read_csv_labels(path, 3, ["cat", "dog", "bird"]).labels == {"empty": (), "bare": (), "ok": (1,)}


def test_csv_with_indices_when_there_are_no_names(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a.jpg,2;0\n")
    assert read_csv_labels(path, 3).labels == {"a": (0, 2)}
    for odd in ("1_0", "+1", "\u0663"):  # int() accepts these; a class list must not
        path.write_text(f"a.jpg,{odd}\n", encoding="utf-8")
        with pytest.raises(DatasetError, match="is not an integer"):
            read_csv_labels(path, 20)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg,dgo\n", r"train\.csv:1: unknown class name 'dgo' \(did you mean 'dog'\?\)"),
        ("a.jpg,cat\na.png,dog\n", r"train\.csv:2: image id 'a' listed twice \(first on line 1\)"),
        ("a.jpg,cat,dog\n", r"train\.csv:1: expected 2 columns"),
        ("sub/a.jpg,cat\n", "must be a plain file name"),
        ("image,labels\n", "no images listed"),
    ],
)
def test_bad_csv_rows_are_named(tmp_path, text, message):
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_csv_labels(path, 3, ["cat", "dog", "bird"])


# --- xml and masks ----------------------------------------------------------------------------------------


def test_xml_labels_include_difficult_objects_and_ignore_parts(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml((14, 0)))
    assert xml_labels(path, list(VOC_CLASSES)) == (0, 14)
    path.write_text("<annotation><object><name>persn</name></object></annotation>")
    with pytest.raises(DatasetError, match=r"a\.xml: object 1: unknown class name 'persn' \(did you mean 'person'"):
        xml_labels(path, list(VOC_CLASSES))
    path.write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"a\.xml: unreadable annotation XML"):
        xml_labels(path, list(VOC_CLASSES))


def test_mask_labels_are_the_classes_present(tmp_path):
    path = tmp_path / "m.png"
    save_mask(path, voc_mask((3, 7)))
    assert mask_labels(path, 20) == (3, 7)
    save_mask(path, np.array([[0, 255], [21, 200]], np.uint8))
    with pytest.raises(DatasetError, match=r"m\.png: mask values \[21, 200\] outside 0..20"):
        mask_labels(path, 20)


# --- label sources through load_split ---------------------------------------------------------------------


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A VOC-like root with images, masks, XML and a split list, but no class list."""
    root = tmp_path / "voc"
    for seed, (image_id, classes) in enumerate(LABELS.items()):
        write_rgb(root / "JPEGImages" / f"{image_id}.jpg", seed)
        save_mask(root / "SegmentationClassAug" / f"{image_id}.png", voc_mask(classes))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(classes))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(LABELS) + "\n")
    return root


def labels_of(samples) -> dict:
    return {s.image_id: s.labels for s in samples}


def test_auto_prefers_class_list_then_npy_then_xml_then_masks(voc):
    assert labels_of(load_split(voc, "train", 20)) == LABELS  # XML (the masks agree)
    (voc / "Annotations" / "2008_000002.xml").write_text(voc_xml((5,)))  # now XML and masks disagree
    assert load_split(voc, "train", 20)[1].labels == (5,)
    assert load_split(voc, "train", 20, labels="masks")[1].labels == (19,)
    np.save(voc / "cls_labels.npy", vectors({**LABELS, "2008_000002": (7,)}))
    assert load_split(voc, "train", 20)[1].labels == (7,)
    write_class_list(voc / "ImageSets" / "Segmentation" / "train_cls.txt", {**LABELS, "2008_000002": (8,)})
    assert load_split(voc, "train", 20)[1].labels == (8,)
    assert load_split(voc, "train", 20, labels="xml")[1].labels == (5,)


def test_explicit_label_files_by_suffix(voc, tmp_path):
    npy = tmp_path / "labels.npy"
    np.save(npy, {np.int64(int(i.replace("_", ""))): v for i, v in vectors(LABELS).items()})
    assert labels_of(load_split(voc, "train", 20, cls_list=npy)) == LABELS
    csv = tmp_path / "labels.csv"
    csv.write_text("image,labels\n2007_000032,aeroplane;person\n2008_000002,tvmonitor\n2011_003276,\n")
    (voc / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    assert labels_of(load_split(voc, "train", 20, cls_list=csv)) == LABELS


def test_label_source_problems(voc, tmp_path):
    (voc / "Annotations" / "2008_000002.xml").unlink()
    with pytest.raises(DatasetError, match=r"2008_000002\.xml: annotation file not found"):
        load_split(voc, "train", 20, labels="xml")
    np.save(tmp_path / "part.npy", vectors({"2007_000032": (1,)}))
    with pytest.raises(DatasetError, match=r"part\.npy: no labels for image id '2008_000002'"):
        load_split(voc, "train", 20, cls_list=tmp_path / "part.npy")
    with pytest.raises(DatasetError, match="Annotations XML need the class names"):
        load_split(voc, "train", 19, labels="xml")
    with pytest.raises(ValueError, match="labels must be one of"):
        load_split(voc, "train", 20, labels="json")


def test_no_label_source_at_all(voc):
    import shutil

    shutil.rmtree(voc / "Annotations")
    shutil.rmtree(voc / "SegmentationClassAug")
    with pytest.raises(DatasetError, match=r"no image-level labels for split 'train' \(looked for .*train_cls\.txt"):
        load_split(voc, "train", 20)


def test_image_dir_template_and_root_hint(tmp_path, voc):
    (voc / "JPEGImages").rename(voc / "train")
    assert len(load_split(voc, "train", 20, image_dir="{split}")) == 3
    with pytest.raises(DatasetError, match=r"image folder not found \(did you mean data\.root=.*VOC2012\?\)"):
        dev = tmp_path / "VOCdevkit"
        (dev / "VOC2012" / "JPEGImages").mkdir(parents=True)
        load_split(dev, "train", 20)


def test_every_label_source_row_resolves_to_a_reader():
    """The torch-free table (l2g.data.registry) names each reader; l2g.data.label_sources resolves it."""
    for name, source in LABEL_SOURCES.items():
        reader = label_reader(name)
        assert callable(reader) and reader.__name__ == source.reader


# --- the custom dataset ---------------------------------------------------------------------------------


@pytest.fixture
def custom(tmp_path: Path) -> Path:
    """images/ with mixed formats, train.csv with class names, classes.txt, masks/ for one split only."""
    root = tmp_path / "custom"
    write_rgb(root / "images" / "cat01.jpg", 0)
    write_rgb(root / "images" / "both.png", 1)
    write_rgb(root / "images" / "both.jpg", 2)  # the CSV names the .png: that one must be used
    Image.fromarray(np.zeros((32, 40, 4), np.uint8), "RGBA").save(root / "images" / "dog7.webp")
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "train.csv").write_text("image,labels\ncat01.jpg,cat\nboth.png,cat;dog\ndog7.webp,dog\n")
    (root / "val_cls.txt").write_text("cat01 0\ndog7 1\n")
    save_mask(root / "masks" / "cat01.png", voc_mask((0,)))
    save_mask(root / "masks" / "dog7.png", voc_mask((1,)))
    return root


def custom_config(root: Path, *extra: str):
    return load_config(None, [f"data.root={root}", "data.format=custom", "data.num_classes=2", *extra])


def test_custom_dataset_trains_without_masks_and_evaluates_with_them(custom):
    config = custom_config(custom)
    train = split_samples(config, "train", need_saliency=False)
    assert labels_of(train) == {"cat01": (0,), "both": (0, 1), "dog7": (1,)}
    assert train[1].image_path.name == "both.png" and train[2].image_path.suffix == ".webp"
    assert all(s.mask_path is None for s in train[1:2])
    val = split_samples(config, "val", need_masks=True)
    assert labels_of(val) == {"cat01": (0,), "dog7": (1,)}
    assert all(s.mask_path is not None for s in val)


def test_custom_dataset_errors_name_the_file(custom):
    (custom / "train.csv").write_text("cat01.jpg,cat\nmissing.jpg,dog\n")
    with pytest.raises(DatasetError, match=r"images/missing\.jpg: image listed in .*train\.csv not found"):
        split_samples(custom_config(custom), "train")
    (custom / "train.csv").write_text("cat01.jpg,horse\n")
    with pytest.raises(DatasetError, match=r"train\.csv:1: unknown class name 'horse'.*classes\.txt"):
        split_samples(custom_config(custom), "train")
    with pytest.raises(DatasetError, match=r"names\.txt: classes file not found"):
        split_samples(custom_config(custom, "data.classes_file=names.txt"), "train")


def test_data_config_format_defaults_and_cls_list_scope(custom):
    assert load_config(None).data.folders() == ("JPEGImages", "SegmentationClassAug")
    assert custom_config(custom).data.folders() == ("images", "masks")
    coco = load_config(None, ["data.format=coco"]).data.folders()
    assert coco == ("{split}", "SegmentationClass")
    assert custom_config(custom, "data.image_dir=pics", "data.mask_dir=gt").data.folders() == ("pics", "gt")
    with pytest.raises(ConfigError, match="data.format"):
        load_config(None, ["data.format=kitti"])
    with pytest.raises(ConfigError, match="data.labels"):
        load_config(None, ["data.labels=json"])
    plain = custom_config(custom, "data.cls_list=lists/train.csv")
    assert split_cls_list(plain, "train") == "lists/train.csv" and split_cls_list(plain, "val") is None
    templated = custom_config(custom, "data.cls_list={split}.csv")
    assert split_cls_list(templated, "val") == "{split}.csv"
    assert split_cls_list(custom_config(custom, "data.cls_list=a.npy"), "val") == "a.npy"


def test_split_placeholder_in_yaml_and_overrides(tmp_path):
    assert load_config(None, ["data.image_dir={split}"]).data.image_dir == "{split}"
    quoted, unquoted = tmp_path / "quoted.yaml", tmp_path / "unquoted.yaml"
    quoted.write_text('data:\n  image_dir: "{split}"\n')
    assert load_config(quoted).data.image_dir == "{split}"
    unquoted.write_text("data:\n  image_dir: {split}\n")  # YAML reads a mapping {split: null}
    with pytest.raises(ConfigError, match=r'quote it: "\{split\}"'):
        load_config(unquoted)
    with pytest.raises(ConfigError, match="expected a string, got 2024"):
        load_config(None, ["data.root=2024"])

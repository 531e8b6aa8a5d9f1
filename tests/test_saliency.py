"""``l2g saliency``: the barrier distance on hand-computed cases, the methods' output contract, and the
command end to end (names, resumability, unreadable images, a split list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l2g.cli import main
from l2g.data.layout import DatasetError
from l2g.data.saliency import METHODS, barrier_distance, compute_saliency, list_images


def test_barrier_distance_hand_computed():
    values = np.zeros((5, 5, 1), np.float32)
    values[2, 2] = 10.0  # a bump in the middle of a flat image
    distance = barrier_distance(values)
    expected = np.zeros((5, 5), np.float32)
    expected[2, 2] = 10.0  # any path from the bump to the border goes from 10 down to 0
    np.testing.assert_array_equal(distance, expected)

    ring = np.zeros((7, 7, 1), np.float32)
    ring[1:6, 1:6] = 5.0  # a wall of height 5 around a basin of 0
    ring[2:5, 2:5] = 0.0
    distance = barrier_distance(ring)
    assert distance[3, 3] == 5.0  # the basin is cut off from the border by the wall: barrier 5 - 0
    assert distance[1, 1] == 5.0 and distance[0, 0] == 0.0


def test_barrier_distance_sums_channels():
    values = np.zeros((3, 3, 2), np.float32)
    values[1, 1] = (2.0, 3.0)
    assert barrier_distance(values)[1, 1] == 5.0


@pytest.mark.parametrize("method", METHODS)
def test_methods_find_a_distinct_square(method):
    rng = np.random.default_rng(0)
    image = np.full((48, 64, 3), 90, np.uint8) + rng.integers(0, 6, (48, 64, 3), dtype=np.uint8)
    image[14:34, 20:44] = (220, 40, 40)  # a red square on grey
    saliency = compute_saliency(image, method)
    assert saliency.shape == (48, 64) and saliency.dtype == np.float32
    assert saliency.min() >= 0.0 and saliency.max() <= 1.0
    inside, outside = saliency[16:32, 22:42].mean(), saliency[:8].mean()
    assert inside > outside + 0.2, (inside, outside)


def test_mbd_segments_the_square_at_one_half():
    image = np.full((48, 64, 3), 90, np.uint8)
    image[14:34, 20:44] = (220, 40, 40)
    truth = np.zeros((48, 64), bool)
    truth[14:34, 20:44] = True
    predicted = compute_saliency(image, "mbd") >= 0.5
    assert (predicted & truth).sum() / (predicted | truth).sum() > 0.8


def test_unknown_method():
    with pytest.raises(ValueError, match="saliency method must be one of"):
        compute_saliency(np.zeros((4, 4, 3), np.uint8), "poolnet")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, size in (("a.jpg", (32, 40)), ("b.png", (36, 30)), ("c.jpeg", (40, 44))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_command_end_to_end(images, tmp_path, capsys):
    out = tmp_path / "sal"
    assert main(["saliency", "--images", str(images), "--out", str(out), "--quiet"]) == 0
    assert "3 map(s) written, 0 already there" in capsys.readouterr().out
    for name, size in (("a", (32, 40)), ("b", (36, 30)), ("c", (40, 44))):
        with Image.open(out / f"{name}.png") as saliency:
            assert saliency.mode == "L" and saliency.size == (size[1], size[0])
    stamp = (out / "a.png").stat().st_mtime_ns
    (out / "b.png").unlink()
    assert main(["saliency", "--images", str(images), "--out", str(out), "--quiet"]) == 0
    assert "1 map(s) written, 2 already there" in capsys.readouterr().out
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert main(["saliency", "--images", str(images), "--out", str(out), "--overwrite", "--method",
                 "spectral_residual", "--quiet"]) == 0
    assert "3 map(s) written" in capsys.readouterr().out


def test_command_with_a_list_and_an_unreadable_image(images, tmp_path, capsys):
    (images / "d.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    id_list = tmp_path / "ids.txt"
    id_list.write_text("a\nd\n")
    out = tmp_path / "sal"
    assert main(["saliency", "--images", str(images), "--out", str(out), "--list", str(id_list), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) could not be read (the others were written)" in err and "d.jpg" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_listing_problems(images, tmp_path):
    (images / "a.png").write_bytes((images / "b.png").read_bytes())
    with pytest.raises(DatasetError, match=r"a\.png: same name as .*a\.jpg"):
        list_images(images)
    with pytest.raises(DatasetError, match="1 listed image"):
        list_images(images, ["b", "zz"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        list_images(empty)

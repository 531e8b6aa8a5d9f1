"""Attention-map files: the pickle-free .npz, the release's dict .npy read without unpickling code, the one
reader every stage uses, export/import, and one fsync per file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from l2g import atomic
from l2g.cli import main
from l2g.data.cam_files import FLOAT16_MAX_ERROR, class_maps, find_cams_file, load_cams, read_cams_file, save_cams


def maps_of(rng, shape=(7, 9), classes=(4, 1, 11)):
    return {c: rng.uniform(0, 1, shape).astype(np.float32) for c in classes}


def test_npz_holds_sorted_classes_and_float16_maps_within_the_stated_precision(tmp_path):
    cams = maps_of(np.random.default_rng(0))
    cams[4][0, 0], cams[1][0, 0] = 1.0, 0.0
    save_cams(tmp_path / "a.npz", cams)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:  # a plain archive, no pickle inside
        assert archive["classes"].tolist() == [1, 4, 11]
        assert archive["maps"].dtype == np.float16 and archive["maps"].shape == (3, 7, 9)
    back = load_cams(tmp_path, "a")
    assert back.maps.dtype == np.float32 and back.classes.tolist() == [1, 4, 11]
    assert back.mask_values.tolist() == [2, 5, 12]
    for k, c in enumerate([1, 4, 11]):
        error = np.abs(back.maps[k] - cams[c])
        assert error.max() <= FLOAT16_MAX_ERROR  # 2^-12: half a float16 step in [0.5, 1]
        assert (error <= np.maximum(cams[c], 2.0**-14) * 2.0**-11).all()  # relative 2^-11 (normal values)
    assert back.maps[1, 0, 0] == 1.0 and back.maps[0, 0, 0] == 0.0  # exact where float16 is exact
    save_cams(tmp_path / "b.npz", cams, dtype="float32")
    np.testing.assert_array_equal(load_cams(tmp_path, "b").maps, np.stack([cams[c] for c in (1, 4, 11)]))


def test_an_image_without_classes_keeps_its_size(tmp_path):
    save_cams(tmp_path / "e.npz", class_maps({}, (5, 6)))
    empty = load_cams(tmp_path, "e")
    assert empty.maps.shape == (0, 5, 6) and empty.classes.size == 0


def test_dict_export_is_what_the_release_and_psa_read(tmp_path):
    cams = maps_of(np.random.default_rng(1))
    save_cams(tmp_path / "x.npy", cams, format="dict", dtype="float16")  # dict files are float32 regardless
    loaded = np.load(tmp_path / "x.npy", allow_pickle=True).item()  # how those tools read it
    assert sorted(loaded) == [1, 4, 11] and all(type(k) is int for k in loaded)
    for c in cams:
        assert loaded[c].dtype == np.float32
        np.testing.assert_array_equal(loaded[c], cams[c])


@pytest.mark.parametrize("key_type", [int, np.int64, np.int32])
def test_old_runs_dict_files_are_read_through_the_restricted_loader(tmp_path, key_type):
    cams = maps_of(np.random.default_rng(2))
    np.save(tmp_path / "old.npy", {key_type(c): m for c, m in cams.items()}, allow_pickle=True)
    back = load_cams(tmp_path, "old")
    assert back.classes.tolist() == [1, 4, 11]
    np.testing.assert_array_equal(back.maps, np.stack([cams[c] for c in (1, 4, 11)]))


class _Exploit:
    """An object whose unpickling would run code (what a hostile map file can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exploit(tmp_path / "works")))
    assert (tmp_path / "works").exists()  # the payload is real...
    np.save(tmp_path / "evil.npy", np.array({3: _Exploit(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil\.npy: unreadable attention maps .*refusing to load pathlib") as caught:
        load_cams(tmp_path, "evil")
    assert "allow_pickle=True" in str(caught.value)  # says how to convert a file one trusts
    assert not marker.exists()  # ...and was not run


def test_an_npz_with_a_pickled_member_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", classes=np.array([0]), maps=np.array([_Exploit(marker)], dtype=object))
    with pytest.raises(ValueError, match=r"evil\.npz: unreadable attention maps"):
        load_cams(tmp_path, "evil")
    assert not marker.exists()


@pytest.mark.parametrize(("payload", "message"), [
    (np.zeros((3, 4), np.float32), "expected a dict"),
    ({"cat": np.zeros((3, 4), np.float32)}, "class indices must be integers"),
    ({1: np.zeros(4, np.float32)}, "expected a 2-D float map"),
    ({1: np.zeros((3, 4)), 2: np.zeros((4, 3))}, "maps of different sizes"),
])
def test_malformed_dict_files_are_clear_errors(tmp_path, payload, message):
    np.save(tmp_path / "bad.npy", payload, allow_pickle=True)
    with pytest.raises(ValueError, match=message):
        read_cams_file(tmp_path / "bad.npy")


def test_the_npz_wins_over_a_dict_file_and_a_missing_image_names_both(tmp_path):
    save_cams(tmp_path / "a.npz", {1: np.ones((2, 2), np.float32)})
    save_cams(tmp_path / "a.npy", {2: np.ones((2, 2), np.float32)}, format="dict")
    assert find_cams_file(tmp_path, "a").suffix == ".npz"
    assert load_cams(tmp_path, "a").classes.tolist() == [1]
    with pytest.raises(FileNotFoundError, match=r"b\.npz: attention maps not found \(nor b\.npy"):
        load_cams(tmp_path, "b")


def test_one_fsync_per_map_file_and_one_for_the_folder(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    for i in range(3):
        save_cams(tmp_path / f"{i}.npz", {0: np.zeros((2, 2), np.float32)}, sync_folder=False)
    assert len(calls) == 3
    atomic.fsync_folder(tmp_path)
    assert len(calls) == 4
    save_cams(tmp_path / "x.npz", {0: np.zeros((2, 2), np.float32)})  # default: file and folder
    assert len(calls) == 6


def test_export_cams_both_ways(tmp_path, capsys):
    rng = np.random.default_rng(3)
    source = tmp_path / "npz"
    originals = {f"img{i}": maps_of(rng, classes=(i, 5)) for i in range(3)}
    for image_id, cams in originals.items():
        save_cams(source / f"{image_id}.npz", cams, dtype="float32")
    assert main(["export-cams", "--cams", str(source), "--out", str(tmp_path / "dict"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "dict").iterdir()) == ["img0.npy", "img1.npy", "img2.npy"]
    assert main(["export-cams", "--cams", str(tmp_path / "dict"), "--out", str(tmp_path / "back"), "--format", "npz",
                 "--dtype", "float32", "--quiet"]) == 0
    for image_id, cams in originals.items():
        back = load_cams(tmp_path / "back", image_id)
        assert back.as_dict().keys() == cams.keys()
        for c in cams:
            np.testing.assert_array_equal(back.as_dict()[c], cams[c])
    assert main(["export-cams", "--cams", str(source), "--out", str(source), "--quiet"]) == 2
    assert "another folder" in capsys.readouterr().err


def test_eval_cams_pseudo_and_report_read_both_formats_alike(tiny_root, tmp_path):
    from l2g.config import load_config
    from l2g.data.images import read_mask
    from l2g.data.splits import split_samples
    from l2g.report.html_report import read_maps
    from l2g.stages.eval_cams import evaluate_cams
    from l2g.stages.pseudo import write_pseudo_masks

    config = load_config("synth", [f"data.root={tiny_root}", "data.num_classes=3", "eval.workers=1",
                                   "eval.thresholds=[0.2,0.4]"])
    rng = np.random.default_rng(4)
    for sample in split_samples(config, "train", need_masks=True):
        cams = maps_of(rng, read_mask(sample.mask_path, 3).shape, sample.labels)
        save_cams(tmp_path / "npz" / f"{sample.image_id}.npz", cams, dtype="float32")
        save_cams(tmp_path / "dict" / f"{sample.image_id}.npy", cams, format="dict")
    results = [evaluate_cams(config, tmp_path / kind, out_path=tmp_path / f"{kind}.json", progress=False)
               for kind in ("npz", "dict")]
    assert results[0] == results[1] and results[0]["images"] == 8
    for kind in ("npz", "dict"):
        write_pseudo_masks(config, tmp_path / kind, tmp_path / f"pseudo_{kind}", 0.3, progress=False)
    for png in (tmp_path / "pseudo_npz").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "pseudo_dict" / png.name).read_bytes()
    image_id = sample.image_id
    for kind in ("npz", "dict"):
        shown = read_maps(tmp_path / kind, image_id)  # the report's reader
        assert shown is not None and sorted(shown) == sorted(sample.labels)
    assert read_maps(tmp_path / "npz", "missing") is None

"""data.check_images=decode: files decoded in parallel, and once per file version (a cache keyed by size,
mtime and inode), with the verdict re-derived from the cached facts for the configured classes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_layout import LABELS, write_image, write_lists, write_mask, write_saliency

from l2g.data import file_checks
from l2g.data.layout import DatasetError, load_split
from l2g.data.palette import save_mask

C = 3


def age(root: Path, seconds: float = 60.0) -> None:
    """Make every file under ``root`` (or ``root`` itself) look written ``seconds`` ago (older than the
    cache's racy window)."""
    old = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        if path.is_file():
            os.utime(path, (old, old))


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("L2G_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "voc"
    for seed, (image_id, classes) in enumerate(LABELS.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", seed=seed)
        write_mask(root / "SegmentationClassAug" / f"{image_id}.png", classes)
        write_saliency(root / "saliency" / f"{image_id}.png")
    write_lists(root, LABELS)
    age(root)
    return root


def decode(root: Path, classes: int = C) -> list:
    return load_split(root, "train", classes, need_masks=True, need_saliency=True, check_images="decode")


def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real_image, real_mask = file_checks.image_facts, file_checks.mask_facts
    monkeypatch.setattr(file_checks, "image_facts", lambda p, what: calls.append(what) or real_image(p, what))
    monkeypatch.setattr(file_checks, "mask_facts", lambda p: calls.append("mask") or real_mask(p))
    return calls


def test_a_second_check_decodes_nothing(dataset, monkeypatch):
    first = decode(dataset)
    assert len(list((dataset.parent / "cache").glob("decoded-*.json"))) == 1
    calls = count_decodes(monkeypatch)
    assert decode(dataset) == first
    assert calls == []


def test_a_changed_file_is_decoded_again_and_its_problem_found(dataset, monkeypatch):
    decode(dataset)
    path = dataset / "SegmentationClassAug" / "2007_000002.png"
    mask = np.zeros((6, 8), np.uint8)
    mask[1, 1] = 9
    save_mask(path, mask)
    age(path)
    calls = count_decodes(monkeypatch)
    with pytest.raises(DatasetError, match=r"2007_000002\.png: mask values \[9\]"):
        decode(dataset)
    assert calls == ["mask"]


def test_a_file_written_just_before_its_check_is_not_trusted(dataset, monkeypatch):
    path = dataset / "JPEGImages" / "2007_000001.jpg"
    write_image(path, seed=7)  # mtime: now, within the racy window of the check that follows
    decode(dataset)
    calls = count_decodes(monkeypatch)
    decode(dataset)
    assert calls == ["image"]


def test_cached_facts_are_judged_for_the_configured_classes(dataset, monkeypatch):
    path = dataset / "SegmentationClassAug" / "2007_000003.png"
    mask = np.zeros((6, 8), np.uint8)
    mask[2, 2] = 4
    save_mask(path, mask)
    age(path)
    decode(dataset, classes=4)  # value 4 is a class of a 4-class dataset
    calls = count_decodes(monkeypatch)
    with pytest.raises(DatasetError, match=r"2007_000003\.png: mask values \[4\] outside 0\.\.3"):
        decode(dataset, classes=3)
    assert calls == []


def test_the_cache_can_be_turned_off(dataset, monkeypatch):
    monkeypatch.setenv("L2G_CACHE_DIR", "off")
    decode(dataset)
    calls = count_decodes(monkeypatch)
    decode(dataset)
    assert len(calls) == 9 and not (dataset.parent / "cache").exists()


def test_decoding_runs_in_parallel_threads(dataset, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    seen, barrier = set(), threading.Barrier(2, timeout=20)
    real = file_checks.image_facts

    def slow(path, what):
        seen.add(threading.get_ident())
        if len(seen) == 1 and what == "image":
            barrier.wait()  # returns only once a second thread decodes at the same time
        elif what == "image":
            barrier.wait() if barrier.n_waiting else None
        return real(path, what)

    monkeypatch.setattr(file_checks, "image_facts", slow)
    monkeypatch.setenv("L2G_CACHE_DIR", "off")
    assert len(decode(dataset)) == 3
    assert len(seen) >= 2

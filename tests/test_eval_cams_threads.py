"""``l2g eval-cams`` scores images on several workers (threads or forked processes): the result must not depend
on how many, of which kind, or the chunking."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from l2g.config import ConfigError, load_config
from l2g.data.images import read_mask
from l2g.data.splits import split_samples
from l2g.stages import eval_cams
from l2g.stages.eval_cams import evaluate_cams, sweep_workers


@pytest.fixture()
def cams(tiny_root: Path, tmp_path: Path):
    """A config over the tiny dataset's train split and a folder of random attention maps for it."""
    config = load_config("synth", [f"data.root={tiny_root}", "data.num_classes=3",
                                   "eval.thresholds=[0.1,0.2,0.3,0.5,0.7]"])
    folder = tmp_path / "cams"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for sample in split_samples(config, "train", need_masks=True):
        shape = read_mask(sample.mask_path, 3).shape
        maps = {c: rng.uniform(0, 1, shape).astype(np.float32) for c in sample.labels}
        np.save(folder / f"{sample.image_id}.npy", maps, allow_pickle=True)
    return config, folder


@pytest.mark.parametrize("parallel", ["threads", "processes", "auto"])
def test_workers_give_the_single_worker_result(cams, tmp_path, monkeypatch, parallel):
    config, folder = cams
    config.eval.workers = 1
    one = evaluate_cams(config, folder, out_path=tmp_path / "one.json", progress=False)
    monkeypatch.setattr(eval_cams, "MIN_PROCESS_IMAGES", 4)  # auto forks from 4 images here (8 in the split)
    monkeypatch.setattr(eval_cams, "MAX_CHUNK", 3)  # several chunks per worker
    used = []
    real = eval_cams._executor
    monkeypatch.setattr(eval_cams, "_executor", lambda *a: used.append(real(*a)) or used[-1])
    config.eval.workers, config.eval.parallel = 3, parallel
    three = evaluate_cams(config, folder, out_path=tmp_path / "three.json", progress=False)
    assert type(used[0]).__name__ == ("ThreadPoolExecutor" if parallel == "threads" else "ProcessPoolExecutor")
    assert one == three
    assert one["images"] == 8 and len(one["miou"]) == 5
    assert (tmp_path / "one.json").read_text() == (tmp_path / "three.json").read_text()


def test_chunks_cover_every_image_once():
    items = list(range(103))
    parts = eval_cams.chunks(items, 4)
    assert sum(parts, []) == items and max(len(p) for p in parts) <= eval_cams.MAX_CHUNK
    assert len(parts) >= 4


@pytest.mark.parametrize("parallel", ["threads", "processes"])
def test_a_missing_map_is_reported_from_a_worker(cams, tmp_path, parallel):
    config, folder = cams
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    victim = sorted(broken.glob("*.npy"))[5]
    victim.unlink()
    config.eval.workers, config.eval.parallel = 4, parallel
    with pytest.raises(FileNotFoundError, match=victim.stem):
        evaluate_cams(config, broken, out_path=tmp_path / "x.json", progress=False)


def test_sweep_workers():
    assert sweep_workers(1, 100) == 1
    assert sweep_workers(4, 2) == 2  # never more threads than images
    assert sweep_workers(0, 100) == min(os.cpu_count() or 1, 8)
    assert sweep_workers(0, 0) == 1


def test_negative_workers_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.workers"):
        load_config(None, ["eval.workers=-1"])

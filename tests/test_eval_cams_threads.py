"""``l2g eval-cams`` scores images on several threads: the result must not depend on how many."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from l2g.config import ConfigError, load_config
from l2g.data.images import read_mask
from l2g.stages.common import split_samples
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


def test_threads_give_the_single_thread_result(cams, tmp_path):
    config, folder = cams
    config.eval.workers = 1
    one = evaluate_cams(config, folder, tmp_path / "one.json", progress=False)
    config.eval.workers = 3
    three = evaluate_cams(config, folder, tmp_path / "three.json", progress=False)
    assert one == three
    assert one["images"] == 8 and len(one["miou"]) == 5
    assert (tmp_path / "one.json").read_text() == (tmp_path / "three.json").read_text()


def test_a_missing_map_is_reported_from_a_worker_thread(cams, tmp_path):
    config, folder = cams
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    victim = sorted(broken.glob("*.npy"))[5]
    victim.unlink()
    config.eval.workers = 4
    with pytest.raises(FileNotFoundError, match=victim.name):
        evaluate_cams(config, broken, tmp_path / "x.json", progress=False)


def test_sweep_workers():
    assert sweep_workers(1, 100) == 1
    assert sweep_workers(4, 2) == 2  # never more threads than images
    assert sweep_workers(0, 100) == min(os.cpu_count() or 1, 8)
    assert sweep_workers(0, 0) == 1


def test_negative_workers_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.workers"):
        load_config(None, ["eval.workers=-1"])

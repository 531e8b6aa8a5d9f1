"""Shared fixtures: a tiny synthetic dataset in VOC layout, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from l2g.data.synth import SynthSpec, write_dataset

TINY_SPEC = SynthSpec(num_classes=3, train=8, val=4, min_side=40, max_side=56)


@pytest.fixture(scope="session", autouse=True)
def decode_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The decode-check cache (l2g.data.file_checks) of the session: never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("l2g-cache")
    os.environ["L2G_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny synthetic dataset (3 classes, 8 train + 4 val images of 40-56 px).

    Shared by the whole session: tests must treat it as read-only (copy it to break it).
    """
    return write_dataset(tmp_path_factory.mktemp("tiny") / "synth", TINY_SPEC, progress=False)


@pytest.fixture
def one_thread():
    """Two torch threads on two shared cores thrash (10-50x slower): tests that train use one
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Host synchronisations of the training step: the trainer reads one small flag per optimiser step (none with
runtime.check_finite off) plus the logged terms every log_every iterations; view boxes stay on the host."""

from __future__ import annotations

import pytest
import torch

from l2g.engine.loader import batch_to_device
from l2g.engine.trainer import LoopSettings, Trainer
from l2g.method.roi import cut_global_map


class Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.full((3,), float(index)), "boxes": torch.tensor([[0, 0, 2, 2]]), "index": index}


def count_reads(monkeypatch, active: list[bool]) -> list[tuple[str, int]]:
    """Record every tensor-to-Python read (what forces a device sync on a GPU) while ``active[0]``: (method,
    number of elements read)."""
    reads: list[tuple[str, int]] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if active[0]:
                reads.append((_name, self.numel()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads


@pytest.mark.parametrize(("check_finite", "per_step"), [(True, 1), (False, 0)])
def test_the_training_step_reads_one_flag_from_the_device(tmp_path, monkeypatch, check_finite, per_step):
    model = torch.nn.Linear(3, 1)
    seen_boxes = []

    def step(model, batch):
        seen_boxes.append(batch["boxes"])
        return {"loss": model(batch["x"]).square().mean(), "other": batch["x"].mean()}

    settings = LoopSettings(epochs=1, batch_size=2, accumulate_steps=2, log_every=100, progress=False,
                            check_finite=check_finite)
    trainer = Trainer(tmp_path, {}, model, torch.optim.SGD(model.parameters(), lr=0.01), Pairs(), step, settings,
                      host_keys=("boxes",))
    active, calls = [False], []
    real_step = trainer._train_step

    def watched(*args):
        active[0] = True
        try:
            return real_step(*args)
        finally:
            active[0] = False
            calls.append(1)

    monkeypatch.setattr(trainer, "_train_step", watched)
    reads = count_reads(monkeypatch, active)
    trainer.fit()
    assert len(calls) == 3  # 12 images / (2 x 2) per optimiser step
    permutation = ("tolist", len(Pairs()))  # the sampler's epoch order, a host tensor, read by the loader
    assert [r for r in reads if r != permutation] == [("tolist", 2)] * (3 * per_step)  # the (loss, grad) flag
    assert len(seen_boxes) == 6 and all(box.device.type == "cpu" for box in seen_boxes)


def test_host_keys_stay_where_they_are():
    batch = {"image": torch.zeros(1, 3, 4, 4), "boxes": torch.zeros(1, 2, 4, dtype=torch.int64)}
    moved = batch_to_device(batch, torch.device("cpu"), True, frozenset({"boxes"}))
    assert moved["boxes"] is batch["boxes"]  # untouched
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)


def test_roi_cut_with_host_boxes_equals_device_boxes():
    maps = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[0, 0, 32, 32], [16, 8, 48, 40]], [[8, 8, 40, 40], [32, 32, 64, 64]]])
    torch.testing.assert_close(cut_global_map(maps, boxes, (4, 4)), cut_global_map(maps, boxes.clone(), (4, 4)))

"""Which images each process reads in which order, and the DataLoader settings.

The order of epoch ``e`` is a function of (seed, e) only (:func:`epoch_permutation`), so any process can
compute it at any time: that is what makes a mid-epoch resume exact (skip the consumed batches without
reading them) and what keeps the global batches independent of the number of processes.

Batch sizes are per process: ``optim.batch_size = K`` on ``W`` processes trains with global batches of
``W * K`` images, and global batch ``j`` of epoch ``e`` holds exactly the images of batch ``j`` of a
single process run with ``optim.batch_size = W * K`` and the same seed (the sampler deals the
permutation out round-robin like ``DistributedSampler``, whose ``rank::world_size`` slices of each
block of ``W * K`` consecutive indices are the ranks' batches).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from l2g.engine.precision import switch


def epoch_permutation(seed: int, epoch: int, n: int) -> list[int]:
    """The visiting order of ``n`` items in ``epoch`` (0-based).

    It is the order torch's ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))``
    gives when every epoch is read to its end (what l2g's single-process training always used, so
    results of earlier versions are reproduced): per epoch the loader draws one 64-bit worker base seed,
    then ``randperm(n)``, and the exhausted sampler draws one more ``randperm(n)`` for its empty tail.
    """
    generator = torch.Generator().manual_seed(seed)
    order = None
    for _ in range(epoch + 1):
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(n, generator=generator)
        torch.randperm(n, generator=generator)
    return order.tolist() if order is not None else []


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (round-robin shards, equal length per rank, tail dropped) over
    :func:`epoch_permutation`; ``set_epoch(epoch, skip)`` also skips this rank's first ``skip`` items."""

    def __init__(self, dataset: Dataset, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def indices(self) -> list[int]:
        """This rank's items of the current epoch, before skipping."""
        order = epoch_permutation(self.seed, self.epoch, len(self.dataset))[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


def worker_seed(seed: int, epoch: int, rank: int) -> int:
    """The DataLoader's base seed for (seed, epoch, rank): its workers seed Python, NumPy and torch from
    it (base + worker id), so they are reproducible without being saved in checkpoints."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


def resolve_workers(workers: int, device: torch.device, local_world_size: int = 1) -> int:
    """``data.workers`` (-1: automatic): on GPUs one fewer than this process's share of the CPU cores,
    at most 8; on CPUs 0, because loading in the main process does not compete with the training
    threads for the same cores."""
    if workers >= 0:
        return workers
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // max(local_world_size, 1) - 1))


def build_loader(dataset: Dataset, batch_size: int, sampler: EpochSampler, workers: int,
                 device: torch.device, pin_memory: bool | str = "auto",
                 persistent_workers: bool | str = "auto", collate_fn=None) -> tuple[DataLoader, torch.Generator]:
    """A DataLoader over ``sampler`` with full batches only, and the generator that seeds its workers
    (reseed it per epoch with :func:`worker_seed`).

    pin_memory: auto = on with CUDA. persistent_workers: auto = on when there are workers and the
    dataset has no ``set_epoch`` (persistent workers keep their copy of the dataset, so an epoch set
    in the main process would not reach them).
    """
    generator = torch.Generator()
    persistent = switch(persistent_workers, workers > 0 and not hasattr(dataset, "set_epoch")) and workers > 0
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
        pin_memory=switch(pin_memory, device.type == "cuda"), persistent_workers=persistent,
        generator=generator, collate_fn=collate_fn,
    )
    return loader, generator


def batch_to_device(batch: dict, device: torch.device, channels_last: bool,
                    host_keys: frozenset[str] = frozenset()) -> dict:
    """A collated batch on ``device``: tensors moved (4-d float ones to channels_last if asked), except those
    under ``host_keys`` (the view boxes, read on the host) and anything not a tensor."""
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and key not in host_keys:
            value = value.to(device, non_blocking=device.type == "cuda")
            if channels_last and value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved

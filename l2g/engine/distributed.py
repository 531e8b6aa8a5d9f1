"""Processes launched by ``torchrun``: who we are, which device we use, and the few collectives we need.

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT for its rendezvous); without them we
are the only process and nothing here communicates. The backend is NCCL on GPUs and gloo on CPUs; every
process uses GPU ``LOCAL_RANK`` of its node.

Stages call :func:`setup` once, then use the returned :class:`DistContext` (``is_main`` decides who
writes files). Decisions that must be the same everywhere (is the run folder usable? which checkpoint?)
are taken by rank 0 with :func:`main_first` and shared; an error on any rank is raised on every rank by
:func:`agree`, so a failing process never leaves the others waiting in a collective forever.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from l2g.engine import elastic

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_context: DistContext | None = None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def setup(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (once per process) and pick this process's device.

    ``device`` is the config's ``auto | cpu | cuda``. Later calls return the first call's context.
    """
    global _context
    if _context is not None:
        return _context
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device=cuda, but torch sees no GPU (use --set device=cpu or device=auto)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank}, but this node has {torch.cuda.device_count()} GPU(s): "
                             "give torchrun --nproc_per_node <= the number of GPUs")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # Under torchrun, a store of this attempt's own: the agent's store keeps the keys of the attempts
        # before a restart, which would make the group connect to dead processes (l2g.engine.elastic).
        store = {}
        if elastic.uses_agent_store():
            store = {"store": elastic.round_store(rank, world, dist.default_pg_timeout), "rank": rank,
                     "world_size": world}
        if use_cuda:
            dist.init_process_group(backend="nccl", device_id=chosen, **store)
        else:
            dist.init_process_group(backend="gloo", **store)
    _context = DistContext(rank, world, local_rank, local_world, chosen)
    return _context


def current() -> DistContext:
    """The context of :func:`setup`, or a single-process CPU context when setup was not called."""
    return _context if _context is not None else DistContext()


def shutdown(wait_for_others: bool = True) -> None:
    """Leave the process group (end of a command); a later :func:`setup` starts afresh.

    ``wait_for_others``: meet the other ranks first, so none tears its connections down while a peer
    still uses them (gloo can abort the process then). Pass False on an error path, where the other
    ranks may never arrive.
    """
    global _context
    if dist.is_available() and dist.is_initialized():
        if wait_for_others and dist.get_world_size() > 1:
            dist.barrier()
        # Free what still refers to the process group (DDP wrappers sit in reference cycles) while the
        # interpreter is whole: gloo's threads destroyed during interpreter shutdown can abort the process.
        gc.collect()
        dist.destroy_process_group()
    _context = None


def publish_error(error: BaseException) -> None:
    """Under torchrun, leave this rank's error where the other ranks find it (:func:`peer_error`)."""
    if _context is not None and _context.distributed:
        elastic.publish_error(_context.rank, str(error))


def peer_error() -> str | None:
    """The error that another rank published before it stopped (``(rank R) message``), if any: what to
    report instead of the broken collective that its exit left this rank with."""
    if _context is None or not _context.distributed:
        return None
    return elastic.peer_error()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list without a process group)."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (a copy; the input itself without a process group)."""
    if not _active():
        return values
    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of a tensor over ranks (a copy; the input itself without a process group)."""
    if not _active():
        return values
    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return reduced


def _reported_errors() -> tuple[type[BaseException], ...]:
    """Errors that cli.main reports as a message, most specific first; another rank's error is raised
    as the first of these in its class lineage (others as RuntimeError)."""
    from l2g.errors import USER_ERRORS

    return (*USER_ERRORS, FileNotFoundError, FileExistsError, ValueError, FloatingPointError, OSError)


def agree(error: BaseException | None) -> None:
    """Raise on every rank if any rank had an error: a rank's own error as is, another rank's as a
    copy of the same type naming that rank. Every rank must call it at the same point."""
    if not _active():
        if error is not None:
            raise error
        return
    reports = all_gather_object(None if error is None else ([k.__name__ for k in type(error).__mro__], str(error)))
    if error is not None:
        raise error
    for rank, report in enumerate(reports):
        if report is not None:
            lineage, message = report  # the error's class names, most specific first
            kind = next((k for name in lineage for k in _reported_errors() if k.__name__ == name), RuntimeError)
            raise kind(f"(rank {rank}) {message}")


@contextlib.contextmanager
def agreed() -> Iterator[None]:
    """Run the block on this rank; an error in it, on any rank, is raised on every rank (:func:`agree`),
    so that no rank waits forever for another at the next collective. Every rank must enter it."""
    error = None
    try:
        yield
    except Exception as caught:  # every rank must learn about it, or the others would wait forever
        error = caught
    agree(error)


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give its result (or its error) to every rank."""
    result, error = None, None
    if current().is_main:
        try:
            result = fn()
        except Exception as caught:  # handed to agree(), which re-raises it on every rank
            error = caught
    agree(error)
    return broadcast_object(result)


def shard(items: Sequence[T], ctx: DistContext | None = None) -> list[T]:
    """This rank's share of ``items`` (every world_size-th item from its rank): together the ranks
    cover each item exactly once, and one process gets them all."""
    ctx = ctx or current()
    return list(items[ctx.rank :: ctx.world_size])


# --- synchronised batch norm -------------------------------------------------------------------------


class _SumOverRanks(torch.autograd.Function):
    """Sum a tensor over processes; the gradient of every process's copy is the sum of the incoming
    gradients over processes (each rank's output feeds that rank's loss)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, for CPU processes (gloo).

    torch's ``nn.SyncBatchNorm`` needs CUDA kernels, so GPUs use it; on CPUs this layer computes the
    mean and variance from sums all-reduced across processes (the backward all-reduces the gradients of
    those sums), which gives the statistics and gradients of one batch norm over the concatenated batch,
    the same construction as torch's layer. Without a process group it is plain batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        dist.all_reduce(count)  # a constant: no gradient flows through the number of values
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch-norm layers of ``module`` made synchronised across processes (in place where possible;
    parameters and buffers are the same objects, so an optimiser built before stays valid)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        converted = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())

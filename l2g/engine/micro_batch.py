"""Micro-batches: a step's images in several forward/backward passes, chosen to fit the machine's memory.

``runtime.micro_batch`` = m splits each loaded batch of ``optim.batch_size`` (B) images into B / m passes whose
gradients add up before the optimiser step, each pass's loss weighted by its share of the batch (m / B). Where
the loss is a mean of per-image terms with as many terms per image (the classification stage: the
classification loss per image and per view, the transfer loss per view pixel) and no layer uses batch statistics
(BatchNorm frozen), the step is the one-pass step up to float rounding: the same weights, at the memory of m
images' activations. This is not ``optim.accumulate_steps``, which changes what is loaded per pass and enters
the resume check; the micro-batch changes neither the batches nor the schedule, so a run may resume with another.

``"auto"`` measures the activations the step keeps for backward on one image (one forward pass of the first
image, the autograd graph dropped, the random state restored) and takes the largest m dividing B whose
activations fit a share of the memory left: on CUDA ``CUDA_SHARE`` of the free device memory; on CPUs
``CPU_SHARE`` of the available RAM, and at most ``CPU_CAP`` bytes, because there a smaller pass was also
faster per image (docs/distributed.md has the measurements). With BatchNorm layers that train (``small_cnn``, or
``model.freeze_bn=false``) ``"auto"`` keeps the whole batch: smaller passes would change their statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

GIB = 2**30
CUDA_SHARE = 0.7
CPU_SHARE = 0.5
CPU_CAP = 3 * GIB
# Peak memory grows by about the saved activations per image, plus the backward pass's transient gradients.
HEADROOM = 1.25


def trains_batch_norm(model: nn.Module) -> bool:
    """Whether a forward pass in the model's current mode uses (and updates) batch statistics."""
    return any(isinstance(m, _BatchNorm) and m.training for m in model.modules())


def _cgroup_left() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit, or None without a limit."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device) -> tuple[int, str]:
    """(bytes this process may still allocate, where that figure comes from) on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines if line.split()[1:]}
        available, where = meminfo["MemAvailable"], "RAM available"
    except (OSError, KeyError, ValueError, IndexError):
        return 8 * GIB, "RAM assumed (no /proc/meminfo)"
    left = _cgroup_left()
    if left is not None and left < available:
        return left, "left under the cgroup's memory limit"
    return available, where


def saved_bytes(run: Callable[[], object], exclude: set[int]) -> int:
    """Bytes of the tensors autograd keeps for backward while ``run()`` executes (each storage counted once;
    storages whose address is in ``exclude``, the parameters, left out). The graph is dropped afterwards."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    del result
    return sum(seen.values())


@contextlib.contextmanager
def random_state_kept(device: torch.device):
    """Restore torch's random state (CPU, and CUDA's on that device) on exit."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def measure_per_image(step: Callable[[dict], object], model: nn.Module, one_image: dict,
                      device: torch.device) -> int:
    """Activation bytes of ``step(one_image)`` (a batch of one image on ``device``)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    parameters |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    with random_state_kept(device):
        per_image = saved_bytes(lambda: step(one_image), parameters)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return per_image


def largest_fitting(batch_size: int, per_image: float, budget: float) -> int:
    """The largest divisor m of ``batch_size`` with m x per_image x HEADROOM <= budget (at least 1)."""
    fitting = [m for m in range(1, batch_size + 1) if batch_size % m == 0 and m * per_image * HEADROOM <= budget]
    return max(fitting, default=1)


def choose_micro_batch(setting: int | str | None, batch_size: int, device: torch.device, model: nn.Module,
                       measure: Callable[[], int]) -> tuple[int, str]:
    """(images per forward/backward pass, why) for ``runtime.micro_batch = setting`` (None: the whole batch,
    for stages whose loss is not a mean of per-image terms). ``measure()`` gives the activation bytes of one
    image; it is only called for ``"auto"``."""
    if setting is None or batch_size == 1:
        return batch_size, ""
    if setting != "auto":
        size = int(setting)
        if size < 1 or batch_size % size:
            raise ValueError(f"runtime.micro_batch = {size} must divide the batch size {batch_size}")
        return size, f"runtime.micro_batch {size}"
    if trains_batch_norm(model):
        return batch_size, "auto: BatchNorm layers train, so the whole batch goes through in one pass"
    per_image = measure()
    available, where = available_memory(device)
    budget = CUDA_SHARE * available if device.type == "cuda" else min(CPU_SHARE * available, CPU_CAP)
    size = largest_fitting(batch_size, per_image, budget)
    reason = (f"auto: {per_image / GIB:.2f} GiB of activations per image, {available / GIB:.1f} GiB {where}")
    if per_image * HEADROOM > available:
        reason += ("; even one image may not fit: lower data.global_size / views.patch_size, or set "
                   "runtime.activation_checkpointing=true")
    return size, reason


def split_batch(batch: dict, size: int) -> list[tuple[dict, float]]:
    """``batch`` (a collated dict whose tensors and lists have the batch as their first dimension) in parts
    of ``size`` images, each with its share of the batch (its image count / the batch's)."""
    count = len(batch["index"]) if "index" in batch else next(len(v) for v in batch.values() if torch.is_tensor(v))
    if size >= count:
        return [(batch, 1.0)]
    parts = []
    for start in range(0, count, size):
        part = {key: value[start:start + size] if (torch.is_tensor(value) and value.dim() > 0)
                or isinstance(value, list) else value for key, value in batch.items()}
        parts.append((part, min(size, count - start) / count))
    return parts

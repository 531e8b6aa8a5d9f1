"""Mixed precision and memory layout: what ``amp`` and ``runtime.channels_last`` mean on a device.

``amp``: ``auto`` (default) = on with CUDA and on a CPU with native bf16 instructions, off on other CPUs;
``cuda`` = on with CUDA only (float32 on every CPU: the paper presets, whose CPU runs exist to check the
release's arithmetic); ``on``/``true`` = on everywhere; ``off``/``false``. When on, the forward pass and the
loss run under ``torch.autocast`` in bfloat16 where the device has it natively (CPUs; GPUs of compute
capability 8.0 or newer, i.e. Ampere on), else in float16 with a ``GradScaler`` (whose state is saved in
checkpoints): on a V100 or T4 torch would emulate bf16, slowly and without a scaler
(:func:`cuda_bf16_support` tells, :attr:`Precision.reason` names the GPU and its capability). Weights,
gradients and the optimiser stay in float32.

``channels_last``: ``auto`` = on whenever AMP is on (tensor-core convolutions and oneDNN's bf16 kernels
prefer NHWC), else off (in float32 on a CPU it changes the convolution kernels and thus the last bits of
results, for a smaller gain); except for training on a CPU, where ``auto`` is off: on the synthetic
benchmark CAM trained in bf16 with channels_last lost more than without it, float32 with it lost too, and
so did CAM and L2G in bf16 after a float32 epoch (every seed, 0.2-2.3 points; docs/benchmarks.md), while the
maps (inference) showed no such cost.

bf16 on a CPU is fast only with native bf16 instructions (x86: AVX512-BF16 or AMX-BF16; Arm: the BF16
extension). Elsewhere (e.g. an AVX2-only CPU) torch emulates it, far slower than float32 (docs/benchmarks.md):
:func:`cpu_bf16_support` tells, ``auto`` stays off there (:attr:`Precision.reason` says why), and turning
AMP on for such a CPU warns.
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

# /proc/cpuinfo flags (x86) / features (Arm) of native bf16 arithmetic
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# The first CUDA compute capability with bf16 tensor cores (Ampere); older GPUs only emulate bf16
NATIVE_BF16_CAPABILITY = (8, 0)


class SlowPrecisionWarning(UserWarning):
    """Mixed precision was asked for where it runs emulated, i.e. slower than float32."""


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel lists them (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_bf16_support() -> tuple[bool, str]:
    """(native bf16 arithmetic on this CPU?, how it was told): torch's own CPU probes where it has them
    (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``), else the kernel's CPU flags."""
    probes = [(name, getattr(torch.cpu, f"_is_{name}_supported", None)) for name in ("avx512_bf16", "amx_tile")]
    found = [name for name, probe in probes if probe is not None and probe()]
    found += sorted(flag for flag in _cpu_flags() & set(NATIVE_BF16_FLAGS) if flag not in found)
    capability = torch.backends.cpu.get_cpu_capability()
    if found:
        return True, f"native bf16 ({', '.join(found)}; torch CPU capability {capability})"
    return False, (f"no native bf16 instructions on this CPU ({platform.machine()}, torch CPU capability "
                   f"{capability}, no avx512_bf16 / amx_bf16 / bf16 flag): bf16 is emulated, slower than float32")


def cuda_bf16_support(device: torch.device) -> tuple[bool, str]:
    """(native bf16 on the CUDA ``device``?, what the run's log says about the dtype picked): native from
    compute capability 8.0 (Ampere) on, or on ROCm (as ``torch.cuda.is_bf16_supported`` has it). Not
    ``torch.cuda.is_bf16_supported()``, which by default counts emulated bf16 too (slow on a V100 or T4)."""
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    gpu = f"{name} (compute capability {major}.{minor})"
    if torch.version.hip or (major, minor) >= NATIVE_BF16_CAPABILITY:
        return True, f"bf16: {gpu} has native bf16"
    return False, f"fp16 + gradient scaler: {gpu} has no native bf16 (torch would emulate it, slowly)"


def switch(value: bool | str, auto: bool) -> bool:
    """A config switch ``auto | on | off`` (YAML also reads on/off/true/false as booleans)."""
    if isinstance(value, bool):
        return value
    return {"auto": auto, "on": True, "off": False}[value]


def compile_choice(value: bool | str, device: torch.device) -> bool:
    """``runtime.compile`` on ``device``: ``auto`` = on with CUDA only (on a CPU the compile time of a step
    exceeded what it saved over a synthetic-benchmark run)."""
    return switch(value, device.type == "cuda")


@contextlib.contextmanager
def compile_errors_explained():
    """Turn torch.compile's tracing errors into a user-facing error that names the off switch."""
    try:
        yield
    except torch._dynamo.exc.TorchDynamoException as error:
        raise ValueError(f"torch.compile could not compile the training step ({type(error).__name__}: "
                         f"{str(error)[:300]}); train without it: --set runtime.compile=off") from error


def amp_choice(amp: bool | str, device: torch.device) -> tuple[bool, str]:
    """(autocast on?, why): what ``amp`` (``auto | cuda | on | off``) means on ``device``."""
    if amp == "cuda":
        if device.type == "cuda":
            return True, "amp cuda: on (CUDA)"
        return False, f"amp cuda: off on {device.type} (amp auto trains in bf16 where the CPU has it natively)"
    if amp != "auto":
        enabled = switch(amp, False)
        return enabled, f"amp {'on' if enabled else 'off'} (set in the config)"
    if device.type == "cuda":
        return True, "amp auto: on (CUDA)"
    if device.type != "cpu":
        return False, f"amp auto: off on {device.type}"
    native, how = cpu_bf16_support()
    return native, f"amp auto: {'on' if native else 'off'}, {how}"


@dataclass
class Precision:
    enabled: bool
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    device_type: str
    reason: str = ""  # why autocast is on or off (amp auto decides per device): for the run's log
    # Training iterations run in float32 before autocast starts (amp_warmup_epochs): bf16 from the first
    # step costs CAM on the synthetic benchmark, after a float32 start it does not (docs/benchmarks.md).
    float32_iterations: int = 0

    def warm_up(self, float32_iterations: int, total_iterations: int, setting: str) -> None:
        """Train the first ``float32_iterations`` of a run's ``total_iterations`` in float32, autocast after
        (nothing to do when autocast is off). A warm-up that covers the whole run turns autocast off, with
        the reason (``setting`` names what asked for it), so that the log does not claim an autocast that
        never happens."""
        if not self.enabled:
            return
        self.float32_iterations = float32_iterations
        if float32_iterations >= total_iterations:
            self.enabled = False
            self.reason += f"; float32: {setting} covers all {total_iterations} iterations"

    def autocast(self, iteration: int | None = None):
        """Autocast if on; during the float32 warm-up (``iteration`` below :attr:`float32_iterations`) not."""
        if not self.enabled or (iteration is not None and iteration < self.float32_iterations):
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "float32"
        name = str(self.dtype).replace("torch.", "")
        warmup = f" after {self.float32_iterations} float32 iterations" if self.float32_iterations else ""
        return f"{name} autocast" + (" + grad scaler" if self.scaler is not None else "") + warmup

    def describe_layout(self) -> str:
        """:meth:`describe` plus the memory layout, e.g. ``bfloat16 autocast, channels_last``."""
        return self.describe() + (", channels_last" if self.channels_last else "")

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in the chosen memory layout (in place, as ``Module.to``)."""
        return module.to(memory_format=torch.channels_last) if self.channels_last else module


def resolve_precision(amp: bool | str, channels_last: bool | str, device: torch.device,
                      training: bool = False) -> Precision:
    """What ``amp`` means on ``device`` (for a training loop if ``training``: there ``channels_last: auto`` is
    off on CPUs); on a CPU without native bf16, turning it on warns (it is a slowdown); on a GPU without
    native bf16 (compute capability below 8.0) it is float16 with a gradient scaler, ``on`` as ``auto``."""
    enabled, reason = amp_choice(amp, device)
    dtype, scaler = None, None
    if enabled:
        dtype = torch.bfloat16
        if device.type == "cuda":
            native, how = cuda_bf16_support(device)
            reason += f"; {how}"
            if not native:
                dtype, scaler = torch.float16, torch.amp.GradScaler("cuda")
        if device.type == "cpu" and amp != "auto":
            native, how = cpu_bf16_support()
            if not native:
                warnings.warn(f"amp is on, but {how}; set amp: off (and cams.amp: off) unless "
                              "you want bf16's results", SlowPrecisionWarning, stacklevel=2)
    layout = switch(channels_last, enabled and not (training and device.type == "cpu"))
    return Precision(enabled, dtype, scaler, layout, device.type, reason)

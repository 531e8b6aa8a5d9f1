"""Mixed precision and memory layout: what ``amp`` and ``runtime.channels_last`` mean on a device.

``amp``: ``auto`` (default) = on with CUDA, off on CPU; ``on``/``true`` = on everywhere; ``off``/``false``.
When on, the forward pass and the loss run under ``torch.autocast`` in bfloat16 where the device
supports it (CPUs, Ampere or newer GPUs), else in float16 with a ``GradScaler`` (whose state is saved in
checkpoints). Weights, gradients and the optimiser stay in float32.

``channels_last``: ``auto`` = on when AMP runs on CUDA (tensor-core convolutions prefer NHWC), else off
(on CPUs it changes the convolution kernels and thus the last bits of results).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def switch(value: bool | str, auto: bool) -> bool:
    """A config switch ``auto | on | off`` (YAML also reads on/off/true/false as booleans)."""
    if isinstance(value, bool):
        return value
    return {"auto": auto, "on": True, "off": False}[value]


@dataclass
class Precision:
    enabled: bool
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    device_type: str

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if not self.enabled:
            return "float32"
        name = str(self.dtype).replace("torch.", "")
        return f"{name} autocast" + (" + grad scaler" if self.scaler is not None else "")


def resolve_precision(amp: bool | str, channels_last: bool | str, device: torch.device) -> Precision:
    enabled = switch(amp, device.type == "cuda")
    dtype, scaler = None, None
    if enabled:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            dtype, scaler = torch.float16, torch.amp.GradScaler("cuda")
        else:
            dtype = torch.bfloat16
    layout = switch(channels_last, enabled and device.type == "cuda")
    return Precision(enabled, dtype, scaler, layout, device.type)

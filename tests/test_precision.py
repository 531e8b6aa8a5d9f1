"""bf16 on CPUs without native bf16: detected (torch's probes, else the kernel's CPU flags), and amp: on warns."""

from __future__ import annotations

import warnings

import pytest
import torch

from l2g.engine import precision
from l2g.engine.precision import SlowPrecisionWarning, cpu_bf16_support, resolve_precision


def pretend(monkeypatch, probes: dict[str, bool | None], flags: set[str]) -> None:
    for name in ("avx512_bf16", "amx_tile"):
        value = probes.get(name)
        if value is None:
            monkeypatch.delattr(torch.cpu, f"_is_{name}_supported", raising=False)
        else:
            monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda value=value: value)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: set(flags))


def test_an_avx2_only_cpu_has_no_native_bf16_and_amp_on_warns(monkeypatch):
    pretend(monkeypatch, {"avx512_bf16": False, "amx_tile": False}, {"fpu", "avx", "avx2", "fma"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    native, how = cpu_bf16_support()
    assert not native and "AVX2" in how and "emulated" in how
    with pytest.warns(SlowPrecisionWarning, match="set amp: off"):
        chosen = resolve_precision("on", "auto", torch.device("cpu"))
    assert chosen.dtype == torch.bfloat16  # still what was asked for: only a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not resolve_precision("auto", "auto", torch.device("cpu")).enabled  # auto: off on CPUs, silent


@pytest.mark.parametrize(("probes", "flags", "named"), [
    ({"avx512_bf16": True, "amx_tile": False}, set(), "avx512_bf16"),  # torch's probe says so
    ({}, {"avx512f", "avx512_bf16"}, "avx512_bf16"),  # an older torch without probes: the flags
    ({}, {"amx_bf16", "amx_tile"}, "amx_bf16"),
    ({}, {"fp", "asimd", "bf16"}, "bf16"),  # Arm's BF16 extension
])
def test_native_bf16_is_found_by_probe_or_flag(monkeypatch, probes, flags, named):
    pretend(monkeypatch, probes, flags)
    native, how = cpu_bf16_support()
    assert native and named in how
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("on", "auto", torch.device("cpu"))


def test_this_machine_is_reported_consistently_with_its_flags():
    flags = precision._cpu_flags()
    if flags and not flags & set(precision.NATIVE_BF16_FLAGS):
        assert not cpu_bf16_support()[0]
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert cpu_bf16_support()[0]

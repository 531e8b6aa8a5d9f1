"""bf16 on CPUs without native bf16: detected (torch's probes, else the kernel's CPU flags), and amp: on warns."""

from __future__ import annotations

import warnings

import pytest
import torch

from l2g.config import Config
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
        auto = resolve_precision("auto", "auto", torch.device("cpu"))  # auto: off on such a CPU, silent
    assert (auto.enabled, auto.channels_last, auto.describe_layout()) == (False, False, "float32")
    assert "amp auto: off" in auto.reason and "emulated" in auto.reason  # the run's log says why


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
        auto = resolve_precision("auto", "auto", torch.device("cpu"))  # the fast path, by itself
    assert (auto.enabled, auto.dtype, auto.scaler, auto.channels_last) == (True, torch.bfloat16, None, True)
    assert auto.describe_layout() == "bfloat16 autocast, channels_last" and named in auto.reason
    assert not resolve_precision("auto", "off", torch.device("cpu")).channels_last  # each switch has its off


def test_training_on_a_cpu_keeps_the_default_layout_unless_asked(monkeypatch):
    # auto: channels_last with autocast for the maps, not for CPU training (it cost CAM there); on CUDA both
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "pretend"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    layouts = {(device.type, training): resolve_precision("on", "auto", device, training=training).channels_last
               for device in (cpu, cuda) for training in (False, True)}
    assert layouts == {("cpu", False): True, ("cpu", True): False, ("cuda", False): True, ("cuda", True): True}
    assert resolve_precision("on", "on", cpu, training=True).channels_last  # asked for: granted


@pytest.mark.parametrize("native", [True, False])
def test_amp_cuda_keeps_float32_on_every_cpu_and_off_turns_everything_off(monkeypatch, native):
    assert Config().amp == "cuda" and Config().cams.amp == "auto"  # training float32 on CPUs, maps bf16 if native
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (native, "pretend"))
    cpu = torch.device("cpu")
    cuda_only = resolve_precision("cuda", "auto", cpu)
    assert (cuda_only.enabled, cuda_only.channels_last, cuda_only.reason) == (
        False, False, "amp cuda: off on cpu (amp auto trains in bf16 where the CPU has it natively)")
    off = resolve_precision("off", "auto", cpu)
    assert (off.enabled, off.channels_last, off.reason) == (False, False, "amp off (set in the config)")


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
@pytest.mark.parametrize(("amp", "bf16", "dtype", "scaler"), [
    ("auto", True, torch.bfloat16, False), ("auto", False, torch.float16, True),
    ("cuda", True, torch.bfloat16, False), ("cuda", False, torch.float16, True),
])
def test_on_cuda_auto_and_cuda_pick_mixed_precision_and_channels_last(monkeypatch, amp, bf16, dtype, scaler):
    # resolved without a GPU: only the choice is tested (the GradScaler is built lazily for cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    chosen = resolve_precision(amp, "auto", torch.device("cuda"))
    picked = (chosen.enabled, chosen.dtype, chosen.scaler is not None, chosen.channels_last)
    assert picked == (True, dtype, scaler, True)
    assert chosen.reason in ("amp auto: on (CUDA)", "amp cuda: on (CUDA)")


def test_this_machine_is_reported_consistently_with_its_flags():
    flags = precision._cpu_flags()
    if flags and not flags & set(precision.NATIVE_BF16_FLAGS):
        assert not cpu_bf16_support()[0]
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert cpu_bf16_support()[0]


# --- BatchNorm folding (the fast inference path of l2g cams) ---------------------------------------------


def test_fold_batchnorm_matches_a_hand_computed_conv_and_bn():
    from torch import nn

    from l2g.models.fusion import fold_batchnorm

    conv = nn.Conv2d(1, 1, 1, bias=False)
    norm = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        norm.weight.fill_(3.0)
        norm.bias.fill_(1.0)
        norm.running_mean.fill_(0.5)
        norm.running_var.fill_(3.0)
    block = nn.Sequential(conv, norm, nn.ReLU()).eval()
    x = torch.tensor([[[[1.0, -1.0]]]])
    # BN(2x) = (2x - 0.5) * 3 / sqrt(3 + 1) + 1 = 3x + 0.25: x = 1 -> 3.25, x = -1 -> -2.75 -> ReLU 0
    assert block(x).flatten().tolist() == [3.25, 0.0]
    assert fold_batchnorm(block) == 1
    assert isinstance(block[1], nn.Identity) and block[0].weight.item() == 3.0 and block[0].bias.item() == 0.25
    assert block(x).flatten().tolist() == [3.25, 0.0]


def test_fold_batchnorm_keeps_the_small_cnn_function_and_leaves_pre_activation_blocks_alone():
    from torch import nn

    from l2g.config import load_config
    from l2g.method.methods import build_method
    from l2g.models.fusion import fold_batchnorm

    torch.manual_seed(0)
    net = build_method(load_config("synth", ["method.name=cam", "model.width=4"])).inference_net()
    with torch.no_grad():  # statistics far from the defaults, so that a wrong fold shows
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 40, 48)
    before = net(x).maps
    assert fold_batchnorm(net) == 9
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(x).maps, before, rtol=1e-4, atol=1e-4)
    pre_activation = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 1)).eval()
    assert fold_batchnorm(pre_activation) == 0
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)))

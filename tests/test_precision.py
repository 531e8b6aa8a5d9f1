"""bf16 on CPUs without native bf16: detected (torch's probes, else the kernel's CPU flags), and amp: on warns;
on GPUs bf16 only from compute capability 8.0 on, else fp16 with a gradient scaler (device queries faked)."""

from __future__ import annotations

import warnings

import pytest
import torch

from l2g.config import Config
from l2g.engine import precision
from l2g.engine.precision import SlowPrecisionWarning, cpu_bf16_support, cuda_bf16_support, resolve_precision


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
    pretend_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0))
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


def pretend_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """Fake a CUDA GPU's queries on a CPU. torch's is_bf16_supported counts emulated bf16 unless told
    otherwise (``including_emulation=True``, its default): so does the fake, which says yes to every GPU then,
    and a choice that trusted it would pick bf16 on a V100 or T4 again."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    native = capability >= (8, 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    monkeypatch.setattr(torch.version, "hip", None)


AMPERE, VOLTA, TURING = ("NVIDIA A100-SXM4-40GB", (8, 0)), ("Tesla V100-SXM2-16GB", (7, 0)), ("Tesla T4", (7, 5))


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
@pytest.mark.parametrize("amp", ["auto", "cuda", "on", True])
@pytest.mark.parametrize(("gpu", "dtype", "scaler", "told"), [
    (AMPERE, torch.bfloat16, False, "bf16: NVIDIA A100-SXM4-40GB (compute capability 8.0) has native bf16"),
    (("NVIDIA H100 80GB HBM3", (9, 0)), torch.bfloat16, False,
     "bf16: NVIDIA H100 80GB HBM3 (compute capability 9.0) has native bf16"),
    (VOLTA, torch.float16, True,
     "fp16 + gradient scaler: Tesla V100-SXM2-16GB (compute capability 7.0) has no native bf16"),
    (TURING, torch.float16, True, "fp16 + gradient scaler: Tesla T4 (compute capability 7.5) has no native bf16"),
])
def test_on_cuda_bf16_only_where_native_else_fp16_with_a_scaler(monkeypatch, amp, gpu, dtype, scaler, told):
    # resolved without a GPU: only the choice is tested (the GradScaler is built lazily for cuda)
    pretend_gpu(monkeypatch, *gpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "torch.cuda.amp.GradScaler is enabled")
        chosen = resolve_precision(amp, "auto", torch.device("cuda"))  # no slowness warning: fp16 is fast
    picked = (chosen.enabled, chosen.dtype, chosen.scaler is not None, chosen.channels_last)
    assert picked == (True, dtype, scaler, True)
    assert isinstance(chosen.scaler, torch.amp.GradScaler) if scaler else chosen.scaler is None
    assert told in chosen.reason  # the run's log names the GPU, its capability and the reason
    assert chosen.reason.startswith(("amp auto: on (CUDA); ", "amp cuda: on (CUDA); ", "amp on (set in the config); "))
    expected = "float16 autocast + grad scaler" if scaler else "bfloat16 autocast"
    assert chosen.describe_layout() == f"{expected}, channels_last"


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_cuda_bf16_support_asks_the_device_it_is_given_not_the_emulation_counting_probe(monkeypatch):
    pretend_gpu(monkeypatch, *VOLTA)
    assert torch.cuda.is_bf16_supported()  # the fake, as torch: emulated bf16 counts by default
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or (7, 0))
    native, how = cuda_bf16_support(torch.device("cuda", 1))
    assert not native and "Tesla V100-SXM2-16GB (compute capability 7.0) has no native bf16" in how
    assert asked == [torch.device("cuda", 1)]  # the training process's own GPU, not whichever is current
    # off stays off on any GPU, and asks nothing about it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: pytest.fail("asked"))
    off = resolve_precision("off", "auto", torch.device("cuda"))
    assert (off.enabled, off.dtype, off.scaler, off.reason) == (False, None, None, "amp off (set in the config)")


def test_rocm_counts_as_native_bf16_as_torch_has_it(monkeypatch):
    pretend_gpu(monkeypatch, "AMD Instinct MI250X", (9, 0))
    monkeypatch.setattr(torch.version, "hip", "6.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # not CUDA's scale
    chosen = resolve_precision("auto", "auto", torch.device("cuda"))
    assert (chosen.dtype, chosen.scaler) == (torch.bfloat16, None)


@pytest.mark.parametrize("gpu", [AMPERE, VOLTA])
def test_without_a_gpu_the_cpu_choice_is_unchanged_and_asks_no_gpu(monkeypatch, gpu):
    pretend_gpu(monkeypatch, *gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for query in ("get_device_name", "get_device_capability", "is_bf16_supported"):
        monkeypatch.setattr(torch.cuda, query, lambda *a, query=query, **k: pytest.fail(f"{query} asked on a CPU"))
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (True, "native bf16 (pretend)"))
    cpu = torch.device("cpu")
    auto, on = resolve_precision("auto", "auto", cpu), resolve_precision("on", "auto", cpu, training=True)
    assert (auto.enabled, auto.dtype, auto.scaler, auto.reason) == (
        True, torch.bfloat16, None, "amp auto: on, native bf16 (pretend)")
    assert (on.dtype, on.scaler, on.channels_last, on.reason) == (
        torch.bfloat16, None, False, "amp on (set in the config)")
    cuda_only = resolve_precision("cuda", "auto", cpu)
    assert (cuda_only.enabled, cuda_only.dtype, cuda_only.scaler) == (False, None, None)


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

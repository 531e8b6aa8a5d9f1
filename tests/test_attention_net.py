"""The attention network as the authors' release builds it (models/resnet38.py), pinned from the
method's description with cases computed here: the logits pool the map AFTER the PCM (so the
classification loss trains the PCM), the release's initialisation, the PCM's ``f / (||f|| + 1e-5)``
normalisation, and the chunked PCM propagation (same values and gradients as the whole affinity)."""

from __future__ import annotations

import math

import pytest
import torch

from l2g.config import Config
from l2g.method.methods import build_method
from l2g.models.attention_net import AttentionNet
from l2g.models.pcm import PixelCorrelation, normalize_embedding, propagate
from l2g.models.resnet38 import ResNet38
from l2g.models.small_cnn import SmallCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(name: str, num_classes: int = 3) -> Config:
    config = Config()
    config.data.num_classes, config.data.global_size = num_classes, 64
    config.views.patch_size = 32
    config.model.backbone, config.model.width_mult, config.model.pcm = "resnet38", 1 / 16, True
    config.model.pcm_dims, config.model.pcm_out = (4, 8), 12
    config.method.name, config.method.background, config.method.shape_form = name, "release", "release"
    config.method.shape_threshold = 0.001
    return config.validate()


def tiny_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[[0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64], [32, 32, 64, 64]]] * 2)
    return {"image": torch.randn(2, 3, 64, 64, generator=gen), "labels": torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
            "boxes": boxes, "saliency": torch.rand(2, 1, 64, 64, generator=gen)}


# --- pooling after the PCM -------------------------------------------------------------------------------


def test_logits_are_the_mean_of_the_returned_maps_class_channels():
    torch.manual_seed(0)
    net = AttentionNet(ResNet38(1 / 16), 3, PixelCorrelation((32, 64), (4, 8), 12)).eval()
    out = net(torch.randn(2, 3, 40, 48))
    torch.testing.assert_close(out.logits, out.maps[:, :3].mean(dim=(2, 3)))
    # ... which is not the pool of the head alone: the PCM term is part of it
    head_only = net.head(net.backbone(torch.randn(2, 3, 40, 48)).features)[:, :3].mean(dim=(2, 3))
    assert not torch.allclose(head_only, out.logits)


@pytest.mark.parametrize("name", ["local", "l2g", "l2g_shape"])
def test_the_local_classification_loss_trains_the_local_pcm(name):
    torch.manual_seed(1)
    method = build_method(tiny_config(name))
    _, _, loss_cls = method.local_forward(tiny_batch())  # Eq. 4 alone, with its graph
    pcm = method.local.pcm
    grads = torch.autograd.grad(loss_cls, [pcm.project_a.weight, pcm.project_b.weight, pcm.embed.weight])
    assert all(float(g.abs().max()) > 0 for g in grads)


@pytest.mark.parametrize("name", ["cam", "local", "l2g", "l2g_shape"])
def test_every_trained_parameter_gets_a_gradient_so_ddp_needs_no_unused_parameter_search(name):
    """What DDP's find_unused_parameters is for: a parameter that requires grad but gets none. With the
    logits pooled after the PCM, no method has one (ResNet-38 + PCM, the paper's network)."""
    torch.manual_seed(2)
    method = build_method(tiny_config(name))
    method.losses(tiny_batch())["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert Config().runtime.find_unused_parameters is False


# --- initialisation ----------------------------------------------------------------------------------------


def test_release_initialisation_distributions():
    """Head Xavier-uniform (bound sqrt(6 / (fan_in + fan_out))), PCM projections Kaiming-normal
    (std sqrt(2 / fan_in)), PCM embedding Xavier-uniform with gain 4, at the release's full sizes."""
    torch.manual_seed(3)
    backbone = SmallCNN(4)
    backbone.out_channels = 4096  # the head's fan-in as on ResNet-38; the backbone is not run
    net = AttentionNet(backbone, 20, PixelCorrelation((512, 1024), (64, 128), 192))
    cases = [  # (weight, fan_in, fan_out, expected std, uniform bound or None)
        (net.head.weight, 4096, 21, math.sqrt(2 / (4096 + 21)), math.sqrt(6 / (4096 + 21))),
        (net.pcm.project_a.weight, 512, 64, math.sqrt(2 / 512), None),
        (net.pcm.project_b.weight, 1024, 128, math.sqrt(2 / 1024), None),
        (net.pcm.embed.weight, 195, 192, 4 * math.sqrt(2 / (195 + 192)), 4 * math.sqrt(6 / (195 + 192))),
    ]
    for weight, fan_in, fan_out, std, bound in ((w.detach(), *rest) for w, *rest in cases):
        assert weight.shape[:2] == (fan_out, fan_in)
        assert float(weight.std()) == pytest.approx(std, rel=0.03)
        assert abs(float(weight.mean())) < 0.05 * std
        if bound is not None:  # uniform: every value inside the bound, and values near both ends
            assert float(weight.abs().max()) <= bound
            assert float(weight.max()) > 0.99 * bound and float(weight.min()) < -0.99 * bound
        else:  # normal: about 4.6% of the values lie beyond 2 std (a uniform with this std has none)
            assert 0.035 < float((weight.abs() > 2 * std).float().mean()) < 0.06


def test_head_init_options_torch_and_zero():
    """model.head_init: "torch" keeps nn.Conv2d's default (uniform, bound 1 / sqrt(fan_in)); "zero" starts
    every pixel at the uniform softmax; anything else is refused by the net and by the config."""
    torch.manual_seed(4)
    backbone = SmallCNN(4)
    backbone.out_channels = 320  # EfficientNet-Lite0's stride-8 width
    head = AttentionNet(backbone, 6, head_init="torch").head.weight.detach()
    bound = 1 / math.sqrt(320)
    assert float(head.abs().max()) <= bound and float(head.max()) > 0.99 * bound
    assert float(head.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    zero = AttentionNet(SmallCNN(4), 6, head_init="zero")
    out = zero(torch.rand(2, 3, 32, 32))
    probabilities = out.maps.softmax(dim=1)
    assert torch.allclose(probabilities, torch.full_like(probabilities, 1 / 7))
    with pytest.raises(ValueError, match="head_init 'kaiming'"):
        AttentionNet(SmallCNN(4), 6, head_init="kaiming")
    from l2g.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.head_init"):
        load_config("synth", ["model.head_init=kaiming"])


# --- the PCM's normalisation and propagation -----------------------------------------------------------------


def test_embedding_normalisation_is_f_over_norm_plus_1e5():
    f = torch.tensor([[[3e-6], [4e-6]], [[3.0], [4.0]]])  # (B=2, D=2, N=1): norms 5e-6 and 5
    out = normalize_embedding(f)
    # 3e-6 / (5e-6 + 1e-5) = 0.2, 4e-6 / 1.5e-5 = 0.26667; at norm 5 the epsilon is invisible: 0.6, 0.8
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.2, 4 / 15]))
    torch.testing.assert_close(out[1, :, 0], torch.tensor([0.6, 0.8]), rtol=1e-5, atol=0)


def test_pcm_with_a_tiny_embedding_follows_the_release_formula():
    """Two pixels with orthogonal embeddings of norm 1e-6: each is scaled by 1e-6 / (1e-6 + 1e-5) = 1/11,
    so aff[i, i] = 1/121 and column j of the normalised affinity is (1/121) / (1/121 + 1e-5) at j = i.
    F.normalize would have made them unit vectors (1 / (1 + 1e-5))."""
    embedding = normalize_embedding(torch.tensor([[[1e-6, 0.0], [0.0, 1e-6]]]))
    cam = torch.tensor([[[2.0, 3.0]]])  # (B, K=1, N=2)
    diagonal = (1 / 121) / (1 / 121 + 1e-5)
    torch.testing.assert_close(propagate(cam, embedding), torch.tensor([[[2.0 * diagonal, 3.0 * diagonal]]]))
    assert abs(diagonal - 1 / (1 + 1e-5)) > 1e-4  # the two formulas differ here


def _whole_affinity(cam: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """The propagation with the whole (N x N) affinity, written out as the method describes it."""
    affinity = torch.relu(embedding.transpose(1, 2) @ embedding)
    affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)
    return cam @ affinity


@pytest.mark.parametrize("chunk_elements", [1, 7 * 2 * 37, 2 * 37 * 37, 10**9])
def test_chunked_propagation_equals_the_whole_affinity_with_gradients(chunk_elements):
    gen = torch.Generator().manual_seed(4)
    cam = torch.randn(2, 5, 37, generator=gen, dtype=torch.float64).requires_grad_(True)
    raw = torch.randn(2, 6, 37, generator=gen, dtype=torch.float64).requires_grad_(True)
    upstream = torch.randn(2, 5, 37, generator=gen, dtype=torch.float64)
    chunked = propagate(cam, normalize_embedding(raw), chunk_elements)
    whole = _whole_affinity(cam, normalize_embedding(raw))
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((chunked * upstream).sum(), [cam, raw])
    expected = torch.autograd.grad((whole * upstream).sum(), [cam, raw])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_pcm_module_chunks_give_the_unchunked_map_in_float32():
    torch.manual_seed(5)
    pcm = PixelCorrelation((8, 16), (4, 8), 12)
    cam = torch.randn(2, 4, 9, 11, requires_grad=True)
    images = torch.randn(2, 3, 72, 88)
    feats = (torch.randn(2, 8, 9, 11), torch.randn(2, 16, 9, 11))
    whole = pcm(cam, images, feats)
    pcm.chunk_elements = 2 * 99 * 5  # 5 target pixels per chunk: 20 chunks
    chunked = pcm(cam, images, feats)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    g_whole = torch.autograd.grad(whole.sum(), [cam, pcm.embed.weight])
    g_chunk = torch.autograd.grad(chunked.sum(), [cam, pcm.embed.weight])
    for a, b in zip(g_chunk, g_whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_pcm_runs_in_float32_under_autocast():
    torch.manual_seed(6)
    pcm = PixelCorrelation((8, 16), (4, 8), 12)
    cam = torch.randn(1, 4, 5, 6)
    feats = (torch.randn(1, 8, 5, 6), torch.randn(1, 16, 5, 6))
    images = torch.randn(1, 3, 40, 48)
    with torch.autocast("cpu", dtype=torch.float16):
        out = pcm(cam.half(), images, feats)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, pcm(cam.half().float(), images, feats), rtol=2e-2, atol=2e-2)


# --- one L2G step under autocast ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["l2g", "l2g_shape"])
def test_one_l2g_step_under_autocast_has_finite_losses_and_float32_targets(name, dtype):
    """GPUs without bf16 (V100, T4) get float16 under amp: auto. The local network's map of a present
    class that is nowhere positive (here: its head row zeroed) made 0 / (0 + 1e-8) = NaN targets in
    float16; targets, softmax and losses are float32 now. Eval mode: no dropout, so the float32 and the
    autocast passes see the same network."""
    torch.manual_seed(7)
    method = build_method(tiny_config(name)).eval()
    with torch.no_grad():
        method.local.head.weight[0] = 0.0  # class 0 (present in image 0) has an all-zero local map
    batch = tiny_batch(3)
    reference = method.transfer(batch)
    captured = []
    method.local.register_forward_hook(lambda module, args, out: captured.append(out.maps.dtype))
    with torch.autocast("cpu", dtype=dtype):
        step = method.transfer(batch)
        losses = method.losses(batch)
    assert captured[0] == torch.float32  # the PCM's float32 output lifts the local map
    assert step.targets.dtype == torch.float32 and torch.isfinite(step.targets).all()
    assert all(bool(torch.isfinite(value)) for value in losses.values())
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)
    if dtype == torch.float16:  # within float16 rounding of the network's maps (measured: 0.0054)
        torch.testing.assert_close(step.targets, reference.targets, rtol=0, atol=0.02)
    else:  # bfloat16's 8-bit mantissa flips a few near-ties of keep-the-max (measured: 1.6% of pixels)
        same = step.targets.argmax(dim=1) == reference.targets.argmax(dim=1)
        assert float(same.float().mean()) >= 0.95


def test_half_precision_local_maps_without_pcm_still_give_finite_targets():
    """Without a PCM the local map stays float16 under autocast: the targets cast it to float32."""
    torch.manual_seed(8)
    config = tiny_config("l2g")
    config.model.pcm = False
    method = build_method(config).eval()
    with torch.no_grad():
        method.local.head.weight[0] = 0.0
    batch = tiny_batch(4)
    with torch.autocast("cpu", dtype=torch.float16):
        local = method.local(batch["image"][:, :, :32, :32])
        step = method.transfer(batch)
    assert local.maps.dtype == torch.float16
    assert step.targets.dtype == torch.float32 and torch.isfinite(step.targets).all()
    assert bool(torch.isfinite(method.losses(batch)["loss"]))

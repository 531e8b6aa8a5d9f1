"""The training step of each method: which network each loss reaches, on a tiny random batch."""

import pytest
import torch

from l2g.config import load_config
from l2g.method.methods import CamMethod, L2GMethod, LocalMethod, Method, build_method, method_class
from l2g.method.registry import METHODS


def tiny_config(method: str, *extra: str):
    return load_config(None, [
        f"method.name={method}", "data.num_classes=3", "data.global_size=32", "views.patch_size=24",
        "views.n=4", "model.width=4", *extra,
    ])


def tiny_batch(with_saliency: bool) -> dict:
    torch.manual_seed(0)
    boxes = torch.tensor([[0, 0, 24, 24], [8, 0, 32, 24], [0, 8, 24, 32], [8, 8, 32, 32]])
    batch = {
        "image": torch.randn(2, 3, 32, 32),
        "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "boxes": boxes[None].repeat(2, 1, 1),
    }
    if with_saliency:
        batch["saliency"] = torch.rand(2, 1, 32, 32)
    return batch


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,cls", [("cam", CamMethod), ("local", LocalMethod), ("l2g", L2GMethod),
                                      ("l2g_shape", L2GMethod)])
def test_build_method_and_losses_are_finite(name, cls):
    method = build_method(tiny_config(name))
    assert isinstance(method, cls)
    losses = method.losses(tiny_batch(method.uses_saliency))
    assert torch.isfinite(losses["loss"])
    assert losses["loss"].requires_grad
    assert method.uses_saliency == (name == "l2g_shape")


def test_every_method_row_resolves_to_a_method_class():
    """The torch-free table (l2g.method.registry) names each method's class; l2g.method.methods resolves it."""
    for name, entry in METHODS.items():
        cls = method_class(name)
        assert issubclass(cls, Method) and cls.__name__ == entry.cls
    with pytest.raises(ValueError, match="unknown method"):
        method_class("nope")


def grads(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for p in module.parameters()]
    found = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]


@pytest.mark.parametrize("name", ["l2g", "l2g_shape"])
def test_transfer_reaches_only_the_global_network_and_classification_only_the_local(name):
    method = build_method(tiny_config(name, "model.pcm=true"))
    method.eval()  # no BatchNorm statistics update: two forward passes of one batch agree exactly
    batch = tiny_batch(method.uses_saliency)
    total = method.losses(batch)["loss"]  # loss_cls + lam * loss_kt, with its graph
    _, _, loss_cls = method.local_forward(batch)
    # The local network's gradient is its classification loss's alone: targets are detached.
    for full, cls_only in zip(grads(total, method.local), grads(loss_cls, method.local), strict=True):
        torch.testing.assert_close(full, cls_only)
    # The global network gets a gradient (from transfer), and none from the local classification loss.
    assert sum(float(g.abs().sum()) for g in grads(total, method.global_net)) > 0
    assert all(float(g.abs().sum()) == 0 for g in grads(loss_cls, method.global_net))


def test_global_classification_loss_is_logged_not_trained():
    method = build_method(tiny_config("l2g"))
    method.eval()
    losses = method.losses(tiny_batch(False))
    assert not losses["loss_cls_global"].requires_grad
    lam = method.config.method.lam
    torch.testing.assert_close(losses["loss"].detach(), losses["loss_cls"] + lam * losses["loss_kt"])
    method.config.method.global_cls_weight = 1.0  # the paper's ablation: now it is trained
    weighted = method.losses(tiny_batch(False))
    torch.testing.assert_close(weighted["loss"].detach(), losses["loss"].detach() + weighted["loss_cls_global"])


def test_shared_backbone_is_one_module():
    method = build_method(tiny_config("l2g", "model.shared_backbone=true"))
    assert method.global_net.backbone is method.local.backbone
    assert method.global_net.head is not method.local.head
    separate = build_method(tiny_config("l2g"))
    assert separate.global_net.backbone is not separate.local.backbone


def test_l2g_logs_the_stuck_share_of_its_own_transfer():
    from l2g.method.diagnostics import stuck_share

    method = build_method(tiny_config("l2g"))
    method.eval()
    batch = tiny_batch(False)
    losses = method.losses(batch)
    step = method.transfer(batch)
    assert not losses["kt_stuck"].requires_grad
    torch.testing.assert_close(losses["kt_stuck"], stuck_share(step.crops, step.targets))
    assert "kt_stuck" not in build_method(tiny_config("cam")).losses(batch)


def test_an_unknown_method_name_is_an_error_not_l2g():
    config = tiny_config("l2g")
    config.method.name = "l2g_shaped"  # set in code, past the config's own check
    with pytest.raises(ValueError, match=r"method.name = 'l2g_shaped': unknown method \(one of cam, local, l2g"):
        build_method(config)
    with pytest.raises(ValueError, match="method.name"):
        tiny_config("l2gshape")  # and from a config file or --set


def test_shape_background_option_reaches_the_targets():
    """method.shape_background=attention gives the COCO script's A_bg * (1 - S): the background targets
    differ from the VOC form's B_bg * (1 - S), the class targets do not."""
    targets = {}
    for form in ("binary", "attention"):
        torch.manual_seed(3)
        method = build_method(tiny_config("l2g_shape", "method.background=release", "method.shape_form=release",
                                          f"method.shape_background={form}"))
        targets[form] = method.transfer(tiny_batch(with_saliency=True)).targets
    torch.testing.assert_close(targets["binary"][:, :-1], targets["attention"][:, :-1])
    assert not torch.allclose(targets["binary"][:, -1], targets["attention"][:, -1])


def test_view_gate_option_reaches_the_targets():
    """method.view_gate=hard: a class the local classifier scores below 0 on a view teaches nothing there.

    The local network's output is replaced by hand-made maps and logits, so the gate's effect is exact."""
    from l2g.method.targets import attention_targets
    from l2g.models.attention_net import NetOutput

    config = tiny_config("l2g", "method.background=complement", "method.view_gate=hard")
    method = build_method(config)
    batch = tiny_batch(with_saliency=False)
    torch.manual_seed(5)
    maps = torch.rand(8, 4, 3, 3)  # 2 images x 4 views, C + 1 = 4 channels
    logits = torch.tensor([[1.0, -1.0, 2.0]] * 4 + [[-1.0, -2.0, 1.0]] * 4)
    method.local.forward = lambda views: NetOutput(maps=maps, logits=logits)
    gated = method.transfer(batch).targets
    labels = batch["labels"].repeat_interleave(4, dim=0)
    presence = (logits > 0).float()
    torch.testing.assert_close(gated, attention_targets(maps, labels, "complement", presence=presence))
    # image 1 is labelled class 1 only, which its views score < 0: all its views teach background alone
    assert (gated[4:, :3] == 0).all() and (gated[4:, 3] > 0).all()
    method.config.method.view_gate = "off"
    torch.testing.assert_close(method.transfer(batch).targets, attention_targets(maps, labels, "complement"))

"""The stuck-transfer diagnostic (l2g.method.diagnostics) on hand-built scores and targets."""

import math

import pytest
import torch

from l2g.method.diagnostics import StuckMonitor, stuck_share


def scores_for(probabilities: list[list[float]]) -> torch.Tensor:
    """(1, K, 1, P) raw scores whose softmax over K is the given per-pixel distributions (P of them)."""
    logp = torch.tensor(probabilities).log().T  # (K, P)
    return logp[None, :, None, :]


def targets_for(columns: list[list[float]]) -> torch.Tensor:
    return torch.tensor(columns).T[None, :, None, :]


def test_stuck_counts_class_pixels_where_the_global_is_sure_of_another_channel():
    # Channels: class 0, class 1, background. Four pixels:
    #   1. taught class 0, global 0.9995 background -> stuck
    #   2. taught class 1, global 0.998 background  -> wrong but not sure enough (< 0.999): not stuck
    #   3. taught class 0, global 0.9995 class 0    -> right: not stuck
    #   4. taught background, global 0.9995 class 1 -> background pixels are not counted
    targets = targets_for([[0.7, 0, 0], [0, 0.4, 0], [0.9, 0, 0], [0, 0, 0.8]])
    scores = scores_for([[0.00025, 0.00025, 0.9995], [0.001, 0.001, 0.998], [0.9995, 0.00025, 0.00025],
                         [0.00025, 0.9995, 0.00025]])
    assert stuck_share(scores, targets).item() == pytest.approx(1 / 3)


def test_a_class_sure_of_the_wrong_class_is_stuck_too():
    targets = targets_for([[0.6, 0, 0]])
    scores = scores_for([[0.0002, 0.9996, 0.0002]])
    assert stuck_share(scores, targets).item() == 1.0
    assert stuck_share(scores, targets, confidence=0.99999).item() == 0.0  # the confidence is a parameter


def test_all_zero_target_columns_are_not_taught_and_nothing_taught_gives_zero():
    # The release's targets can be all zero at a pixel (no channel survives): nothing is taught there.
    targets = targets_for([[0, 0, 0], [0, 0, 0.5]])
    scores = scores_for([[0.9998, 0.0001, 0.0001], [0.9998, 0.0001, 0.0001]])
    value = stuck_share(scores, targets)
    assert value.item() == 0.0 and not value.requires_grad


def test_stuck_share_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="global crops"):
        stuck_share(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))


def test_monitor_waits_for_a_full_window_then_warns_once():
    monitor = StuckMonitor(threshold=0.5, window=3)
    assert monitor.update({"iteration": 0, "kt_stuck": 0.9}) is None  # window not full yet
    assert monitor.update({"iteration": 10, "kt_stuck": 0.9}) is None
    warning = monitor.update({"iteration": 20, "kt_stuck": 0.9})
    assert warning is not None and "iteration 20" in warning and "90%" in warning
    assert monitor.warning == warning
    assert monitor.update({"iteration": 30, "kt_stuck": 1.0}) is None  # said once


def test_monitor_judges_the_mean_of_the_last_window_and_skips_records_without_the_value():
    monitor = StuckMonitor(threshold=0.5, window=2)
    assert monitor.update({"iteration": 0, "kt_stuck": 0.25}) is None
    assert monitor.update({"iteration": 1, "kt_stuck": 0.625}) is None  # mean 0.4375
    assert monitor.update({"iteration": 2, "loss": 1.0}) is None  # no kt_stuck (a cam run): skipped
    assert monitor.update({"iteration": 3, "kt_stuck": 0.375}) == monitor.warning  # (0.625 + 0.375) / 2 = 0.5
    assert "iteration 3" in monitor.warning and "50%" in monitor.warning


def test_monitor_stays_quiet_on_healthy_values():
    monitor = StuckMonitor()
    for iteration in range(100):
        assert monitor.update({"iteration": iteration, "kt_stuck": 0.05 * math.sin(iteration) ** 2}) is None
    assert monitor.warning is None


def test_the_warning_says_what_to_change():
    from l2g.method.diagnostics import stuck_advice

    advice = stuck_advice("mse", 0.0)
    assert "--set method.transfer_loss=kl" in advice and "pretrained_l2g" in advice
    monitor = StuckMonitor(threshold=0.5, window=1, advice=advice)
    assert monitor.update({"iteration": 7, "kt_stuck": 1.0}).endswith(advice)
    # a run that already has the remedy is told something else than to switch to it
    already = stuck_advice("kl", 1.0)
    assert "already uses method.transfer_loss=kl" in already and "lam_warmup_epochs=1" not in already
    assert "lam_warmup_epochs=1" in stuck_advice("kl", 0.0)
    # a kl run with the release's head is told to start the head at zero; one that has it is not
    assert "--set model.head_init=zero" in stuck_advice("kl", 1.0, "xavier")
    assert "head_init" not in stuck_advice("kl", 1.0, "zero")

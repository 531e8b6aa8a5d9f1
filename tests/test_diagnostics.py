"""The stuck-transfer diagnostic (l2g.method.diagnostics) on hand-built scores and targets."""

import math

import pytest
import torch

from l2g.method.diagnostics import ContrastMonitor, StuckMonitor, stuck_share, taught_contrast, transfer_diagnostics


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


def test_contrast_compares_each_class_where_taught_with_where_background_is_taught_in_the_same_view():
    # Channels: class 0, class 1, background. View 1, five pixels:
    #   taught class 0 twice (global gives class 0 0.6 and 0.4), class 1 once (class 1: 0.5),
    #   background twice (class 0: 0.2 and 0.1; class 1: 0.1 and 0.3).
    # Pairs: class 0: a = 0.5, b = 0.15; class 1: a = 0.5, b = 0.2 -> mean(a) / mean(b) = 0.5 / 0.175.
    # View 2 teaches class 0 everywhere and no background: no pair, so its (very wrong) scores do not count.
    view1_targets = targets_for([[0.7, 0, 0], [0.5, 0, 0], [0, 0, 0.8], [0, 0.9, 0], [0, 0, 0.6]])
    view1_scores = scores_for([[0.6, 0.1, 0.3], [0.4, 0.2, 0.4], [0.2, 0.1, 0.7], [0.1, 0.5, 0.4], [0.1, 0.3, 0.6]])
    view2_targets = targets_for([[0.9, 0, 0]] * 5)
    view2_scores = scores_for([[0.01, 0.01, 0.98]] * 5)
    value = taught_contrast(torch.cat([view1_scores, view2_scores]), torch.cat([view1_targets, view2_targets]))
    assert value.item() == pytest.approx(0.5 / 0.175)
    assert not value.requires_grad


def test_contrast_is_one_for_a_network_that_answers_every_pixel_alike_or_when_nothing_compares():
    targets = targets_for([[0.7, 0, 0], [0, 0, 0.8], [0, 0.4, 0], [0, 0, 0]])
    same_everywhere = scores_for([[0.2, 0.3, 0.5]] * 4)
    assert taught_contrast(same_everywhere, targets).item() == pytest.approx(1.0)  # a collapsed global network
    only_classes = targets_for([[0.7, 0, 0], [0, 0.4, 0]])
    assert taught_contrast(scores_for([[0.9, 0.05, 0.05]] * 2), only_classes).item() == 1.0
    with pytest.raises(ValueError, match="global crops"):
        taught_contrast(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))


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


def test_contrast_monitor_judges_the_mean_of_the_last_full_window_at_the_end():
    monitor = ContrastMonitor(window=3, level=1.1, advice="Try this.")
    for iteration, value in enumerate([1.0, 1.0, 1.0, 2.0, 1.2, 1.0]):
        monitor.update({"iteration": 10 * iteration, "kt_contrast": value})
    assert monitor.finish() is None  # last three: (2.0 + 1.2 + 1.0) / 3 = 1.4; the early 1.0s do not count
    monitor.update({"iteration": 60, "loss": 1.0})  # no kt_contrast (a cam run): skipped
    for iteration, value in [(70, 1.1), (80, 1.0)]:
        monitor.update({"iteration": iteration, "kt_contrast": value})
    warning = monitor.finish()  # (1.0 + 1.1 + 1.0) / 3 = 1.033 < 1.1
    assert warning is not None and warning.startswith("attention transfer failed")
    assert "iterations 50-80" in warning and "1.03x" in warning and "below 1.1" in warning
    assert warning.endswith("Try this.")


def test_contrast_monitor_says_nothing_before_a_full_window():
    monitor = ContrastMonitor(window=10)
    for iteration in range(9):
        monitor.update({"iteration": iteration, "kt_contrast": 1.0})
    assert monitor.finish() is None
    monitor.update({"iteration": 9, "kt_contrast": 1.0})
    assert monitor.finish() is not None


def test_transfer_diagnostics_give_both_values_from_one_reading_of_the_step():
    targets = targets_for([[0.7, 0, 0], [0, 0.4, 0], [0, 0, 0.8], [0.9, 0, 0]])
    scores = scores_for([[0.00025, 0.00025, 0.9995], [0.1, 0.6, 0.3], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3]])
    logged = transfer_diagnostics(scores, targets)
    assert list(logged) == ["kt_stuck", "kt_contrast"]  # the order L2G runs log them in
    assert logged["kt_stuck"].item() == pytest.approx(1 / 3)  # pixel 1 of the three taught a class
    assert logged["kt_stuck"].item() == stuck_share(scores, targets).item()
    assert logged["kt_contrast"].item() == taught_contrast(scores, targets).item()
    # class 0: a = (0.00025 + 0.6) / 2, b = 0.2; class 1: a = 0.6, b = 0.1
    assert logged["kt_contrast"].item() == pytest.approx(((0.00025 + 0.6) / 2 + 0.6) / 2 / ((0.2 + 0.1) / 2))

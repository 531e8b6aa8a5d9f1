"""Hand-computed tests for l2g.method.targets (attention targets and shape transfer targets).

Maps are (V, K, h, w) with the background channel LAST. Every expected tensor is written out by hand.
Values used against thresholds are dyadic (exact in float32) so "strictly greater" is tested exactly.
"""

import pytest
import torch

from l2g.method.targets import (
    attention_targets,
    keep_the_max,
    normalize_attention,
    shape_targets,
    view_presence,
)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


# --- normalize_attention -------------------------------------------------------------------------


def test_normalize_attention_relu_and_per_channel_max():
    # channel 0: [-1, 2, 4] -> ReLU [0, 2, 4] -> / 4 -> [0, 0.5, 1]
    # channel 1: [1, 3, 6]  -> / 6 -> [1/6, 0.5, 1]
    maps = t([[[[-1.0, 2.0, 4.0]], [[1.0, 3.0, 6.0]]]])
    expected = t([[[[0.0, 0.5, 1.0]], [[1 / 6, 0.5, 1.0]]]])
    torch.testing.assert_close(normalize_attention(maps), expected, atol=1e-6, rtol=0)


def test_normalize_attention_is_per_sample():
    # sample 0 max 2, sample 1 max 8: the same raw value 2 becomes 1.0 and 0.25
    maps = t([[[[2.0, 1.0]]], [[[2.0, 8.0]]]])
    expected = t([[[[1.0, 0.5]]], [[[0.25, 1.0]]]])
    torch.testing.assert_close(normalize_attention(maps), expected, atol=1e-6, rtol=0)


def test_normalize_attention_all_negative_channel_is_zero_not_nan():
    maps = t([[[[-3.0, -1.0]], [[0.0, 0.0]]]])
    out = normalize_attention(maps)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.zeros(1, 2, 1, 2))


def test_normalize_attention_eps_in_denominator():
    # [1, 3] / (3 + 1) = [0.25, 0.75]
    maps = t([[[[1.0, 3.0]]]])
    torch.testing.assert_close(normalize_attention(maps, eps=1.0), t([[[[0.25, 0.75]]]]))


# --- keep_the_max --------------------------------------------------------------------------------


def test_keep_the_max_one_survivor_and_first_channel_wins_ties():
    # pixels (channels listed per pixel):
    #   p0 [1, 3, 2] -> [0, 3, 0]
    #   p1 [5, 5, 1] -> tie between ch0 and ch1: ch0 keeps -> [5, 0, 0]
    #   p2 [0, 0, 0] -> [0, 0, 0]
    #   p3 [-1, -2, -3] -> ch0 is the max -> [-1, 0, 0]
    maps = t([[[[1.0, 5.0, 0.0, -1.0]], [[3.0, 5.0, 0.0, -2.0]], [[2.0, 1.0, 0.0, -3.0]]]])
    expected = t([[[[0.0, 5.0, 0.0, -1.0]], [[3.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    out = keep_the_max(maps)
    torch.testing.assert_close(out, expected)
    assert ((out != 0).sum(dim=1) <= 1).all()


def test_keep_the_max_tie_three_way_goes_to_channel_zero():
    maps = t([[[[0.5]], [[0.5]], [[0.5]]]])
    torch.testing.assert_close(keep_the_max(maps), t([[[[0.5]], [[0.0]], [[0.0]]]]))


# --- attention_targets ---------------------------------------------------------------------------

# C = 2 classes + background (last). Raw local maps for one view, 3 pixels:
#   class 0: [4, 1, 0] -> normalised [1, 0.25, 0]
#   class 1: [2, 8, 4] -> normalised [0.25, 1, 0.5]
#   bg     : [1, 2, 4] -> normalised [0.25, 0.5, 1]
LOCAL = t([[[[4.0, 1.0, 0.0]], [[2.0, 8.0, 4.0]], [[1.0, 2.0, 4.0]]]])


def test_release_background_absent_class_zeroed_before_keep_the_max():
    # labels [1, 0]: class 1 is absent -> zeroed BEFORE keep-the-max, so it never wins pixel 1
    # (where its normalised value 1.0 is the largest of all).
    # p0: [1, 0, 0.25] -> class 0 keeps 1
    # p1: [0.25, 0, 0.5] -> bg keeps 0.5
    # p2: [0, 0, 1] -> bg keeps 1 (background is never zeroed, even when large)
    out = attention_targets(LOCAL, t([[1.0, 0.0]]), background="release")
    expected = t([[[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.5, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_release_background_all_classes_present():
    # labels [1, 1]: p0 [1, .25, .25] -> c0; p1 [.25, 1, .5] -> c1; p2 [0, .5, 1] -> bg
    out = attention_targets(LOCAL, t([[1.0, 1.0]]), background="release")
    expected = t([[[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_release_background_no_class_present_keeps_only_background():
    out = attention_targets(LOCAL, t([[0.0, 0.0]]), background="release")
    expected = t([[[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.25, 0.5, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_release_background_per_view_labels():
    # two views of the same maps, view 0 labels [1, 0], view 1 labels [0, 1]
    maps = torch.cat([LOCAL, LOCAL])
    out = attention_targets(maps, t([[1.0, 0.0], [0.0, 1.0]]), background="release")
    # view 1: p0 [0, .25, .25] -> tie c1 vs bg -> c1 (first) keeps .25; p1 [0, 1, .5] -> c1; p2 [0, .5, 1] -> bg
    expected_view1 = t([[[0.0, 0.0, 0.0]], [[0.25, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])
    torch.testing.assert_close(out[0], t([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.5, 1.0]]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], expected_view1, atol=1e-6, rtol=0)


def test_complement_background_is_one_minus_max_present_class():
    # labels [1, 0]: present classes [1, .25, 0] and [0, 0, 0]; bg = 1 - max = [0, .75, 1]
    # p0: [1, 0, 0] -> c0; p1: [.25, 0, .75] -> bg .75; p2: [0, 0, 1] -> bg 1
    out = attention_targets(LOCAL, t([[1.0, 0.0]]), background="complement")
    expected = t([[[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.75, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_complement_background_tie_goes_to_the_class():
    # labels [1, 1]: max class = [1, 1, .5] -> bg = [0, 0, .5]
    # p2: class 1 = .5 and bg = .5 tie -> class 1 (first) keeps it; the local bg channel (1.0) is ignored
    out = attention_targets(LOCAL, t([[1.0, 1.0]]), background="complement")
    expected = t([[[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_complement_background_no_class_present_is_all_background():
    out = attention_targets(LOCAL, t([[0.0, 0.0]]), background="complement")
    expected = t([[[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_attention_targets_are_detached():
    maps = LOCAL.clone().requires_grad_(True)
    out = attention_targets(maps, t([[1.0, 1.0]]))
    assert not out.requires_grad


def test_attention_targets_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="channels"):
        attention_targets(LOCAL[:, :2], t([[1.0, 0.0]]))  # 2 channels for C = 2 (needs 3)
    with pytest.raises(ValueError, match="channels"):
        attention_targets(LOCAL, t([[1.0, 0.0, 1.0]]))  # 3 channels for C = 3 (needs 4)


def test_attention_targets_unknown_background_raises():
    with pytest.raises(ValueError, match="background"):
        attention_targets(LOCAL, t([[1.0, 0.0]]), background="zero")


# --- shape_targets -------------------------------------------------------------------------------

# Two views, C = 2, 1x2 maps. Threshold 0.25 (strictly greater).
#   view 0: class 0 [0.75, 0.125], class 1 [0, 0.5], bg [0.5, 0.25]; saliency [0.25, 1.0]
#     B: c0 [1, 0], c1 [0, 1], bg [1, 0] (0.25 is NOT > 0.25)
#     shaped: c0 = B*S [0.25, 0], c1 = B*S [0, 1], bg = B*(1 - S) [0.75, 0]
#   view 1: class 0 [0.5, 0], class 1 [0, 0], bg [0.375, 1.0]; saliency [0, 0] (empty)
#     release: classes B*0 = 0, bg B*(1 - 0) = [1, 1];  paper: the attention target unchanged
TARGETS = t(
    [
        [[[0.75, 0.125]], [[0.0, 0.5]], [[0.5, 0.25]]],
        [[[0.5, 0.0]], [[0.0, 0.0]], [[0.375, 1.0]]],
    ]
)
SALIENCY = t([[[[0.25, 1.0]]], [[[0.0, 0.0]]]])
SHAPED_VIEW0 = t([[[0.25, 0.0]], [[0.0, 1.0]], [[0.75, 0.0]]])


def test_shape_targets_release_form():
    out = shape_targets(TARGETS, SALIENCY, threshold=0.25, form="release")
    torch.testing.assert_close(out[0], SHAPED_VIEW0)
    torch.testing.assert_close(out[1], t([[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]]))


def test_shape_targets_paper_form_keeps_attention_on_empty_saliency():
    out = shape_targets(TARGETS, SALIENCY, threshold=0.25, form="paper")
    torch.testing.assert_close(out[0], SHAPED_VIEW0)  # non-empty view in the same batch is still shaped
    torch.testing.assert_close(out[1], TARGETS[1])


def test_shape_targets_threshold_is_strictly_greater():
    # values 0.125, 0.25, 0.375 against threshold 0.25 -> B = [0, 0, 1]; saliency 1 on all pixels
    targets = t([[[[0.125, 0.25, 0.375]], [[0.125, 0.25, 0.375]]]])
    saliency = torch.ones(1, 1, 1, 3)
    out = shape_targets(targets, saliency, threshold=0.25, form="release")
    torch.testing.assert_close(out, t([[[[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]]]]))
    # with a lower threshold the 0.25 pixel switches on
    out = shape_targets(targets, saliency, threshold=0.125, form="release")
    torch.testing.assert_close(out, t([[[[0.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]]]]))


def test_shape_targets_shape_mismatch_raises():
    with pytest.raises(ValueError):
        shape_targets(TARGETS, torch.zeros(2, 2, 1, 2), 0.1)  # two saliency channels
    with pytest.raises(ValueError):
        shape_targets(TARGETS, torch.zeros(1, 1, 1, 2), 0.1)  # one view instead of two
    with pytest.raises(ValueError):
        shape_targets(TARGETS, torch.zeros(2, 1, 2, 1), 0.1)  # transposed map


def test_shape_targets_unknown_form_raises():
    with pytest.raises(ValueError, match="form"):
        shape_targets(TARGETS, SALIENCY, 0.25, form="eq7")


# The COCO script's background form A_bg * (1 - S) on the same views (threshold 0.25):
#   view 0: bg A [0.5, 0.25], S [0.25, 1.0] -> [0.5 * 0.75, 0.25 * 0] = [0.375, 0]  (VOC form: [0.75, 0])
#   view 1: bg A [0.375, 1.0], S [0, 0]    -> [0.375, 1.0]                          (VOC form: [1, 1])
# The class channels are B * S in both forms.
def test_shape_targets_attention_background_is_the_coco_scripts_form():
    out = shape_targets(TARGETS, SALIENCY, threshold=0.25, form="release", background="attention")
    torch.testing.assert_close(out[0], t([[[0.25, 0.0]], [[0.0, 1.0]], [[0.375, 0.0]]]))
    torch.testing.assert_close(out[1], t([[[0.0, 0.0]], [[0.0, 0.0]], [[0.375, 1.0]]]))
    binary = shape_targets(TARGETS, SALIENCY, threshold=0.25, form="release", background="binary")
    torch.testing.assert_close(binary, shape_targets(TARGETS, SALIENCY, threshold=0.25, form="release"))
    torch.testing.assert_close(binary[:, :-1], out[:, :-1])
    # with the paper's form the empty view keeps its attention target whatever the background form
    paper = shape_targets(TARGETS, SALIENCY, threshold=0.25, form="paper", background="attention")
    torch.testing.assert_close(paper[1], TARGETS[1])
    with pytest.raises(ValueError, match="background"):
        shape_targets(TARGETS, SALIENCY, 0.25, background="soft")


# --- float16 / bfloat16 inputs (autocast) ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_targets_from_half_precision_maps_are_float32_and_finite(dtype):
    """A present class whose map has no positive value: 0 / (0 + 1e-8) must stay 0 (in float16 the 1e-8
    rounds to 0 and gave NaN). Values are those of the float32 targets of the same (rounded) maps."""
    maps = torch.cat([LOCAL, -LOCAL.abs() - 1.0])  # view 1: every channel negative everywhere
    labels = t([[1.0, 1.0], [1.0, 1.0]])
    half = maps.to(dtype)
    out = attention_targets(half, labels, background="release")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, attention_targets(half.float(), labels, background="release"))
    torch.testing.assert_close(out[1], torch.zeros(3, 1, 3))
    shaped = shape_targets(out.to(dtype), torch.ones(2, 1, 1, 3, dtype=dtype), 0.001, form="release")
    assert shaped.dtype == torch.float32
    torch.testing.assert_close(shaped, shape_targets(out.to(dtype).float(), torch.ones(2, 1, 1, 3), 0.001,
                                                     form="release"))


# --- view gating (method.view_gate) ---------------------------------------------------------------


def test_view_presence_off_soft_hard():
    # logits [0, ln 3, -ln 3]: sigmoid = [0.5, 0.75, 0.25]; hard keeps only strictly positive logits
    logits = t([[0.0, 1.0986123, -1.0986123]])
    assert view_presence(logits, "off") is None
    torch.testing.assert_close(view_presence(logits, "soft"), t([[0.5, 0.75, 0.25]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(view_presence(logits, "hard"), t([[0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown view gate"):
        view_presence(logits, "maybe")


def test_view_presence_is_detached():
    logits = t([[2.0, -2.0]]).requires_grad_(True)
    assert not view_presence(logits, "soft").requires_grad


def test_presence_soft_scales_the_class_then_complement_background():
    # labels [1, 1], presence [0.5, 1]: class 0 [1, .25, 0] -> [.5, .125, 0]; class 1 [.25, 1, .5] unchanged
    # bg = 1 - max = [.5, 0, .5]
    # p0: [.5, .25, .5] -> tie c0 vs bg -> c0 keeps .5; p1: [.125, 1, 0] -> c1 1; p2: [0, .5, .5] -> c1 .5
    out = attention_targets(LOCAL, t([[1.0, 1.0]]), background="complement", presence=t([[0.5, 1.0]]))
    expected = t([[[[0.5, 0.0, 0.0]], [[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_presence_hard_zero_hands_the_class_pixels_to_background():
    # labels [1, 0] with presence [0, 1]: the view's classifier says class 0 is absent, so the view teaches
    # background everywhere (complement: 1 - 0), where ungated it taught class 0 at p0 with 1.0.
    out = attention_targets(LOCAL, t([[1.0, 0.0]]), background="complement", presence=t([[0.0, 1.0]]))
    expected = t([[[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_presence_with_release_background():
    # labels [1, 1], presence [0.25, 1]: class 0 -> [.25, .0625, 0]; class 1 [.25, 1, .5]; bg [.25, .5, 1]
    # p0: [.25, .25, .25] -> three-way tie -> c0 keeps .25; p1 -> c1 1; p2 -> bg 1
    out = attention_targets(LOCAL, t([[1.0, 1.0]]), background="release", presence=t([[0.25, 1.0]]))
    expected = t([[[[0.25, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_presence_of_ones_changes_nothing_and_wrong_shape_raises():
    labels = t([[1.0, 0.0]])
    torch.testing.assert_close(attention_targets(LOCAL, labels, "complement", presence=torch.ones(1, 2)),
                               attention_targets(LOCAL, labels, "complement"))
    with pytest.raises(ValueError, match="presence"):
        attention_targets(LOCAL, labels, presence=torch.ones(1, 3))

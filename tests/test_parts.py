import numpy as np

from l2g.data.synth import SynthSpec, render
from l2g.evaluation.parts import PartBodyAttention


def test_part_body_attention_hand_computed():
    mask = np.array([[1, 1, 0],
                     [1, 2, 255]], np.uint8)
    parts = np.array([[True, False, False],
                      [False, True, False]])
    cams = {0: np.array([[1.0, 0.5, 0.2],
                         [0.3, 0.9, 0.7]], np.float32)}
    meter = PartBodyAttention()
    meter.update(cams, mask, parts)
    result = meter.results()
    assert result["part"] == 1.0  # class 0's only part pixel (the class-1 part does not count)
    assert np.isclose(result["body"], (0.5 + 0.3) / 2)
    assert np.isclose(result["background"], 0.2)  # the 255 pixel is neither


def test_part_body_attention_empty_is_none():
    assert PartBodyAttention().results() == {"part": None, "body": None, "background": None}


def test_synth_parts_lie_inside_their_objects_and_are_small():
    rng = np.random.default_rng(3)
    for _ in range(5):
        image, mask, saliency, classes, parts = render(SynthSpec(), rng)
        assert parts.shape == mask.shape and parts.dtype == bool
        assert not (parts & (mask == 0)).any()
        for cls in classes:
            own = mask == cls + 1
            if own.any():  # a smaller part than body: the part is the small discriminative region
                assert (parts & own).sum() < 0.5 * own.sum()


def test_classes_of_one_family_share_a_body_texture_but_not_a_part():
    from l2g.data.synth import class_style

    styles = [class_style(c, 6, family_size=2) for c in range(6)]
    assert (styles[0]["body_hue"], styles[0]["angle"]) == (styles[1]["body_hue"], styles[1]["angle"])
    assert (styles[2]["body_hue"], styles[2]["angle"]) == (styles[3]["body_hue"], styles[3]["angle"])
    assert styles[0]["body_hue"] != styles[2]["body_hue"] and styles[2]["body_hue"] != styles[4]["body_hue"]
    parts = {tuple(np.round(style["part_rgb"], 3)) for style in styles}
    assert len(parts) == 6  # the part alone tells the classes apart

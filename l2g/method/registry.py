"""The method domain's name tables, torch-free, so the config validates them without importing torch.

Each table is owned here and read by the code that implements it (:mod:`l2g.method.methods`,
:mod:`l2g.method.losses`, :mod:`l2g.method.targets`, :mod:`l2g.method.attention_maps`) and by
:mod:`l2g.config.validation`. A table that names functions or classes names them by their attribute in
the implementing module, which resolves the name (a test checks that every row resolves).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodEntry:
    """One training method (``method.name``): what the torch-free code needs to know of it.

    ``cls``: its :class:`l2g.method.methods.Method` subclass, by name (the class says what it trains, e.g.
    ``transfers``). ``title``: its name in tables. ``shape_transfer``: its attention targets are shaped by
    saliency maps (Eq. 7), so its data reads them (two rows share ``L2GMethod``). ``maps``: how
    ``cams.source: auto`` reads its attention maps, ``"logits"`` or ``"softmax"`` (over the classes +
    background: what attention transfer trains the global network on).
    """

    cls: str
    title: str
    shape_transfer: bool = False
    maps: str = "logits"


METHODS: dict[str, MethodEntry] = {
    "cam": MethodEntry("CamMethod", "CAM baseline"),
    "local": MethodEntry("LocalMethod", "Local network only"),
    "l2g": MethodEntry("L2GMethod", "L2G", maps="softmax"),
    "l2g_shape": MethodEntry("L2GMethod", "L2G + shape", shape_transfer=True, maps="softmax"),
}
METHOD_NAMES = tuple(METHODS)

# method.transfer_loss -> its function in l2g.method.losses: "mse" (Eq. 6), "kl" (soft cross-entropy).
TRANSFER_LOSSES = {"mse": "attention_transfer_loss", "kl": "soft_transfer_loss"}
# method.background: the attention targets' background channel (l2g.method.targets.attention_targets).
BACKGROUNDS = ("release", "complement")
# method.shape_form / method.shape_background: shape transfer's variants (l2g.method.targets.shape_targets).
SHAPE_FORMS = ("release", "paper")
SHAPE_BACKGROUNDS = ("binary", "attention")
# cams.resize: how a test image is resized per scale (l2g.method.attention_maps.scaled_inputs); cams.upsample: the
# torch interpolation mode that brings each scale's maps to the image size (l2g.method.attention_maps.multiscale_maps).
MAP_RESIZES = ("pil_bicubic", "tensor_bilinear")
MAP_UPSAMPLES = ("bicubic", "bilinear")

# method.view_gate: how the local classifier's own score for a class on a view gates that class's target
# on the view (l2g.method.targets.view_presence): "off" (the release: every view inherits every image label
# at full strength), "soft" (scaled by the view's sigmoid score), "hard" (kept where that score > 0.5).
VIEW_GATES = ("off", "soft", "hard")

"""torchvision on a CPU-only torch whose torchvision wheel is a CUDA build.

Where the only torchvision wheel that matches the installed torch is a CUDA build (torchvision 0.28 next
to a CPU-only torch), its compiled extension does not load, and ``import torchvision`` then fails because
its meta registrations refer to ``torchvision::nms``. When (and only when) the extension is missing,
this module declares the missing operator schemas so the import succeeds, and routes ``roi_align`` to
torchvision's pure-PyTorch reference. With a working torchvision (a normal GPU install) nothing is
patched and the real op runs. Without torchvision at all, ``roi_align_op`` raises an ImportError saying
what to install.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def import_torchvision() -> Any:
    """Import torchvision, declaring the missing op schemas first if its extension cannot load."""
    try:
        import torchvision  # noqa: F401

        return sys.modules["torchvision"]
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules behind
    library = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive by the registry
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(library)
    import torchvision

    return torchvision


_LIBRARIES: list[Any] = []


def has_compiled_ops() -> bool:
    import_torchvision()
    from torchvision.extension import _has_ops

    return bool(_has_ops())


@functools.lru_cache(maxsize=1)
def _roi_align_impl() -> Any:
    import_torchvision()
    if has_compiled_ops():
        from torchvision.ops import roi_align

        return roi_align
    reference = sys.modules["torchvision.ops.roi_align"]._roi_align
    plain = getattr(reference, "__wrapped__", reference)  # skip the lazy torch.compile wrapper

    def roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):  # noqa: A002
        return plain(input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned)

    return roi_align


def roi_align_op(
    input: torch.Tensor,  # noqa: A002 - torchvision's name
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` with RoIs as a (K, 5) tensor, on any install of torchvision."""
    try:
        impl = _roi_align_impl()
    except ImportError as error:
        hint = "pip install the torchvision that pairs with your torch"
        raise ImportError(f"l2g needs torchvision for roi_align: {hint}") from error
    return impl(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

"""Load pretrained backbone weights from a local file (``model.pretrained``); nothing is ever downloaded.

Accepted files:
- MXNet ``.params`` (ResNet-38 only): the release's ImageNet file ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``,
  read without MXNet (:mod:`l2g.models.mxnet_params`) and renamed by :func:`l2g.models.resnet38.mxnet_name`.
  ``l2g convert-weights`` writes the same weights as a ``.pth`` once, which then loads faster.
- PyTorch files (``.pth``/``.pt``/anything else): a state dict, or a dict holding one under
  ``state_dict``/``model``; a ``module.`` prefix (DataParallel) is removed. torchvision's ImageNet files,
  PSA/SEAM-converted ResNet-38 files and lukemelas-named EfficientNet-Lite0 files load as they are.

The check is strict, because a half-loaded backbone trains without complaint and silently scores worse:
every backbone tensor must come from the file with its shape (only BatchNorm's ``num_batches_tracked``
may be absent) and every tensor of the file must find a place (except the ImageNet classifier). Anything
else is a ``ValueError`` naming the file and the first offending keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from l2g.models.base import FreezableBackbone
from l2g.models.registry import backbone_entry

SCRATCH = "scratch"  # model.pretrained value: random weights even where a default exists
_SHOW = 5


def check_weights_file(name: str, pretrained: str | None) -> None:
    """Fail before building a network for which ``pretrained`` cannot be read (missing file, wrong format)."""
    entry = backbone_entry(name)
    if pretrained == "imagenet" and entry.packaged_weights is None:
        raise ValueError(f"model.pretrained = imagenet: {name} has no weights that ship with l2g; give the "
                         "path of a local weights file (torchvision's, or ResNet-38's .params)")
    if pretrained in (None, SCRATCH, "imagenet"):
        return
    path = Path(pretrained)
    if not path.is_file():
        how = entry.weights_hint.format(path=path)
        raise FileNotFoundError(f"{path}: weights file not found (model.pretrained); weights are never downloaded"
                                f"{how}; model.pretrained=scratch trains from random weights")
    if path.suffix == ".params" and name != "resnet38":
        raise ValueError(f"{path}: MXNet .params weights are read for resnet38 only, not {name}")


def load_pretrained(backbone: FreezableBackbone, name: str, pretrained: str | None) -> FreezableBackbone:
    """Load ``pretrained`` into ``backbone`` (see the module docstring) and return it."""
    if pretrained == SCRATCH:
        return backbone
    check_weights_file(name, pretrained)
    if pretrained in (None, "imagenet"):
        packaged = backbone_entry(name).packaged_weights
        if packaged is None:
            return backbone  # no weights ship with a package for this one: random initialisation
        pretrained = packaged()
    state = read_weights(pretrained, backbone, name)
    load_checked(backbone, state, name, pretrained)
    backbone.loaded_from = str(pretrained)
    return backbone


def read_weights(path: str | Path, backbone: FreezableBackbone, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file under ``backbone``'s key names (not yet checked against it)."""
    check_weights_file(name, str(path))
    path = Path(path)
    if path.suffix == ".params":
        return mxnet_state_dict(path, backbone)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign files raise many types
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(error).__name__}: {error})") from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ValueError(f"{path}: holds no state dict (a dict of tensor names to tensors)")
    state = {key.removeprefix("module."): value for key, value in loaded.items()}
    return backbone.adapt_state_dict(state, str(path))


def mxnet_state_dict(path: str | Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An MXNet ResNet-38 ``.params`` file as a state dict with ``model``'s keys.

    Names of the file that ResNet-38 does not have are an error, except the ImageNet classifier.
    """
    from l2g.models.mxnet_params import read_mxnet_params
    from l2g.models.resnet38 import IGNORED_MXNET_NAMES, mxnet_name_map

    arrays = read_mxnet_params(path)
    names = mxnet_name_map(model)
    unknown = [key for key in arrays if key not in names and key not in IGNORED_MXNET_NAMES]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} of its {len(arrays)} arrays are not ResNet-38 parameters "
                         f"(e.g. {', '.join(unknown[:_SHOW])}): is this ilsvrc-cls_rna-a1_cls1000_ep-0001.params?")
    return {names[key]: torch.from_numpy(np.asarray(array)) for key, array in arrays.items() if key in names}


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
                source: str | Path) -> dict[str, torch.Tensor]:
    """``state`` without the ImageNet classifier, after checking that it fits ``module`` exactly.

    ``module`` may live on the meta device (only its keys and shapes are read).
    """
    own = module.state_dict()
    ignored = getattr(module, "classifier_prefixes", ())
    state = {k: v for k, v in state.items() if not (k.startswith(ignored) and k not in own)}
    if not set(state) & set(own):
        raise ValueError(f"{source}: none of its {len(state)} tensors belongs to backbone {name} (its keys look "
                         f"like {', '.join(list(state)[:3])}): weights of another architecture?")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} (network: {tuple(own[k].shape)})"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors of another shape: {'; '.join(wrong[:_SHOW])}")
    if missing:
        problems.append(f"{len(missing)} backbone tensors missing from the file: {', '.join(missing[:_SHOW])}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors of the file unknown to {name}: {', '.join(unexpected[:_SHOW])}")
    if problems:
        raise ValueError(f"{source}: does not fit backbone {name} (another architecture, depth or width?): "
                         + "; ".join(problems))
    return state


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str, source: str | Path) -> None:
    """``module.load_state_dict(state)`` after :func:`check_state`, with errors that name ``source``."""
    state = check_state(module, state, name, source)
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)

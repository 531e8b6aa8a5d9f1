"""The release's MXNet ResNet-38 ImageNet weights -> a PyTorch ``.pth``, no MXNet.

Reads ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` (MXNet NDArray list, parsed with numpy), renames every
array to our ResNet-38 keys (:func:`l2g.models.resnet38.mxnet_name`; the ImageNet classifier
``linear1000`` is dropped), checks names and shapes against the architecture and writes a state dict that
``model.pretrained`` loads (as it would load the ``.params`` file itself, only faster). The command is
``l2g convert-weights`` (:mod:`l2g.cli.data_commands`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from l2g import atomic
from l2g.models.resnet38 import ResNet38
from l2g.models.weights import check_state, mxnet_state_dict


def convert_weights(params: str | Path, out: str | Path, width_mult: float = 1.0) -> dict:
    """Read, rename and check ``params``; write the state dict to ``out`` (atomically) and return it."""

    if not width_mult > 0:
        raise ValueError(f"--width-mult must be > 0, got {width_mult}")
    with torch.device("meta"):  # names and shapes only: no 105 M random weights to initialise
        model = ResNet38(width_mult)
    state = mxnet_state_dict(params, model)
    state = check_state(model, state, "resnet38", params)  # every name and shape checked against the network
    state = {key: value.float().contiguous() for key, value in state.items()}
    out = Path(out)
    atomic.save_torch(out, state)
    return state

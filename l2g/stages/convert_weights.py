"""``l2g convert-weights``: the release's MXNet ResNet-38 ImageNet weights -> a PyTorch ``.pth``, no MXNet.

Reads ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` (MXNet NDArray list, parsed with numpy), renames every
array to our ResNet-38 keys (:func:`l2g.models.resnet38.mxnet_name`; the ImageNet classifier
``linear1000`` is dropped), checks names and shapes against the architecture and writes a state dict that
``model.pretrained`` loads (as it would load the ``.params`` file itself, only faster).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """Convert the MXNet ImageNet weights of ResNet-38 (model A1 of Wu et al., the file
ilsvrc-cls_rna-a1_cls1000_ep-0001.params that PSA, SEAM and L2G start from) into a PyTorch state dict.
MXNet is not needed: the .params format is read with numpy. Every array is checked against the network
(names and shapes); the ImageNet classifier (linear1000) is dropped."""

EPILOG = """examples:
  l2g convert-weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params weights/resnet38_imagenet.pth
  l2g train voc12_resnet38_l2g_shape --run runs/voc --set model.pretrained=weights/resnet38_imagenet.pth

model.pretrained also accepts the .params file directly; the .pth loads faster."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from l2g.cli import add_quiet

    p = subparsers.add_parser("convert-weights", help="MXNet ResNet-38 .params -> PyTorch .pth (no MXNet needed)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("params", help="MXNet weights file, e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    p.add_argument("out", help="PyTorch state dict to write (.pth)")
    p.add_argument("--width-mult", type=float, default=1.0,
                   help="channel multiplier of the ResNet-38 the file is for (default: 1.0, the ImageNet model)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: exists (use --force to overwrite)")
    state = convert_weights(args.params, out, args.width_mult)
    if not args.quiet:
        count = sum(v.numel() for v in state.values())
        print(f"{out}: {len(state)} tensors ({count / 1e6:.1f} M values) of resnet38 (width x{args.width_mult:g})")
    return 0


def convert_weights(params: str | Path, out: str | Path, width_mult: float = 1.0) -> dict:
    """Read, rename and check ``params``; write the state dict to ``out`` (atomically) and return it."""

    import torch

    from l2g.engine import atomic
    from l2g.models.resnet38 import ResNet38
    from l2g.models.weights import check_state, mxnet_state_dict

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

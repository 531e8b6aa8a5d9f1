"""Which config keys each stage of ``l2g run`` depends on, declared once: :data:`STAGE_KEYS`.

Two questions are answered from this one table:

- ``l2g run`` reruns a stage when one of its inputs changed: :func:`input_values` gives the names and values
  that :mod:`l2g.stages.pipeline` records in the stage's markers.
- ``--resume`` continues a training run with a changed config only when every changed key is safe for that
  stage: :func:`resume_safe_keys`, the patterns behind ``l2g.engine.run_folder.RESUME_SAFE_KEYS`` (``l2g
  train``) and ``SEG_RESUME_SAFE_KEYS`` (``l2g seg train``). A key is safe when the stage neither depends
  on it nor keeps it (see :class:`StageKeys`), or when it is one of the stage's ``resumable`` keys.

Keys are dotted paths into the config (:func:`l2g.config.to_dict`): a section (``cams``, recorded whole), a
key (``eval.threshold``), or ``section.*`` / ``*``: every key there that no other stage names and that is
not a :data:`RUN_KEYS` entry, each recorded on its own. So a key added to the schema belongs to the stage
that owns its section, and a new top-level section to the classification stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from l2g.config.loading import to_dict
from l2g.config.schema import Config

# How fast and how often, never what comes out: no stage depends on them, every resume may change them.
RUN_KEYS = ("device", "threads", "log_every", "runtime")
EVERY = "*"


@dataclass(frozen=True)
class StageKeys:
    """The config keys of one stage.

    ``inputs``: what its outputs depend on (notation in the module text); a change reruns the stage.
    ``keeps``: keys outside its inputs that a resume of its training run refuses to change; for the
    segmentation stage, what it reads that an earlier stage owns (in the pipeline the earlier stage's stamp
    stands for them).
    ``resumable``: patterns (``fnmatch``) of inputs or kept keys that a resume accepts changed: how it runs
    rather than what it computes, such as its length (it may grow: training continues) and where the data
    lies and how it is read. The pipeline still reruns the stage when one of them changes.
    ``runs_with``: keys of its own besides :data:`RUN_KEYS` that change how it runs, never what comes out:
    not inputs (so every key of the schema has a stage or is a run key).
    """

    inputs: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()
    resumable: tuple[str, ...] = ()
    runs_with: tuple[str, ...] = ()


DATA_PLACE = ("data.root", "data.workers", "data.check_images")  # where the images are, how they are read
SEG_INFERENCE = ("seg.val_split", "seg.test_scales", "seg.test_flip", "seg.max_side", "seg.crf")

STAGE_KEYS: dict[str, StageKeys] = {  # in the pipeline's order (l2g.stages.pipeline_stages.STAGE_NAMES)
    # Every key no later stage owns. optim.epochs may grow on resume: with a poly schedule the remaining
    # iterations follow the new length. ``seg`` is kept: a resumed `l2g train` has always refused a changed
    # seg section, although training does not read it (docs/reliability.md lists what may change).
    "train": StageKeys(inputs=(EVERY,), keeps=("seg",), resumable=("optim.epochs", "optim.steps", "optim.min_steps",
                                                                        *DATA_PLACE)),
    "cams": StageKeys(inputs=("cams",)),
    "threshold": StageKeys(inputs=("eval.thresholds", "eval.threshold"), runs_with=("eval.workers", "eval.parallel")),
    "pseudo": StageKeys(inputs=("eval.threshold",)),
    # Trained on the pseudo masks, with the classification stage's data, seed and precision; its inference
    # settings are seg_eval's. Where the pseudo masks are is not what they hold.
    "seg_train": StageKeys(inputs=("seg.*",), keeps=("data", "seed", "amp", "amp_warmup_epochs"),
                           resumable=("seg.epochs", "seg.pseudo_dir", *DATA_PLACE)),
    "seg_eval": StageKeys(inputs=SEG_INFERENCE),
    "report": StageKeys(),
}


def _path(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


def _named_elsewhere(stage: str) -> list[tuple[str, ...]]:
    """The paths that other stages name (up to a ``*``) and the run keys: what ``stage``'s ``*`` leaves out."""
    named = [_path(key.removesuffix(EVERY).removesuffix(".")) for other, keys in STAGE_KEYS.items()
             if other != stage for key in (*keys.inputs, *keys.runs_with)]
    return named + [_path(key) for key in RUN_KEYS]


def _expand(stage: str, tree: dict[str, Any]) -> Iterator[str]:
    """The input names of ``stage`` for a config tree (wildcards expanded against it)."""
    for key in STAGE_KEYS[stage].inputs:
        if key != EVERY and not key.endswith(f".{EVERY}"):
            yield key
            continue
        prefix = _path(key.removesuffix(EVERY).removesuffix("."))
        others = _named_elsewhere(stage)
        for child in _lookup(tree, prefix):
            path = (*prefix, child)
            if not any(other[:len(path)] == path for other in others):  # another stage names it or below it
                yield ".".join(path)


def _lookup(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = tree
    for part in path:
        value = value[part]
    return value


def input_values(config: Config, stage: str) -> dict[str, Any]:
    """{input name: its value in ``config``} of a stage: what its markers record, in the declared order."""
    tree = to_dict(config)
    return {key: _lookup(tree, _path(key)) for key in _expand(stage, tree)}


def resume_safe_keys(stage: str) -> tuple[str, ...]:
    """The ``fnmatch`` patterns of the keys that a resumed training run of ``stage`` may change.

    The stage's ``resumable`` keys, then every key of the schema that the stage neither depends on nor
    keeps, a whole section as ``section.*`` (so keys added to it later are covered too).
    """
    tree = to_dict(Config())
    fixed = [_path(key) for key in (*_expand(stage, tree), *STAGE_KEYS[stage].keeps)]
    patterns = list(STAGE_KEYS[stage].resumable)

    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            if any(path[:len(f)] == f for f in fixed):
                continue  # fixed, or inside a fixed section
            if any(f[:len(path)] == path for f in fixed):
                walk(value, path)  # a section with fixed keys inside: its other keys one by one
            else:
                patterns.append(".".join(path) + (f".{EVERY}" if isinstance(value, dict) else ""))

    walk(tree, ())
    return tuple(patterns)

"""Which config keys each stage depends on: the pipeline's stage inputs and the keys a resumed training run
may change, both derived from one declaration (l2g.config.stage_keys).

The expectations below were read from the hand-written lists that the declaration replaced (issue 23):
the derivation must give the same answers, key by key.
"""

from __future__ import annotations

import fnmatch

import pytest

from l2g.config import Config, flatten, load_config, stage_keys, to_dict
from l2g.config.stage_keys import RUN_KEYS, STAGE_KEYS, input_values
from l2g.engine.run_folder import RESUME_SAFE_KEYS, SEG_RESUME_SAFE_KEYS, is_safe
from l2g.stages.pipeline import STAGES
from l2g.stages.pipeline_stages import STAGE_NAMES

# key -> (may change on resume of `l2g train`, may change on resume of `l2g seg train`)
RESUME_CASES: dict[str, tuple[bool, bool]] = {
    "optim.epochs": (True, True),
    "optim.lr": (False, True),
    "optim.batch_size": (False, True),
    "seg.epochs": (False, True),
    "seg.pseudo_dir": (False, True),
    "seg.lr": (False, False),
    "seg.arch": (False, False),
    "seg.train_split": (False, False),
    "seg.pseudo_crf.enabled": (False, False),
    "seg.val_split": (False, True),
    "seg.test_scales": (False, True),
    "seg.test_flip": (False, True),
    "seg.max_side": (False, True),
    "seg.crf.enabled": (False, True),
    "seg.crf.iterations": (False, True),
    "log_every": (True, True),
    "threads": (True, True),
    "device": (True, True),
    "amp": (False, False),  # bf16/fp16 autocast changes what is computed
    "seed": (False, False),
    "data.root": (True, True),
    "data.workers": (True, True),
    "data.check_images": (True, True),
    "data.num_classes": (False, False),
    "data.mean": (False, False),
    "data.train_split": (False, False),
    "runtime.checkpoint_every": (True, True),
    "runtime.deterministic": (True, True),
    "runtime.a_key_added_later": (True, True),  # wildcards cover keys the schema does not have yet
    "cams.split": (True, True),
    "cams.scales": (True, True),
    "cams.a_key_added_later": (True, True),
    "eval.threshold": (True, True),
    "eval.workers": (True, True),
    "eval.a_key_added_later": (True, True),
    "views.n": (False, True),
    "method.name": (False, True),
    "method.lam": (False, True),
    "model.backbone": (False, True),
    "model.a_key_added_later": (False, True),
    "seg.crf.a_key_added_later": (False, True),
    "seg.a_key_added_later": (False, False),
    "data.a_key_added_later": (False, False),
    "a_section_added_later.key": (False, False),
}


@pytest.mark.parametrize("key", sorted(RESUME_CASES))
def test_resume_safe_keys_of_both_training_stages(key):
    train, seg = RESUME_CASES[key]
    assert is_safe(key, RESUME_SAFE_KEYS) is train
    assert is_safe(key) is train  # the default is the classification stage's list
    assert is_safe(key, SEG_RESUME_SAFE_KEYS) is seg


def test_resume_safe_keys_on_every_key_of_the_synth_preset():
    flat = flatten(to_dict(load_config("synth")))
    train_safe = {k for k in flat if is_safe(k, RESUME_SAFE_KEYS)}
    seg_safe = {k for k in flat if is_safe(k, SEG_RESUME_SAFE_KEYS)}
    assert train_safe == {k for k in flat if k.split(".")[0] in ("runtime", "cams", "eval")} | {
        "optim.epochs", "optim.steps", "optim.min_steps", "log_every", "threads", "device", "data.root",
        "data.workers", "data.check_images"}
    seg_inference = ("seg.val_split", "seg.test_scales", "seg.test_flip", "seg.max_side")
    assert seg_safe == {k for k in flat if k.split(".")[0] in ("runtime", "cams", "eval", "optim", "method", "model",
                                                                "views") or k.startswith("seg.crf.")} | {
        "log_every", "threads", "device", "data.root", "data.workers", "data.check_images", "seg.epochs",
        "seg.pseudo_dir", *seg_inference}


def test_the_safe_lists_are_patterns_without_repeats():
    for keys in (RESUME_SAFE_KEYS, SEG_RESUME_SAFE_KEYS):
        assert isinstance(keys, tuple) and len(set(keys)) == len(keys)
    assert set(RESUME_SAFE_KEYS) == {"optim.epochs", "optim.steps", "optim.min_steps", "log_every", "threads",
                                     "device", "data.root", "data.workers", "data.check_images", "runtime.*",
                                     "cams.*", "eval.*"}
    assert set(SEG_RESUME_SAFE_KEYS) == set(RESUME_SAFE_KEYS) - {"optim.epochs", "optim.steps", "optim.min_steps"} | {
        "seg.epochs", "seg.pseudo_dir", "seg.val_split", "seg.test_scales", "seg.test_flip", "seg.max_side",
        "seg.crf.*", "optim.*", "method.*", "model.*", "views.*"}


SEG_TRAIN_INPUTS = ["seg.arch", "seg.width", "seg.aspp_rates", "seg.pretrained", "seg.pretrained_dataset",
                    "seg.freeze_bn", "seg.pseudo_dir", "seg.train_split", "seg.crop_size", "seg.scale_range",
                    "seg.flip", "seg.epochs", "seg.batch_size", "seg.lr", "seg.head_lr_mult", "seg.momentum",
                    "seg.weight_decay", "seg.poly_power", "seg.pseudo_crf"]
PIPELINE_INPUTS: dict[str, list[str]] = {  # the names in stages/<stage>.*.json, in their order
    "train": ["data", "views", "model", "method", "optim", "seed", "amp", "amp_warmup_epochs"],
    "cams": ["cams"],
    "threshold": ["eval.thresholds", "eval.threshold"],
    "pseudo": ["eval.threshold"],
    "seg_train": SEG_TRAIN_INPUTS,
    "seg_eval": ["seg.val_split", "seg.test_scales", "seg.test_flip", "seg.max_side", "seg.crf"],
    "report": [],
}


def _value(tree: dict, dotted: str) -> object:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_pipeline_stage_inputs_of_the_synth_preset():
    """The markers record these names and values: a change of either would rerun every finished pipeline."""
    config = load_config("synth")
    tree = to_dict(config)
    assert [stage.name for stage in STAGES] == list(PIPELINE_INPUTS)
    for stage in STAGES:
        inputs = stage.config_keys(config)
        assert list(inputs) == PIPELINE_INPUTS[stage.name], stage.name
        assert inputs == {key: _value(tree, key) for key in PIPELINE_INPUTS[stage.name]}, stage.name


@pytest.mark.parametrize(("override", "first"), [
    ("optim.lr=0.5", "train"), ("optim.epochs=3", "train"), ("data.workers=3", "train"), ("amp=on", "train"),
    ("seed=7", "train"), ("cams.scales=[1.0]", "cams"), ("eval.threshold=0.3", "threshold"),
    ("eval.thresholds=[0.2,0.3]", "threshold"), ("seg.lr=0.5", "seg_train"),
    ("seg.pseudo_crf.enabled=true", "seg_train"),
    ("seg.test_flip=false", "seg_eval"), ("seg.crf.enabled=true", "seg_eval"), ("threads=3", None),
    ("log_every=3", None), ("device=cpu", None), ("runtime.checkpoint_every=5", None), ("eval.workers=3", None),
])
def test_the_first_stage_a_changed_key_reruns(override, first):
    before, after = load_config("synth"), load_config("synth", [override])
    changed = [stage.name for stage in STAGES if stage.config_keys(before) != stage.config_keys(after)]
    assert changed[:1] == ([first] if first else [])


def test_the_declaration_names_every_stage_and_every_key_once():
    names = [*STAGE_KEYS]
    assert tuple(names) == STAGE_NAMES
    flat = flatten(to_dict(Config()))
    owners: dict[str, list[str]] = {key: [] for key in flat}
    for stage in names:
        for name in input_values(Config(), stage):
            for key in flat:
                if key == name or key.startswith(f"{name}."):
                    owners[key].append(stage)
        for key in STAGE_KEYS[stage].runs_with:
            owners[key].append(f"{stage} (runs with)")
    for key in flat:
        if key.split(".")[0] in RUN_KEYS:
            owners[key].append("run")
    assert not [key for key, found in owners.items() if not found], "keys of no stage"
    shared = {key: found for key, found in owners.items() if len(found) > 1}
    assert shared == {"eval.threshold": ["threshold", "pseudo"]}  # pseudo uses the threshold given there


def test_resumable_keys_are_keys_the_stage_fixes():
    """A resumable pattern outside the stage's inputs and kept keys would be safe anyway: a sign of a typo."""
    flat = flatten(to_dict(Config()))
    for stage, keys in STAGE_KEYS.items():
        fixed = [*input_values(Config(), stage), *keys.keeps]
        for pattern in keys.resumable:
            matched = [k for k in flat if fnmatch.fnmatchcase(k, pattern)]
            assert matched and all(any(k == f or k.startswith(f"{f}.") for f in fixed) for k in matched), pattern


def test_a_new_section_is_the_classification_stages_and_a_new_seg_key_the_segmentation_stages(monkeypatch):
    tree = to_dict(load_config("synth"))
    tree["extra"] = {"x": 1}
    tree["seg"]["extra"] = 2
    monkeypatch.setattr(stage_keys, "to_dict", lambda config: tree)
    assert "extra" in input_values(Config(), "train") and "seg.extra" not in input_values(Config(), "train")
    assert "seg.extra" in input_values(Config(), "seg_train")
    assert not is_safe("extra.x", stage_keys.resume_safe_keys("train"))

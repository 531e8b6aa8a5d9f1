"""Tests for l2g.config: defaults, YAML loading, --set overrides, validation, presets, round trip."""

import pytest

from l2g.config import Config, ConfigError, apply_override, load_config, save_config


def test_defaults_validate():
    config = load_config()
    assert config == Config()
    assert config.validate() is config
    assert config.optim.lr == 0.02 and config.views.n == 4 and config.method.name == "l2g_shape"


def test_unknown_yaml_key_names_the_key_and_suggests_the_close_one(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'lrr'.*did you mean 'lr'"):
        load_config(path)


def test_unknown_top_level_key_suggests_the_close_one(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("sed: 3\n")
    with pytest.raises(ConfigError, match=r"'sed'.*did you mean 'seed'"):
        load_config(path)


def test_unknown_section_and_override_key_raise(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'lrr'.*did you mean 'lr'"):
        load_config(overrides=["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["optim.lr"])


def test_yaml_values_are_loaded(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.5\n  step_epochs: [2, 4]\nviews:\n  strategy: grid\nseed: 7\n")
    config = load_config(path)
    assert config.optim.lr == 0.5
    assert config.optim.step_epochs == (2, 4)
    assert config.views.strategy == "grid"
    assert config.seed == 7
    assert config.optim.epochs == 10  # untouched default


def test_override_float_including_exponent_string_form():
    config = load_config(overrides=["optim.lr=0.5"])
    assert config.optim.lr == 0.5
    config = load_config(overrides=["optim.lr=1e-3"])  # YAML 1.1 reads 1e-3 as a string
    assert config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    config = load_config(overrides=["optim.lr=2"])  # int -> float is lossless
    assert config.optim.lr == 2.0 and isinstance(config.optim.lr, float)


def test_override_int_bool_tuple_none():
    config = load_config(
        overrides=[
            "optim.epochs=3",
            "data.flip=false",
            "optim.step_epochs=[3, 6]",
            "data.mean=[0.5, 0.25, 0.125]",
            "method.shape_threshold=null",
            "model.pretrained=null",
            "seed=11",
        ]
    )
    assert config.optim.epochs == 3
    assert config.data.flip is False
    assert config.optim.step_epochs == (3, 6)
    assert config.data.mean == (0.5, 0.25, 0.125)
    assert config.method.shape_threshold is None
    assert config.model.pretrained is None
    assert config.seed == 11


def test_override_optional_float_and_string():
    config = load_config(overrides=["method.shape_threshold=0.25", "model.pretrained=weights.pt"])
    assert config.method.shape_threshold == 0.25
    assert config.model.pretrained == "weights.pt"


@pytest.mark.parametrize(
    "item",
    [
        "optim.epochs=3.5",  # float for int
        "optim.epochs=true",  # bool is not an int
        "optim.lr=fast",  # not a number
        "optim.lr=true",  # bool is not a number
        "data.flip=1",  # int for bool
        "data.mean=[0.5, 0.5]",  # wrong tuple length
        "optim.step_epochs=5",  # scalar for a tuple
        "model.pretrained=5",  # int for str | None
        "views=3",  # a section set to a value
    ],
)
def test_wrong_type_raises(item):
    with pytest.raises(ConfigError):
        load_config(overrides=[item])


def test_apply_override_on_a_value_as_section_raises():
    with pytest.raises(ConfigError, match="not a section"):
        apply_override(Config(), "seed.value=3")


@pytest.mark.parametrize(
    "item",
    [
        "method.name=cams",
        "method.background=zero",
        "method.shape_form=eq7",
        "views.strategy=grids",
        "optim.schedule=cosine",
        "cams.upsample=nearest",
        "device=tpu",
        "runtime.compile=max",
    ],
)
def test_invalid_choices_raise(item):
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(overrides=[item])


def test_corners_plus_random_with_three_views_raises():
    with pytest.raises(ConfigError, match="n must be >= 4"):
        load_config(overrides=["views.n=3"])
    config = load_config(overrides=["views.strategy=random", "views.n=3"])  # fine without the corners
    assert config.views.n == 3


def test_patch_larger_than_view_raises():
    with pytest.raises(ConfigError, match="patch_size"):
        load_config(overrides=["views.patch_size=113"])


def test_shape_threshold_defaults_by_form():
    assert load_config(overrides=["method.shape_form=release"]).shape_threshold == 0.001
    assert load_config(overrides=["method.shape_form=paper"]).shape_threshold == 0.1
    explicit = load_config(overrides=["method.shape_form=release", "method.shape_threshold=0.3"])
    assert explicit.shape_threshold == 0.3


def test_preset_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local file named "synth" can shadow the preset
    config = load_config("synth")
    assert config.method.name == "l2g_shape"  # the schema's default method
    assert config.optim.epochs == 45  # the preset's by_method value for it (its own 12, the default 10)
    assert load_config("synth", ["method.name=cam"]).optim.epochs == 12
    assert config.threads == 2  # preset value, default 0
    assert config.views.strategy == "corners+random"
    assert load_config("synth.yaml") == config
    with pytest.raises(ConfigError, match="synth"):  # the error lists the presets
        load_config("no_such_preset")


def test_save_load_round_trip(tmp_path):
    config = load_config(
        overrides=[
            "optim.lr=1e-3",
            "optim.step_epochs=[3, 6]",
            "optim.warmup_start_lr=1e-5",
            "eval.thresholds=[0.1, 0.25]",
            "method.shape_form=release",
            "method.shape_threshold=0.125",
            "model.pretrained=w.pt",
            "data.cls_list=null",
            "data.flip=false",
            "views.strategy=grid",
        ]
    )
    path = tmp_path / "sub" / "saved.yaml"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert loaded != Config()
    assert loaded.optim.step_epochs == (3, 6) and loaded.eval.thresholds == (0.1, 0.25)


def _write(path, text: str):
    path.write_text(text)
    return path


def test_by_method_gives_one_method_its_own_settings_and_set_still_wins(tmp_path):
    base = _write(tmp_path / "base.yaml", "optim: {epochs: 12, lr: 0.002}\nby_method:\n"
                                          "  l2g: {optim: {epochs: 30}, cams: {source: logits}}\n")
    child = _write(tmp_path / "child.yaml", "base: base\nby_method:\n  l2g: {optim: {lr: 0.004}}\n")
    picked = {m: load_config(base, [f"method.name={m}"]) for m in ("cam", "l2g")}
    assert (picked["cam"].optim.epochs, picked["cam"].cams.source) == (12, "auto")
    assert (picked["l2g"].optim.epochs, picked["l2g"].cams.source, picked["l2g"].optim.lr) == (30, "logits", 0.002)
    merged = load_config(child, ["method.name=l2g"])  # the child's section merges into its base's, key by key
    assert (merged.optim.epochs, merged.cams.source, merged.optim.lr) == (30, "logits", 0.004)
    assert load_config(base, ["method.name=l2g", "optim.epochs=5"]).optim.epochs == 5
    # a file built on it that sets a key itself wins over the base's per-method value of that key, not others
    shorter = _write(tmp_path / "shorter.yaml", "base: base\noptim: {epochs: 6}\n")
    assert (load_config(shorter, ["method.name=l2g"]).optim.epochs,
            load_config(shorter, ["method.name=l2g"]).cams.source) == (6, "logits")
    saved = tmp_path / "saved.yaml"
    save_config(picked["l2g"], saved)  # a run's config.yaml holds the resolved values, no by_method
    assert "by_method" not in saved.read_text() and load_config(saved).optim.epochs == 30


@pytest.mark.parametrize(("text", "message"), [
    ("by_method: [l2g]", "by_method must map method names"),
    ("by_method:\n  l2gg: {optim: {epochs: 30}}", "unknown method 'l2gg'.*did you mean 'l2g'"),
    ("by_method:\n  l2g: {optim: {epoch: 30}}", r"by_method\.l2g\.optim: unknown key 'epoch'"),
    ("by_method:\n  l2g: {method: {name: cam}}", "cannot choose another method"),
    ("by_method:\n  l2g: [1]", r"by_method\.l2g: expected a mapping, got list"),
    ("by_method:\n  l2g: {method: [cam]}", r"by_method\.l2g\.method: expected a mapping"),
])
def test_by_method_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path / "bad.yaml", text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)

"""The ``l2g`` command's surface: the command list, --version, ``l2g config``, help wrapped to the
terminal, the flag vocabulary, and examples in the help that parse and name files that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

import l2g
from l2g.cli import COMMAND_GROUPS, EPILOG, build_parser, command_names, main
from l2g.cli.options import Command, wrap_help
from l2g.config import load_config, preset_names, resolve_config_path, to_dict
from l2g.stages.pipeline_stages import STAGE_NAMES
from tests.test_cli import run_cli, tiny_set


def all_commands() -> list[tuple[list[str], Command]]:
    """(argv prefix, command) of every command and subcommand."""
    found = []

    def walk(commands: tuple[Command, ...], prefix: list[str]) -> None:
        for command in commands:
            found.append(([*prefix, command.name], command))
            walk(command.subcommands, [*prefix, command.name])

    for _, commands in COMMAND_GROUPS:
        walk(commands, [])
    return found


def help_text(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_package_docstring_lists_every_command():
    listed = set()
    for line in l2g.cli.__doc__.splitlines():
        match = re.match(r"^\s+l2g ([a-z-]+)(?: ([a-z|]+))?", line)
        if match:
            command, sub = match.groups()
            listed |= {f"{command} {s}" for s in sub.split("|")} if sub and "|" in sub else {command}
    registered = set(command_names())
    assert listed == registered
    parser_choices = set(build_parser()._subparsers._group_actions[0].choices)
    assert {name.split()[0] for name in registered} == parser_choices


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"l2g {l2g.__version__}"


@pytest.mark.parametrize("preset", ["synth", "voc12_resnet38_l2g_shape_n2", None])
def test_config_prints_yaml_that_loads_back_to_the_same_config(preset, tmp_path, capsys):
    overrides = ["optim.epochs=3", "data.root=somewhere"]
    code, out, err = run_cli(capsys, "config", *([preset] if preset else []),
                             *(a for item in overrides for a in ("--set", item)))
    assert code == 0, err
    saved = tmp_path / "printed.yaml"
    saved.write_text(out)
    assert yaml.safe_load(out)["optim"]["epochs"] == 3
    assert to_dict(load_config(saved)) == to_dict(load_config(preset, overrides))
    # every key is there, not only the preset's own
    assert set(yaml.safe_load(out)) == set(to_dict(load_config(None)))


def test_config_lists_the_presets(capsys):
    code, out, _ = run_cli(capsys, "config", "--list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == preset_names()
    assert all(len(line.split()) > 1 for line in out.splitlines())  # each with its description


def test_wrap_help_keeps_indented_lines_and_wraps_prose():
    text = "a " * 40 + "\nmore prose here\n\n  l2g train synth --out " + "x" * 70 + "\n"
    lines = wrap_help(text, 30)
    assert all(len(line) <= 30 for line in lines[:-1])
    assert lines[-1] == "  l2g train synth --out " + "x" * 70
    assert " ".join(" ".join(lines[:-2]).split()) == " ".join(("a " * 40 + "more prose here").split())


def _verbatim_lines(command: Command | None) -> set[str]:
    texts = [EPILOG, "L2G"] if command is None else [command.description, command.epilog or ""]
    return {line.rstrip() for text in texts for line in text.splitlines() if line[:1].isspace()}


@pytest.mark.parametrize("argv", [[]] + [path for path, _ in all_commands()], ids=lambda a: " ".join(a) or "l2g")
def test_help_is_wrapped_to_the_terminal(argv, capsys, monkeypatch):
    command = dict((tuple(p), c) for p, c in all_commands()).get(tuple(argv))
    monkeypatch.setenv("COLUMNS", "60")
    narrow = help_text(capsys, argv)
    verbatim = _verbatim_lines(command)
    too_long = [line for line in narrow.splitlines() if len(line) > 60 and line.rstrip() not in verbatim]
    assert not too_long, too_long
    monkeypatch.setenv("COLUMNS", "200")
    wide = help_text(capsys, argv)
    assert max(map(len, wide.splitlines())) > 60  # the width really follows COLUMNS


def test_until_lists_the_stages(capsys, tmp_path):
    text = " ".join(help_text(capsys, ["run"]).split())
    assert f"stop after this stage: {', '.join(STAGE_NAMES)}" in text
    code, _, err = run_cli(capsys, "run", "synth", "--out", tmp_path / "p", "--until", "nope")
    assert code == 2 and "'nope': not a stage" in err and ", ".join(STAGE_NAMES) in err
    assert not (tmp_path / "p").exists()


def example_commands(text: str) -> list[str]:
    """The example command lines of a help text (indented lines running l2g), continuations joined,
    comments and shell redirections dropped."""
    lines, current = [], ""
    for line in text.splitlines():
        if not line[:1].isspace() and not current:
            continue
        current += " " + line.strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        command, current = current.split(" #")[0].split(" > ")[0].strip(), ""
        if command.startswith("l2g ") or " -m l2g " in command:
            lines.append(command)
    return lines


def _helps() -> list[tuple[str, str]]:
    texts = [("l2g", EPILOG)]
    texts += [(" ".join(path), f"{command.description}\n\n{command.epilog or ''}") for path, command in all_commands()]
    return texts


@pytest.mark.parametrize(("where", "text"), _helps(), ids=[where for where, _ in _helps()])
def test_examples_in_the_help_parse_and_name_presets_that_exist(where, text):
    examples = example_commands(text)
    if where in ("l2g", "train", "cams", "run", "config", "seg", "seg train", "predict", "export-voc"):
        assert examples, f"{where}: no examples"
    parser = build_parser()
    for example in examples:
        words = shlex.split(example)
        argv = words[words.index("l2g") + 1:]
        args = parser.parse_args(argv)  # raises UsageError if an example is stale
        config = getattr(args, "config", None)
        if config is not None:
            assert resolve_config_path(config).is_file(), f"{where}: {example}: no such preset"


def test_both_spellings_of_a_training_run_folder():
    parser = build_parser()
    for spelling in ("--out", "--run", "--run-dir"):
        assert parser.parse_args(["train", "synth", spelling, "runs/x"]).out == "runs/x"
        args = parser.parse_args(["seg", "train", "synth", spelling, "runs/s", "--pseudo", "p"])
        assert args.out == "runs/s"


def test_train_writes_the_run_named_by_out(tiny_root, tmp_path, capsys, one_thread):
    run = tmp_path / "by_out"
    code, out, err = run_cli(capsys, "train", "synth", "--out", run, "--set", "method.name=cam", *tiny_set(tiny_root),
                             "--quiet")
    assert code == 0, err
    assert Path(out.strip()) == run / "checkpoints" / "final.pt" and (run / "checkpoints" / "final.pt").is_file()

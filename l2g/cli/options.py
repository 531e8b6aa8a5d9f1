"""What every ``l2g`` command shares: the parser and help formatter, the common arguments, and
:class:`Command`, the one record every subcommand is registered from.

A leaf module: it imports nothing of l2g, so each command module (and nothing else) builds on it.

Vocabulary of the flags (the same in every command): ``--out`` names what a command writes (a run
folder, a dataset, a folder of maps or masks, a JSON file, an archive); ``--run`` names an existing run
folder that a command reads. ``l2g train`` and ``l2g seg train`` write a run folder with ``--out`` and
still accept ``--run`` / ``--run-dir``, their spelling in earlier versions.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_WIDTH = 100  # help text is wrapped to the terminal, but no wider than this (long lines read badly)


class UsageError(Exception):
    """A command line that does not parse: ``main`` prints the usage and the message and returns 2."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is raised (:class:`UsageError`) instead of exiting,
    so that ``l2g.cli.main`` returns 2 for it as for every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self, message)


def wrap_help(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` as help lines: runs of unindented lines are prose, joined and wrapped to ``width``;
    indented lines (examples, tables) and blank lines are kept as they are."""
    lines: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            lines.extend(textwrap.wrap(" ".join(prose), max(width, 20), initial_indent=indent,
                                       subsequent_indent=indent, break_on_hyphens=False))
            prose.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            lines.append("")
        elif line[0].isspace():
            flush()
            lines.append(indent + line.rstrip())
        else:
            prose.append(line.strip())
    flush()
    return lines


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs wrapped to the terminal width (``COLUMNS`` is respected, at most
    MAX_WIDTH), with indented lines such as examples kept verbatim (:func:`wrap_help`)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = min(shutil.get_terminal_size().columns - 2, MAX_WIDTH)
        super().__init__(prog, indent_increment, max_help_position, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(wrap_help(text, width, indent)) + "\n"


@dataclass(frozen=True)
class Command:
    """One ``l2g`` subcommand: its name, texts, arguments and handler (``args -> exit code``), or the
    subcommands it groups (``l2g seg train``, ``l2g prepare voc``)."""

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    epilog: str | None = None
    subcommands: tuple[Command, ...] = ()
    subcommand_metavar: str = "COMMAND"


def register(subparsers: argparse._SubParsersAction, commands: Sequence[Command]) -> None:
    """Add ``commands`` (and their subcommands) to ``subparsers``; each leaf gets its ``handler``."""
    for command in commands:
        parser = subparsers.add_parser(command.name, help=command.help, description=command.description,
                                       epilog=command.epilog, formatter_class=HelpFormatter)
        if command.arguments is not None:
            command.arguments(parser)
        if command.subcommands:
            nested = parser.add_subparsers(dest=f"{command.name}_command", required=True,
                                           metavar=command.subcommand_metavar)
            register(nested, command.subcommands)
        else:
            parser.set_defaults(handler=command.run)


# --- the arguments several commands take ----------------------------------------------------------------


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=2 (repeatable)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_training_run(parser: argparse.ArgumentParser, safe_keys: str) -> None:
    """--out (also --run / --run-dir), --resume and --overwrite of a training command (the rules of
    l2g.engine.run_folder); ``safe_keys`` names, for the help, the config keys that may change on resume."""
    parser.add_argument("--out", "--run", "--run-dir", dest="out", required=True, metavar="DIR",
                        help="run folder to write (--run and --run-dir are other names of this option)")
    add_resume(parser, "the run in --out", "from its newest readable checkpoint (mid-epoch included); the config "
               f"may differ only in safe keys ({safe_keys}, ...). Under torchrun --max-restarts, a restarted "
               "worker group continues its own job's run by itself")
    parser.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")


def add_resume(parser: argparse.ArgumentParser, what: str, how: str) -> None:
    """--resume (continue ``what``; an error when there is none) and --resume auto (continue or start)."""
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto", type=_resume_mode,
                        help=f"continue {what} {how}. Plain --resume is an error when there is none to "
                             "continue (a mistyped path must not start over); --resume auto continues when "
                             "there is one and starts one when there is none (for schedulers that rerun the "
                             "same command)")


def _resume_mode(text: str) -> str:
    if text != "auto":  # plain --resume before a positional argument takes it for its value
        raise argparse.ArgumentTypeError(f"{text!r}: not a --resume mode (the only one is auto; a plain --resume "
                                         "takes no value: write it after the positional arguments)")
    return text


def add_run(parser: argparse.ArgumentParser, what: str) -> None:
    """--run (also --run-dir, the spelling to use under torchrun): the run folder a command reads."""
    parser.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR", help=what)


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: ``"a, b,c"`` -> ``("a", "b", "c")``; at least one item."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one item")
    return items


def one_of(choices: Sequence[str], what: str) -> Callable[[str], str]:
    """An argparse type accepting one of ``choices``, whose error says ``'x': not a <what>``."""
    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r}: not a {what} (choose from {', '.join(choices)})")
        return text

    return check

"""The user-facing errors: one base (l2g.errors.L2GError) that the command line prints as a message, each
keeping the built-in type that callers may already catch."""

from __future__ import annotations

import pytest

from l2g import errors
from l2g.cli import main
from l2g.models.mxnet_params import MXNetFormatError


@pytest.mark.parametrize("kind,builtin", [
    (errors.ConfigError, ValueError), (errors.DatasetError, ValueError), (errors.CheckpointError, ValueError),
    (errors.NonFiniteError, FloatingPointError), (errors.NotEnoughDiskSpace, OSError), (MXNetFormatError, ValueError),
    (errors.DegenerateMasksError, ValueError),
])
def test_each_user_error_is_an_l2g_error_of_its_builtin_type(kind, builtin):
    assert issubclass(kind, errors.L2GError) and issubclass(kind, builtin)
    assert issubclass(kind, errors.MESSAGE_ERRORS)


def test_the_old_import_paths_name_the_same_classes():
    from l2g.config import ConfigError
    from l2g.data.layout import DatasetError
    from l2g.engine.checkpoint import CheckpointError
    from l2g.engine.guards import NonFiniteError, NotEnoughDiskSpace

    assert (ConfigError, DatasetError, CheckpointError, NonFiniteError, NotEnoughDiskSpace) == errors.USER_ERRORS


def test_the_command_line_prints_an_l2g_error_as_one_message(tmp_path, capsys):
    assert main(["train", "synth", "--out", str(tmp_path / "run"), "--set", "method.name=nope"]) == 2
    assert "method.name = 'nope': must be one of cam, local, l2g, l2g_shape" in capsys.readouterr().err

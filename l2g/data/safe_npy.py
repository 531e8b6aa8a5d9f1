"""Reading ``.npy`` files that hold pickled objects (dicts of arrays) without running code from them.

``np.load(path, allow_pickle=True)`` unpickles whatever the file holds, and a pickle can call any
function on loading: a ``.npy`` a colleague sends could delete files. The files these loaders exist for
(IRN's and SEAM's ``cls_labels.npy``, the release's and PSA's attention-map dicts) only ever hold dicts,
lists, strings, numbers and numpy arrays or scalars, which need a handful of numpy globals to rebuild.
:func:`load_npy_object` reads the ``.npy`` header itself and unpickles the payload with
:class:`NumpyOnlyUnpickler`, which refuses every other global (``UnpicklingError`` naming it) before
anything is called.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

# The only globals a pickled dict of numpy arrays and scalars needs; anything else is refused.
NUMPY_PICKLE_GLOBALS = frozenset({
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles (Python 2 era files) store bytes as encoded text
})

# What a malformed or hostile payload can raise while being read (besides UnpicklingError).
READ_ERRORS = (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError, IndexError,
               KeyError, ImportError, MemoryError, zipfile.BadZipFile)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays/scalars; refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if module.startswith("numpy.core."):  # files written by numpy 1.x
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in NUMPY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return super().find_class(module, name)


def read_npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the ``.npy`` file ``stream`` is at the start of; leaves the
    stream at the payload."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def load_npy_object(path: str | Path) -> object:
    """The object stored in an ``.npy`` file: a plain array as ``np.load`` reads it, an object array
    unpickled with :class:`NumpyOnlyUnpickler` (a 0-d object array, what ``np.save(dict)`` writes, is
    returned as its item). Raises ``FileNotFoundError``, or one of :data:`READ_ERRORS` for a file that is
    not such an ``.npy`` (``UnpicklingError`` for a refused global)."""
    path = Path(path)
    with path.open("rb") as stream:
        _, _, dtype = read_npy_header(stream)
        if dtype.hasobject:
            array = NumpyOnlyUnpickler(stream).load()
            if isinstance(array, np.ndarray) and array.shape == () and array.dtype.hasobject:
                return array.item()
            return array
    return np.load(path, allow_pickle=False)

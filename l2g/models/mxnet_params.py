"""Read (and write) MXNet ``.params`` files with numpy alone: no MXNet needed.

MXNet's ``nd.save`` writes an NDArray list (all integers little-endian)::

    uint64  0x112                     list magic (kMXAPINDArrayListMagic)
    uint64  0                         reserved
    uint64  n                         number of arrays, then n arrays:
        uint32 magic                  0xF993FAC9 (V2), 0xF993FACA (V3), 0xF993FAC8 (V1), or no magic at all
                                      (legacy: this word is already the shape's ndim)
        int32  storage type           V2/V3 only; 0 = dense (sparse arrays are refused)
        shape                         uint32 ndim + ndim x int64 (legacy: ndim x uint32); ndim 0 = empty
                                      array, nothing follows (V3: ndim -1 means "unknown", also empty)
        int32  dev_type, int32 dev_id the context it was saved from (ignored)
        int32  dtype                  mshadow type flag (0 float32, 1 float64, 2 float16, 3 uint8, ...)
        bytes  data                   prod(shape) x itemsize, C order
    uint64  m                         number of names (m == n), then m x (uint64 length + bytes)

Parameter files name arrays ``arg:<name>`` (learned) and ``aux:<name>`` (BatchNorm statistics).
The writer exists for tests and round trips; it writes V2 (what MXNet >= 1.0 writes) or, on request,
the older V1/legacy layouts so the reader's every branch can be exercised.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from l2g.errors import L2GError

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA

# mshadow type flags -> numpy dtypes (little-endian)
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"), 4: np.dtype("<i4"),
    5: np.dtype("i1"), 6: np.dtype("<i8"), 7: np.dtype("?"), 8: np.dtype("<i2"), 9: np.dtype("<u2"),
    10: np.dtype("<u4"), 11: np.dtype("<u8"),
}
DTYPE_FLAGS = {dtype: flag for flag, dtype in DTYPES.items()}


class MXNetFormatError(L2GError, ValueError):
    """A file that is not a readable MXNet NDArray list; the message names the file."""


class _Reader:
    def __init__(self, buffer: bytearray, path: Path) -> None:
        self.buffer, self.path, self.pos = buffer, path, 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.buffer):
            raise MXNetFormatError(
                f"{self.path}: truncated MXNet .params file: {what} needs {size} bytes at offset {self.pos}, "
                f"but the file has {len(self.buffer)} bytes (an interrupted download?)"
            )
        view = memoryview(self.buffer)[self.pos : self.pos + size]
        self.pos += size
        return view

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]


def read_mxnet_params(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an MXNet ``.params`` file by name (``arg:``/``aux:`` prefixes kept), in file order.

    The arrays share one buffer with the file's bytes (no second copy of a 400 MB file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    reader = _Reader(bytearray(path.read_bytes()), path)
    magic = reader.unpack("Q", "the list header")
    if magic != LIST_MAGIC:
        raise MXNetFormatError(
            f"{path}: not an MXNet NDArray file (header {magic:#x}, expected {LIST_MAGIC:#x}); "
            "a .params file written by MXNet's nd.save / save_checkpoint is needed"
        )
    reader.unpack("Q", "the reserved word")
    count = reader.unpack("Q", "the array count")
    if count > len(reader.buffer):  # every array takes at least 4 bytes: a garbage count, not a real one
        raise MXNetFormatError(f"{path}: corrupt MXNet .params file (claims {count} arrays)")
    arrays = [_read_array(reader, index) for index in range(count)]
    num_names = reader.unpack("Q", "the name count")
    if num_names != count:
        raise MXNetFormatError(f"{path}: corrupt MXNet .params file ({count} arrays but {num_names} names)")
    names = []
    for index in range(num_names):
        length = reader.unpack("Q", f"the length of name {index}")
        raw = bytes(reader.take(length, f"name {index}"))
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise MXNetFormatError(f"{path}: corrupt MXNet .params file (name {index} is not text)") from error
    if reader.pos != len(reader.buffer):
        raise MXNetFormatError(
            f"{path}: corrupt MXNet .params file ({len(reader.buffer) - reader.pos} unexpected bytes after the names)"
        )
    if len(set(names)) != len(names):
        raise MXNetFormatError(f"{path}: corrupt MXNet .params file (duplicate array names)")
    return dict(zip(names, arrays, strict=True))


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    what = f"array {index}"
    magic = reader.unpack("I", f"the header of {what}")
    if magic in (V2_MAGIC, V3_MAGIC):
        storage = reader.unpack("i", f"the storage type of {what}")
        if storage != 0:
            raise MXNetFormatError(f"{reader.path}: {what} is a sparse array (storage type {storage}): unsupported")
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        ndim = reader.unpack("i", f"the shape of {what}")
        if ndim <= 0 and not (ndim == 0 and magic == V3_MAGIC):  # none-arrays: nothing follows
            return np.zeros((0,), np.float32)
        shape = struct.unpack(f"<{ndim}q", reader.take(8 * ndim, f"the shape of {what}")) if ndim else ()
    else:  # legacy layout: the word just read is ndim, the dims are uint32
        ndim = magic
        if ndim > 32:
            raise MXNetFormatError(f"{reader.path}: corrupt MXNet .params file ({what} has an unreadable header)")
        if ndim == 0:
            return np.zeros((0,), np.float32)
        shape = struct.unpack(f"<{ndim}I", reader.take(4 * ndim, f"the shape of {what}"))
    if any(dim < 0 for dim in shape):
        raise MXNetFormatError(f"{reader.path}: corrupt MXNet .params file ({what} has shape {shape})")
    reader.unpack("i", f"the context of {what}")
    reader.unpack("i", f"the context of {what}")
    flag = reader.unpack("i", f"the dtype of {what}")
    if flag not in DTYPES:
        raise MXNetFormatError(f"{reader.path}: {what} has unknown dtype flag {flag}")
    dtype = DTYPES[flag]
    size = int(np.prod(shape, dtype=np.int64))
    data = reader.take(size * dtype.itemsize, f"the data of {what} (shape {tuple(shape)}, {dtype})")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def write_mxnet_params(path: str | Path, arrays: dict[str, np.ndarray], version: str = "v2") -> Path:
    """Write ``arrays`` as MXNet's ``nd.save`` does (``version``: "v2", "v1" or "legacy")."""
    if version not in ("v2", "v1", "legacy"):
        raise ValueError(f"version must be v2, v1 or legacy, got {version!r}")
    chunks = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in DTYPE_FLAGS:
            raise ValueError(f"{name}: dtype {array.dtype} has no MXNet type flag")
        if version == "legacy":
            chunks.append(struct.pack(f"<I{array.ndim}I", array.ndim, *array.shape))
        else:
            if version == "v2":
                chunks.append(struct.pack("<Ii", V2_MAGIC, 0))
            else:
                chunks.append(struct.pack("<I", V1_MAGIC))
            chunks.append(struct.pack(f"<i{array.ndim}q", array.ndim, *array.shape))
        chunks.append(struct.pack("<iii", 1, 0, DTYPE_FLAGS[dtype]))  # context: cpu(0)
        chunks.append(array.astype(dtype, copy=False).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(raw)) + raw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    return path

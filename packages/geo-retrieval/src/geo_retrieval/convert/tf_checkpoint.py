"""A small pure-Python reader (and test writer) of TensorFlow's checkpoint bundle format (V2).

Convention: a TF checkpoint ``PREFIX`` (``tf.train.Saver().save(sess, PREFIX)``) is a bundle of an
index ``PREFIX.index`` and data shards ``PREFIX.data-SSSSS-of-NNNNN``. The index is a LevelDB-format
table (48-byte footer with the magic ``0xdb4775248b80fb57``, uncompressed blocks of prefix-compressed
keys with restart points, each block followed by a type byte and a masked CRC32C, which are checked);
key ``""`` holds the ``BundleHeaderProto`` (number of shards, endianness), every other key a variable
name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c). A tensor is
``size`` raw bytes in its shard at ``offset``, C-order, little-endian. Only what TF1 ``Saver`` writes
for plain variables is read: numeric dtypes, whole (unsliced) tensors; anything else raises
``ValueError`` naming the file and the key. The tensors' own CRC32C is not recomputed (pure Python
would take seconds per 100 MB); their sizes are checked against dtype and shape, and a data shard
shorter than an entry's end raises naming the shard and the key.

:func:`write_tf_checkpoint` writes the same format (one data block, one shard), for tests and
parity fixtures, so that tests never need TensorFlow.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "TFCheckpointError",
    "TFEntry",
    "read_tf_checkpoint",
    "tf_checkpoint_entries",
    "tf_checkpoint_prefix",
    "write_tf_checkpoint",
]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
#: TF ``DataType`` enum -> numpy dtype (little-endian)
_DTYPES: dict[int, str] = {
    1: "<f4",
    2: "<f8",
    3: "<i4",
    4: "u1",
    5: "<i2",
    6: "i1",
    9: "<i8",
    10: "?",
    19: "<f2",
}
_ENUMS = {np.dtype(v): k for k, v in _DTYPES.items()}


class TFCheckpointError(ValueError):
    """A file is not a readable TF checkpoint bundle (names the file, and the key where one is at fault)."""


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = buf[pos : pos + n]
            if len(value) != n:
                raise ValueError("length-delimited field runs past the end")
            pos += n
        elif wire == 5:
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def tf_checkpoint_prefix(path: str | os.PathLike[str]) -> Path:
    """The bundle prefix of ``path``: ``X.index`` or ``X.data-*-of-*`` -> ``X``; anything else as is."""
    p = Path(path)
    name = p.name
    if name.endswith(".index"):
        return p.with_name(name[: -len(".index")])
    head, sep, tail = name.rpartition(".data-")
    if sep and "-of-" in tail:
        return p.with_name(head)
    return p


class _Table:
    """The blocks of a LevelDB-format table held in memory (the index file is small)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path = data, path

    def block(self, offset: int, size: int, what: str) -> bytes:
        end = offset + size
        if end + 5 > len(self.data):
            raise TFCheckpointError(f"{os.fspath(self.path)}: truncated ({what} block ends past the file)")
        body = self.data[offset:end]
        kind = self.data[end]
        (stored,) = struct.unpack_from("<I", self.data, end + 1)
        if _mask(_crc32c(body + bytes([kind]))) != stored:
            raise TFCheckpointError(
                f"{os.fspath(self.path)}: CRC mismatch in the {what} block at byte {offset}"
            )
        if kind != 0:
            raise TFCheckpointError(
                f"{os.fspath(self.path)}: compressed table blocks (type {kind}) are not supported"
            )
        return body

    @staticmethod
    def entries(block: bytes) -> list[tuple[bytes, bytes]]:
        (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        limit = len(block) - 4 - 4 * restarts
        out: list[tuple[bytes, bytes]] = []
        pos, key = 0, b""
        while pos < limit:
            shared, pos = _varint(block, pos)
            non_shared, pos = _varint(block, pos)
            value_len, pos = _varint(block, pos)
            key = key[:shared] + block[pos : pos + non_shared]
            pos += non_shared
            out.append((key, block[pos : pos + value_len]))
            pos += value_len
        return out


def _read_index(index: Path) -> list[tuple[bytes, bytes]]:
    data = index.read_bytes()
    if len(data) < _FOOTER:
        raise TFCheckpointError(f"{os.fspath(index)}: truncated ({len(data)} bytes, no table footer)")
    footer = data[-_FOOTER:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER - 8)
    if magic != _MAGIC:
        raise TFCheckpointError(f"{os.fspath(index)}: not a TF checkpoint index (bad table magic)")
    table = _Table(data, index)
    try:
        _, p = _varint(footer, 0)  # the metaindex handle (unused), then the index handle
        _, p = _varint(footer, p)
        idx_off, p = _varint(footer, p)
        idx_size, _ = _varint(footer, p)
        out: list[tuple[bytes, bytes]] = []
        for _, handle in table.entries(table.block(idx_off, idx_size, "index")):
            off, q = _varint(handle, 0)
            size, _ = _varint(handle, q)
            out.extend(table.entries(table.block(off, size, "data")))
    except (IndexError, ValueError, struct.error) as err:
        if isinstance(err, TFCheckpointError):
            raise
        raise TFCheckpointError(f"{os.fspath(index)}: damaged table ({err})") from None
    return out


class TFEntry(NamedTuple):
    """One variable of a TF checkpoint index: numpy ``dtype``, ``shape``, and where its bytes are."""

    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _entry(fields: list[tuple[int, int | bytes]], name: str, index: Path) -> TFEntry:
    """A ``BundleEntryProto``'s fields -> :class:`TFEntry` (checked: dtype known, size = shape x itemsize)."""
    dtype = shard = offset = size = 0
    shape: list[int] = []
    for f, v in fields:
        if f == 1 and isinstance(v, int):
            dtype = v
        elif f == 2 and isinstance(v, bytes):
            for g, dim in _proto_fields(v):
                if g == 2 and isinstance(dim, bytes):
                    shape.append(int(next((d for h, d in _proto_fields(dim) if h == 1), 0)))
        elif f == 3 and isinstance(v, int):
            shard = v
        elif f == 4 and isinstance(v, int):
            offset = v
        elif f == 5 and isinstance(v, int):
            size = v
        elif f == 7:
            raise TFCheckpointError(f"{os.fspath(index)}: {name!r} is stored in slices (not supported)")
    if dtype not in _DTYPES:
        raise TFCheckpointError(f"{os.fspath(index)}: {name!r} has TF dtype {dtype}, which is not supported")
    np_dtype = _DTYPES[dtype]
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize != size:
        raise TFCheckpointError(
            f"{os.fspath(index)}: {name!r} has {size} bytes, not {tuple(shape)} x {np.dtype(np_dtype).name}"
        )
    return TFEntry(np_dtype, tuple(shape), shard, offset, size)


def tf_checkpoint_entries(path: str | os.PathLike[str]) -> tuple[dict[str, TFEntry], int]:
    """The variables listed in a TF checkpoint's index, without reading the data shards.

    Args:
        path: the prefix ``X`` or ``X.index`` (or one of its ``X.data-*`` shards).

    Returns:
        ``({name: TFEntry}, number of shards)``.

    Raises:
        FileNotFoundError: no ``X.index``.
        TFCheckpointError: a damaged or truncated index, or an unsupported entry (names the key).
    """
    prefix = tf_checkpoint_prefix(path)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise FileNotFoundError(f"no TF checkpoint index at {os.fspath(index)!r}")
    num_shards = 1
    specs: dict[str, TFEntry] = {}
    for key, value in _read_index(index):
        try:
            fields = _proto_fields(value)
        except (ValueError, IndexError, struct.error) as err:
            raise TFCheckpointError(f"{os.fspath(index)}: entry {key!r} is damaged ({err})") from None
        if key == b"":
            for f, v in fields:
                if f == 1 and isinstance(v, int):
                    num_shards = v
                if f == 2 and v != 0:
                    raise TFCheckpointError(f"{os.fspath(index)}: big-endian checkpoints are not supported")
            continue
        name = key.decode("utf-8", "replace")
        specs[name] = _entry(fields, name, index)
    return specs, num_shards


def read_tf_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All tensors of a TF (V2 bundle) checkpoint as ``{variable name: array}``.

    Args:
        path: the prefix ``X`` or ``X.index`` (or one of its ``X.data-*`` shards).

    Returns:
        ``{name: np.ndarray}`` in the stored dtype and shape (the arrays own their memory).

    Raises:
        FileNotFoundError: no ``X.index`` or a missing data shard.
        TFCheckpointError: a damaged or truncated file, or an entry this reader does not support (names
            the file and the key).
    """
    prefix = tf_checkpoint_prefix(path)
    specs, num_shards = tf_checkpoint_entries(prefix)
    out: dict[str, np.ndarray] = {}
    shards: dict[int, bytes] = {}
    for name, (np_dtype, shape, shard, offset, size) in specs.items():
        if shard not in shards:
            data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
            if not data.is_file():
                raise FileNotFoundError(
                    f"TF checkpoint shard missing: {os.fspath(data)!r} (needed for {name!r})"
                )
            shards[shard] = data.read_bytes()
        buf = shards[shard]
        if offset + size > len(buf):
            data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
            raise TFCheckpointError(
                f"{os.fspath(data)}: truncated ({len(buf)} bytes; {name!r} needs bytes {offset}..{offset + size})"
            )
        out[name] = (
            np.frombuffer(buf, dtype=np_dtype, count=size // np.dtype(np_dtype).itemsize, offset=offset)
            .reshape(shape)
            .copy()
        )
    return out


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = bytearray()
    restarts = []
    for key, value in entries:
        restarts.append(len(body))
        body += _put_varint(0) + _put_varint(len(key)) + _put_varint(len(value)) + key + value
    if not restarts:
        restarts = [0]
    for r in restarts:
        body += struct.pack("<I", r)
    body += struct.pack("<I", len(restarts))
    return bytes(body)


def write_tf_checkpoint(prefix: str | os.PathLike[str], tensors: Mapping[str, np.ndarray]) -> Path:
    """Write ``tensors`` as a TF V2 checkpoint bundle ``PREFIX.index`` + ``PREFIX.data-00000-of-00001``.

    For tests and fixtures: :func:`read_tf_checkpoint` reads it; the tensors' CRC32C is not written
    (TF's own reader checks it, so it would refuse these files). Returns the ``.index`` path.
    """
    prefix = Path(prefix)
    data = bytearray()
    entries: list[tuple[bytes, bytes]] = [(b"", b"\x08\x01")]  # BundleHeaderProto{num_shards: 1}
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if np.dtype(dt) not in _ENUMS:
            raise ValueError(f"{name!r}: dtype {arr.dtype} cannot be written")
        raw = arr.astype(dt.newbyteorder("<") if dt.itemsize > 1 else dt).tobytes()
        dims = b"".join(
            b"\x12" + _put_varint(len(d)) + d for d in (b"\x08" + _put_varint(int(s)) for s in arr.shape)
        )
        entry = (
            b"\x08"
            + _put_varint(_ENUMS[np.dtype(dt)])
            + b"\x12"
            + _put_varint(len(dims))
            + dims
            + b"\x20"
            + _put_varint(len(data))
            + b"\x28"
            + _put_varint(len(raw))
        )
        entries.append((name.encode(), entry))
        data += raw
    index = bytearray()

    def put(block: bytes) -> bytes:
        off = len(index)
        index.extend(block + b"\x00" + struct.pack("<I", _mask(_crc32c(block + b"\x00"))))
        return _put_varint(off) + _put_varint(len(block))

    data_handle = put(_block(entries))
    meta_handle = put(_block([]))
    index_handle = put(_block([(entries[-1][0], data_handle)]))
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", _MAGIC)
    index += footer
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    out = prefix.with_name(prefix.name + ".index")
    out.write_bytes(bytes(index))
    return out

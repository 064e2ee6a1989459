"""The encoding of a chunk: one series' samples (or rollups) over one window, in a BLOB.

A chunk holds columns, the timestamps and the values (for a rollup: the bucket starts and
the min, max, sum and count), each encoded on its own:

- timestamps are whole milliseconds (the store keeps them to the millisecond), stored as the
  first one and then the differences of the differences (a series read at a steady interval
  gives a column of zeros), or the differences if they compress better (jittery ones);
- a column of values that are all decimals of at most :data:`MAX_DECIMALS` places
  (integers, counters, percentages to one place, ...) is stored as scaled integers: as they
  are, as differences, or as differences of differences, whichever compresses best; any
  other column keeps its exact 64 bits, each XOR-ed with the one before (a value that
  repeats costs zero bits, a slowly changing one mostly zero high bytes).

Each column is then narrowed to the smallest integer width that holds it, byte-shuffled (the
first byte of every number, then the second, ...: the zero high bytes line up) and compressed
with zstd. Decoding gives back exactly the values written and the timestamps to the
millisecond.

Layout (little-endian): a version byte, the count (uint32), the number of value columns
(a byte), then the timestamps and each value column as a mode byte,
a parameter byte (the decimal places, or the width), the first number (int64 or the first
value's bits), the compressed length (uint32) and the compressed bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import zstandard

#: The version byte of the layout above.
VERSION = 1
#: Most decimal places a value may have to be stored as a scaled integer.
MAX_DECIMALS = 4
#: zstd's level: 3 (its default) compresses these columns within a few percent of level 19,
#: at a small fraction of the time.
LEVEL = 3

_HEAD = struct.Struct("<BIB")
_COLUMN = struct.Struct("<BBqI")
# Column modes. Timestamps use _DOD or _DELTA; values any.
_RAW, _DELTA, _DOD, _XOR = 0, 1, 2, 3
#: Integers beyond this are not exact as floats: values this large keep their bits.
_EXACT = 2**53
_WIDTHS = (np.int8, np.int16, np.int32, np.int64)
_BYTES = (1, 2, 4, 8)


class ChunkError(ValueError):
    """A BLOB that is not a chunk of a layout this release reads."""


def encode(
    timestamps: Sequence[float] | np.ndarray, *columns: Sequence[float] | np.ndarray
) -> bytes:
    """Encode one series' samples (in time order) as a chunk: their timestamps and one or
    more columns of values (a sample's value; a rollup's min, max, sum and count)."""
    ts = np.rint(np.asarray(timestamps, dtype=np.float64) * 1000).astype(np.int64)
    values = [np.asarray(c, dtype=np.float64) for c in columns]
    if ts.ndim != 1 or not values or any(v.shape != ts.shape for v in values):
        raise ValueError("timestamps and values must be columns of the same length")
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    parts = [_HEAD.pack(VERSION, len(ts), len(values))]
    if len(ts):
        parts.append(
            min(_column(compressor, _DOD, 0, ts), _column(compressor, _DELTA, 0, ts), key=len)
        )
        parts.extend(_values(compressor, v) for v in values)
    return b"".join(parts)


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (timestamps in seconds, values) of a chunk of samples."""
    ts, (values, *_) = decode_columns(blob)
    return ts, values


def decode_columns(blob: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
    """The timestamps (seconds) and the value columns of a chunk."""
    try:
        version, count, width = _HEAD.unpack_from(blob, 0)
    except struct.error as exc:
        raise ChunkError(f"not a chunk: {len(blob)} bytes") from exc
    if version != VERSION:
        raise ChunkError(f"chunk layout {version} is not one this release reads ({VERSION})")
    if not count:
        return np.empty(0), [np.empty(0) for _ in range(width)]
    decompressor = zstandard.ZstdDecompressor()
    offset = _HEAD.size
    ms, _, _, offset = _read_column(decompressor, blob, offset, count)
    columns = []
    for _ in range(width):
        numbers, mode, places, offset = _read_column(decompressor, blob, offset, count)
        columns.append(numbers.view(np.float64) if mode == _XOR else numbers / 10.0**places)
    return ms / 1000.0, columns


def count_of(blob: bytes) -> int:
    """The number of samples in a chunk, without decoding it."""
    return int(_HEAD.unpack_from(blob, 0)[1])


def _values(compressor: zstandard.ZstdCompressor, vs: np.ndarray) -> bytes:
    places = decimal_places(vs)
    if places is None:
        bits = vs.view(np.int64)
        return _column(compressor, _XOR, 0, bits)
    scaled = np.rint(vs * 10.0**places).astype(np.int64)
    candidates = (_column(compressor, mode, places, scaled) for mode in (_RAW, _DELTA, _DOD))
    return min(candidates, key=len)


def decimal_places(vs: np.ndarray) -> int | None:
    """The fewest decimal places that give back every value exactly, or None."""
    if np.any(np.signbit(vs) & (vs == 0)):
        return None  # -0.0 would come back as 0.0
    largest = float(np.abs(vs).max())
    for places in range(MAX_DECIMALS + 1):
        scale = 10.0**places
        if largest * scale >= _EXACT:
            return None
        scaled = np.rint(vs * scale)
        # The same division as decoding does: the round trip must give each value back.
        if np.array_equal(scaled / scale, vs):
            return places
    return None


def _column(
    compressor: zstandard.ZstdCompressor, mode: int, param: int, numbers: np.ndarray
) -> bytes:
    first = int(numbers[0])
    if mode == _RAW:
        body = numbers - first
    elif mode == _DELTA:
        body = np.diff(numbers, prepend=first)
    elif mode == _DOD:
        deltas = np.diff(numbers, prepend=first)
        body = np.diff(deltas, prepend=0)
    else:  # _XOR
        body = np.bitwise_xor(numbers, np.concatenate(([first], numbers[:-1])))
    narrow = _narrow(body)
    width = narrow.dtype.itemsize
    # One row of bytes per byte of the numbers: their (mostly zero) high bytes line up.
    shuffled = narrow.view(np.uint8).reshape(-1, width).T.tobytes()
    packed = compressor.compress(shuffled)
    return _COLUMN.pack(mode, param, first, len(packed)) + packed


def _narrow(body: np.ndarray) -> np.ndarray:
    low, high = int(body.min()), int(body.max())
    for dtype in _WIDTHS:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return body.astype(dtype)
    return body


def _read_column(
    decompressor: zstandard.ZstdDecompressor, blob: bytes, offset: int, count: int
) -> tuple[np.ndarray, int, int, int]:
    """One column's numbers (int64; a value's bits for XOR), its mode and parameter, and
    the offset after it."""
    try:
        mode, param, first, length = _COLUMN.unpack_from(blob, offset)
        offset += _COLUMN.size
        shuffled = decompressor.decompress(blob[offset : offset + length])
    except (struct.error, zstandard.ZstdError) as exc:
        raise ChunkError(f"damaged chunk: {exc}") from exc
    width = len(shuffled) // count
    if width not in _BYTES or width * count != len(shuffled):
        raise ChunkError(f"damaged chunk: {len(shuffled)} bytes for {count} numbers")
    dtype = _WIDTHS[_BYTES.index(width)]
    columns = np.frombuffer(shuffled, dtype=np.uint8).reshape(width, count)
    body = np.ascontiguousarray(columns.T).view(dtype).reshape(count).astype(np.int64)
    if mode == _RAW:
        numbers = body + first
    elif mode == _DELTA:
        numbers = np.cumsum(body) + first
    elif mode == _DOD:
        numbers = np.cumsum(np.cumsum(body)) + first
    elif mode == _XOR:
        body[0] = first
        numbers = np.bitwise_xor.accumulate(body)
    else:
        raise ChunkError(f"damaged chunk: unknown column mode {mode}")
    return numbers, mode, param, offset + length

"""Label Studio's brush RLE (thi.ng ``rle-pack``), vectorised.

A brush mask is stored as the RLE of its RGBA image, flattened row by row ([H, W, 4] uint8,
the mask in every channel). The bit stream: the value count (32 bits), the word size minus one
(5 bits), four run-length field sizes minus one (4 bits each); then per chunk a flag bit (1: a
run of one repeated word; 0: literal words), 2 bits choosing the length field, the length minus
one, and the word(s). Bytes are packed most significant bit first.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
LENGTH_FIELDS = (3, 4, 8, 16)
"""Bits of the run-length field for each 2-bit selector, as Label Studio's own encoder uses them."""
_LONGEST = 1 << LENGTH_FIELDS[-1]


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The bits of non-negative ``values`` (int64 [N]), each ``widths`` (int [N]) bits long, most
    significant first, concatenated: uint8 [sum(widths)]."""
    total = int(widths.sum())
    ends = np.cumsum(widths)
    owner = np.repeat(np.arange(len(values)), widths)
    shift = ends[owner] - 1 - np.arange(total)
    return ((values[owner] >> shift) & 1).astype(np.uint8)


def encode(mask: np.ndarray) -> list[int]:
    """The brush RLE (bytes as ints, as Label Studio's JSON holds them) of uint8 [H, W] ``mask``
    (0 outside, 255 inside is what Label Studio draws)."""
    flat = np.repeat(np.ascontiguousarray(mask, dtype=np.uint8).ravel(), 4)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    values = flat[starts].astype(np.int64)
    pieces = np.maximum(1, -(-lengths // _LONGEST))  # runs over 65,536 are split
    run_values = np.repeat(values, pieces)
    run_lengths = np.full(int(pieces.sum()), _LONGEST, np.int64)
    last = np.cumsum(pieces) - 1
    run_lengths[last] = lengths - (pieces - 1) * _LONGEST
    selector = np.searchsorted(np.array([1 << n for n in LENGTH_FIELDS]), run_lengths)
    field = np.array(LENGTH_FIELDS)[selector]
    # per run: flag 1, selector (2 bits), length - 1 (field bits), value (8 bits)
    chunk_values = np.stack([np.ones_like(run_lengths), selector, run_lengths - 1, run_values], axis=1)
    chunk_widths = np.stack(
        [np.ones_like(field), np.full_like(field, 2), field, np.full_like(field, WORD_BITS)], axis=1
    )
    header_values = np.array([flat.size, WORD_BITS - 1, *(n - 1 for n in LENGTH_FIELDS)], np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4])
    stream = _bits(
        np.concatenate([header_values, chunk_values.ravel()]), np.concatenate([header_widths, chunk_widths.ravel()])
    )
    stream = np.concatenate([stream, np.zeros(-len(stream) % 8, np.uint8)])
    return np.packbits(stream).tolist()


class _BitReader:
    """Reads fields of a bit stream (uint8 [N] of 0/1) most significant bit first."""

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = bits
        self.position = 0

    def read(self, width: int) -> int:
        end = self.position + width
        if end > len(self.bits):
            raise ValueError("brush RLE ends early")
        chunk = self.bits[self.position : end]
        self.position = end
        return int(chunk.dot(1 << np.arange(width - 1, -1, -1, dtype=np.int64))) if width else 0


def decode(rle: list[int], height: int, width: int) -> np.ndarray:
    """uint8 [H, W] mask (the alpha channel) of a brush RLE.

    Raises:
        ValueError: the stream is malformed or does not hold H x W x 4 values.
    """
    reader = _BitReader(np.unpackbits(np.asarray(rle, dtype=np.uint8)))
    count = reader.read(32)
    if count != height * width * 4:
        raise ValueError(f"brush RLE holds {count} values, not {height} x {width} x 4")
    word = reader.read(5) + 1
    fields = [reader.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    index = 0
    while index < count:
        repeated = reader.read(1)
        end = min(count, index + 1 + reader.read(fields[reader.read(2)]))
        if repeated:
            out[index:end] = reader.read(word)
        else:
            for position in range(index, end):
                out[position] = reader.read(word)
        index = end
    return out.reshape(height, width, 4)[:, :, 3]

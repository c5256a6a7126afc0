"""Chunk grid math (pybridge.zarr.chunks), checked against brute force."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from pybridge.zarr.chunks import (
    as_banded,
    band_ranges,
    chunk_key,
    chunk_parts,
    count_chunks,
    normalize_selection,
    rows_per_band,
)
from pybridge.errors import InvalidSelection


def _brute_force(shape, chunks, lo, hi):
    """Chunk index -> set of element coordinates of the box inside it."""
    out: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for coord in itertools.product(*(range(a, b) for a, b in zip(lo, hi))):
        idx = tuple(c // k for c, k in zip(coord, chunks))
        out.setdefault(idx, set()).add(coord)
    return out


@pytest.mark.parametrize("seed", range(200))
def test_chunk_parts_tile_the_box_exactly(seed):
    rng = random.Random(seed)
    ndim = rng.randint(1, 4)
    shape = [rng.randint(1, 9) for _ in range(ndim)]
    chunks = [rng.randint(1, 5) for _ in range(ndim)]
    lo = [rng.randint(0, n) for n in shape]
    hi = [rng.randint(a, n) for a, n in zip(lo, shape)]
    parts = chunk_parts(shape, chunks, lo, hi)
    expected = _brute_force(shape, chunks, lo, hi)
    assert [p.coords for p in parts] == sorted(expected)
    assert count_chunks(lo, hi, chunks) == len(expected)
    # Rebuild the box from the parts: every element exactly once, at the right place.
    src = np.arange(int(np.prod(shape))).reshape(shape)
    box = np.full([b - a for a, b in zip(lo, hi)], -1)
    for p in parts:
        c0 = [i * c for i, c in zip(p.coords, chunks)]
        chunk_sl = tuple(slice(o + a, o + b) for o, a, b in zip(c0, p.lo, p.hi))
        out_sl = tuple(slice(o, o + b - a) for o, a, b in zip(p.out, p.lo, p.hi))
        assert (box[out_sl] == -1).all()
        box[out_sl] = src[chunk_sl]
        covered = {tuple(o + x for o, x in zip(c0, t))
                   for t in itertools.product(*(range(a, b) for a, b in zip(p.lo, p.hi)))}
        assert covered == expected[p.coords]
        # full: the part covers the chunk as far as the array extends
        whole = all(a == 0 and b == min(c, n - o)
                    for a, b, c, n, o in zip(p.lo, p.hi, chunks, shape, c0))
        assert p.full == whole
    assert (box == src[tuple(slice(a, b) for a, b in zip(lo, hi))]).all()


def test_empty_box_has_no_parts():
    assert chunk_parts([4, 4], [2, 2], [1, 3], [1, 4]) == []
    assert count_chunks([1, 3], [1, 4], [2, 2]) == 0


def test_normalize_selection_defaults_and_errors():
    assert normalize_selection([4, 5], None, None) == ((0, 0), (4, 5))
    assert normalize_selection([4, 5], [1, 2], None) == ((1, 2), (4, 5))
    assert normalize_selection([], None, None) == ((), ())
    for start, stop in [([0], [1, 1]), ([-1, 0], None), ([0, 0], [5, 5]),
                        ([3, 0], [2, 5]), ([0, 0, 0], None), (None, [4, -1])]:
        with pytest.raises(InvalidSelection):
            normalize_selection([4, 5], start, stop)


def test_chunk_keys():
    assert chunk_key((1, 2), "default", "/") == "c/1/2"
    assert chunk_key((1, 2), "default", ".") == "c.1.2"
    assert chunk_key((), "default", "/") == "c"
    assert chunk_key((1, 2), "v2", ".") == "1.2"
    assert chunk_key((1, 2), "v2", "/") == "1/2"
    assert chunk_key((), "v2", ".") == "0"


def test_chunk_keys_match_zarr_python():
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding

    for coords in [(), (0,), (3, 1), (2, 0, 7)]:
        for sep in ("/", "."):
            assert chunk_key(coords, "default", sep) == \
                DefaultChunkKeyEncoding(separator=sep).encode_chunk_key(coords)
            assert chunk_key(coords, "v2", sep) == \
                V2ChunkKeyEncoding(separator=sep).encode_chunk_key(coords)


def test_as_banded_gives_0d_one_dimension():
    assert as_banded((), (), (), ()) == ((1,), (1,), (0,), (1,))
    assert as_banded((4,), (2,), (1,), (3,)) == ((4,), (2,), (1,), (3,))


@pytest.mark.parametrize("lo,hi,chunk0,rows", [
    (0, 100, 10, 30), (7, 93, 10, 20), (0, 5, 10, 10), (3, 4, 1, 1), (0, 1000, 7, 5),
    (13, 1000, 7, 3),
])
def test_band_ranges_cover_once_and_align(lo, hi, chunk0, rows):
    bands = list(band_ranges(lo, hi, chunk0, rows))
    assert bands[0][0] == lo and bands[-1][1] == hi
    assert all(a < b for a, b in bands)
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(bands, bands[1:]))
    if rows % chunk0 == 0:
        # every cut is on a chunk boundary, so no chunk is in two bands
        assert all(b % chunk0 == 0 for _, b in bands[:-1])
        assert all(b - a <= rows for a, b in bands)


def test_band_ranges_empty():
    assert list(band_ranges(5, 5, 2, 4)) == []


def test_rows_per_band():
    MiB = 1 << 20
    # seed array: 1000x500 float64, chunks 100x50: a chunk row is 400 kB, 10 chunks
    rows = rows_per_band(100, 1000, 500 * 8, 10, 2, 4 * MiB, 32 * MiB)
    assert rows % 100 == 0 and rows * 500 * 8 >= 4 * MiB or rows >= 1000
    # one chunk row over the max: cut inside the chunk row, bounded
    rows = rows_per_band(1000, 4000, 64 * 1024, 1, 2, 4 * MiB, 32 * MiB)
    assert rows * 64 * 1024 <= 32 * MiB and rows >= 1
    # at least 2 chunks per worker
    rows = rows_per_band(10, 10_000, 80, 1, 4, 64, 32 * MiB)
    assert rows == 80

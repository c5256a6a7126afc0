"""The benchmark's arrays and codec inputs, written under one scratch directory.

- ``seed``: the seed guide's array, 1000×500 float64, chunks 100×50,
  Blosc(zstd, clevel 3, shuffle), Zarr v2, filled with standard normals.
- ``big``: 256 MiB float64 (32 MiB with ``--quick``), chunks of 1 MiB,
  zstd level 3, Zarr v3.
- ``sharded``: the same values in v3 sharded form: inner chunks of 128 KiB
  inside shards of 8 MiB (64 inner chunks per shard).

``big`` holds a random walk rounded to two decimals, so zstd compresses it
about 2.9x, like smooth measured data, rather than white noise that does not
compress at all. Every dataset knows the SHA-256 of its C-order
little-endian bytes, which every timed read is checked against.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CODEC_CONFIGS",
    "Dataset",
    "create_empty_like",
    "prepare_codec_items",
    "prepare_dataset",
    "sha256_of",
]

MiB = 1024 * 1024

#: numcodecs configs for the codec throughput row (issue 3's ``bench/codecs``).
CODEC_CONFIGS: dict[str, dict[str, Any]] = {
    "zstd": {"id": "zstd", "level": 3},
    "blosc-zstd": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1},
    "zlib": {"id": "zlib", "level": 1},
}

#: One codec-row chunk: 1 MiB of float64.
CHUNK_ITEMS = MiB // 8


@dataclass(frozen=True)
class Dataset:
    """An array on disk plus what the benchmark needs to know about it."""

    name: str
    path: Path
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    description: str
    #: A short name for table rows, e.g. "the 256 MiB array".
    title: str
    sha256: str
    nbytes: int
    #: The array's raw bytes in a flat file, for Elixir's write row.
    raw_path: Path
    quick: bool

    @property
    def chunk_count(self) -> int:
        return int(np.prod([-(-s // c) for s, c in zip(self.shape, self.chunks)]))

    @property
    def shard_count(self) -> int:
        if self.shards is None:
            return 0
        return int(np.prod([-(-s // c) for s, c in zip(self.shape, self.shards)]))


def sha256_of(data: Any) -> str:
    """SHA-256 of an array's C-order little-endian bytes (or of raw bytes)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).hexdigest()
    arr = np.ascontiguousarray(data)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.data.cast("B")).hexdigest()


def _seed_values() -> np.ndarray[Any, Any]:
    return np.random.default_rng(20240611).standard_normal((1000, 500))


@functools.lru_cache(maxsize=2)
def _walk_values(shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    n = shape[0] * shape[1]
    walk = np.cumsum(rng.standard_normal(n))
    values = np.round(walk, 2).reshape(shape)
    values.flags.writeable = False  # shared by the cache
    return values


def big_shape(quick: bool) -> tuple[int, int]:
    """256 MiB (32 MiB when quick) of float64 as a 2-D shape."""
    return (1024, 4096) if quick else (4096, 8192)


def _layout(name: str, quick: bool) -> dict[str, Any]:
    import numcodecs
    from zarr.codecs import ZstdCodec

    if name == "seed":
        return {
            "shape": (1000, 500), "chunks": (100, 50), "shards": None, "zarr_format": 2,
            "compressors": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=1),
            "description": "1000×500 float64, chunks 100×50, Blosc zstd 3, v2",
            "title": "the seed's array",
        }
    shape = big_shape(quick)
    size = f"{shape[0] * shape[1] * 8 // MiB} MiB"
    if name == "big":
        return {
            "shape": shape, "chunks": (256, 512), "shards": None, "zarr_format": 3,
            "compressors": ZstdCodec(level=3),
            "description": f"{size} float64, 1 MiB chunks (256×512), zstd 3, v3",
            "title": f"the {size} array",
        }
    if name == "sharded":
        return {
            "shape": shape, "chunks": (128, 128), "shards": (1024, 1024), "zarr_format": 3,
            "compressors": ZstdCodec(level=3),
            "description": (f"{size} float64, v3 sharded: 128 KiB inner chunks (128×128) "
                            "in 8 MiB shards, zstd 3"),
            "title": f"the {size} sharded array",
        }
    raise ValueError(f"unknown dataset {name!r}")


def create_empty_like(dataset: Dataset, path: Path) -> Any:
    """Create an empty array at ``path`` with ``dataset``'s layout and codecs."""
    import zarr

    lay = _layout(dataset.name, dataset.quick)
    return zarr.create_array(
        store=str(path), shape=lay["shape"], chunks=lay["chunks"], shards=lay["shards"],
        dtype="float64", compressors=lay["compressors"], zarr_format=lay["zarr_format"],
        overwrite=True,
    )


def prepare_dataset(name: str, root: Path, quick: bool) -> Dataset:
    """Write dataset ``name`` under ``root`` (skipped when already there)."""
    lay = _layout(name, quick)
    values = _seed_values() if name == "seed" else _walk_values(lay["shape"])
    path = root / name
    raw_path = root / f"{name}.raw"
    digest = sha256_of(values)
    stamp = root / f"{name}.sha256"
    if not (stamp.exists() and stamp.read_text() == digest):
        import zarr

        z = zarr.create_array(
            store=str(path), shape=lay["shape"], chunks=lay["chunks"], shards=lay["shards"],
            dtype="float64", compressors=lay["compressors"], zarr_format=lay["zarr_format"],
            overwrite=True,
        )
        z[...] = values
        values.astype("<f8", copy=False).tofile(raw_path)
        stamp.write_text(digest)
    return Dataset(
        name=name, path=path, zarr_format=lay["zarr_format"], shape=lay["shape"],
        chunks=lay["chunks"], shards=lay["shards"], description=lay["description"],
        title=lay["title"],
        sha256=digest, nbytes=int(values.nbytes), raw_path=raw_path, quick=quick,
    )


@dataclass(frozen=True)
class CodecItems:
    """Encoded 1 MiB chunks for one codec, in memory and in a file for Elixir."""

    label: str
    config: dict[str, Any]
    encoded: list[bytes]
    #: The concatenated decoded bytes' SHA-256.
    sha256: str
    decoded_bytes: int
    #: Items as 4-byte big-endian length + bytes, one after another.
    path: Path


def prepare_codec_items(label: str, root: Path, count: int) -> CodecItems:
    """Encode ``count`` 1 MiB float64 chunks with the codec ``label``."""
    import numcodecs

    config = CODEC_CONFIGS[label]
    codec = numcodecs.get_codec(dict(config))
    values = _walk_values((count, CHUNK_ITEMS))
    chunks = [values[i].tobytes() for i in range(count)]
    encoded = [bytes(codec.encode(c)) for c in chunks]
    path = root / f"codec-{label}.items"
    with open(path, "wb") as f:
        for e in encoded:
            f.write(struct.pack(">I", len(e)))
            f.write(e)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    return CodecItems(label=label, config=config, encoded=encoded, sha256=digest,
                      decoded_bytes=sum(len(c) for c in chunks), path=path)

"""Array metadata: open with zarr-python, describe for the wire.

zarr-python is the reference engine for metadata: it parses and validates
``.zarray``/``zarr.json`` documents and writes new ones. This module turns
what it finds into an :class:`ArrayMeta`: the wire metadata map
(``PROTOCOL.md`` §7) plus the :class:`~pybridge.arrays.pipeline.ChunkSpec`
that the chunk tasks use. Creating arrays is :mod:`pybridge.arrays.create`.

Opened metadata is cached per (store, path). Each use checks the metadata
files' ``stat`` (mtime, size, inode), so an array rewritten by anyone else is
reopened at once, and an unchanged one costs one or two ``stat`` calls.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pybridge.arrays.pipeline import CRC32C, ChunkSpec
from pybridge.arrays.store import StoreRef
from pybridge.errors import (
    BridgeError,
    CodecUnavailable,
    InvalidMetadata,
    NotFound,
    StoreError,
    UnsupportedDtype,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT",
    "ArrayMeta",
    "forget",
    "locate",
    "open_meta",
    "open_zarr",
    "require_fixed_size",
    "wire_scalar",
]

#: Marks a create param the request did not give (so zarr's default applies).
DEFAULT: Any = type("Default", (), {"__repr__": lambda self: "DEFAULT"})()

#: dtype kinds whose chunks the sidecar reads and writes itself.
FIXED_KINDS = "biufcmM"

_V3_AA_BY_HAND = frozenset({"numcodecs.delta", "numcodecs.quantize", "numcodecs.bitround"})
_V3_BB_NUMCODECS = frozenset({
    "zlib", "gzip", "bz2", "lzma", "lz4", "zstd", "blosc", "shuffle",
    "crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3",
})
BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
BLOSC_SHUFFLE_NAME = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}


@dataclass(frozen=True)
class ArrayMeta:
    """One opened array: where it is, its wire metadata, its chunk spec."""

    ref: StoreRef
    zarr_format: int
    signature: tuple[Any, ...]
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    wire: dict[str, Any]
    spec: ChunkSpec

    @property
    def wire_dtype(self) -> Any:
        return self.wire["dtype"]


# -- zarr-python, imported lazily ------------------------------------------

_zarr_ready = False


def import_zarr() -> Any:
    """Import zarr once, silencing its warnings about numcodecs codecs in v3."""
    global _zarr_ready
    import zarr

    if not _zarr_ready:
        import warnings

        from zarr.errors import ZarrUserWarning

        warnings.filterwarnings("ignore", category=ZarrUserWarning)
        _zarr_ready = True
    return zarr


def local_store(ref: StoreRef, read_only: bool) -> Any:
    import_zarr()
    from zarr.storage import LocalStore

    return LocalStore(ref.root, read_only=read_only)


# -- locating metadata -----------------------------------------------------

def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StoreError(f"cannot stat {path!r}: {e.strerror or e}", path=path) from e
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def locate(ref: StoreRef) -> tuple[int, tuple[Any, ...]]:
    """The node's zarr format and its metadata files' signature.

    Raises :class:`NotFound` when no array metadata is there.
    """
    d = ref.dir
    v3 = _stat(os.path.join(d, "zarr.json"))
    if v3 is not None:
        return 3, (v3,)
    v2 = _stat(os.path.join(d, ".zarray"))
    if v2 is not None:
        return 2, (v2, _stat(os.path.join(d, ".zattrs")))
    if _stat(os.path.join(d, ".zgroup")) is not None:
        raise NotFound(f"{where(ref)} is a group, not an array", path=ref.path,
                       node_type="group")
    raise NotFound(f"no array at {where(ref)}", path=ref.path)


def where(ref: StoreRef) -> str:
    return f"path {ref.path!r} of store {ref.root!r}"


# -- the cache -------------------------------------------------------------

_CACHE: OrderedDict[tuple[str, str], ArrayMeta] = OrderedDict()
_CACHE_SIZE = 256
_cache_lock = threading.Lock()


def forget(ref: StoreRef) -> None:
    """Drop the cached metadata of ``ref``."""
    with _cache_lock:
        _CACHE.pop(ref.key, None)


def remember(meta: ArrayMeta) -> None:
    with _cache_lock:
        _CACHE[meta.ref.key] = meta
        _CACHE.move_to_end(meta.ref.key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def open_meta(ref: StoreRef, allow_pickle: bool = False) -> ArrayMeta:
    """The array at ``ref`` (cached while its metadata files are unchanged)."""
    fmt, sig = locate(ref)
    with _cache_lock:
        hit = _CACHE.get(ref.key)
    if hit is not None and hit.signature == sig:
        return hit
    if fmt == 2:
        _check_v2_document(ref, allow_pickle)
    z = open_zarr(ref, "r", fmt)
    meta = build(ref, fmt, sig, z.metadata, allow_pickle)
    remember(meta)
    return meta


def _check_v2_document(ref: StoreRef, allow_pickle: bool) -> None:
    """Refuse forbidden codecs before zarr-python instantiates anything."""
    try:
        with open(os.path.join(ref.dir, ".zarray"), "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return  # zarr-python reports it
    if isinstance(doc, dict):
        _check_safe([doc.get("filters"), doc.get("compressor")], allow_pickle)


def open_zarr(ref: StoreRef, mode: str, zarr_format: int | None = None) -> Any:
    """``zarr.open_array`` for ``ref``, its errors mapped to wire errors."""
    zarr = import_zarr()
    try:
        return zarr.open_array(local_store(ref, mode == "r"), path=ref.path, mode=mode,
                               zarr_format=zarr_format)
    except BridgeError:
        raise
    except Exception as e:
        raise _open_error(e, ref) from e


def _open_error(e: Exception, ref: StoreRef) -> BridgeError:
    from zarr import errors as ze

    name = type(e).__name__
    msg = str(e)
    if isinstance(e, ze.NodeTypeValidationError):
        return NotFound(f"{where(ref)} is not an array: {msg}", path=ref.path)
    if isinstance(e, (FileNotFoundError, ze.NodeNotFoundError)):
        return NotFound(f"no array at {where(ref)}", path=ref.path)
    if "UnknownCodec" in name or "codec not available" in msg:
        return CodecUnavailable(f"the array at {where(ref)} uses a codec that is not "
                                f"available: {msg}", path=ref.path)
    if "data type" in msg and ("No Zarr" in msg or "not understood" in msg):
        return UnsupportedDtype(f"the array at {where(ref)} has an unsupported dtype: {msg}",
                                path=ref.path, dtype=_stored_dtype_name(ref))
    if isinstance(e, (PermissionError, IsADirectoryError)):
        return StoreError(f"cannot read the metadata at {where(ref)}: {msg}", path=ref.path)
    return InvalidMetadata(f"the metadata at {where(ref)} is invalid: {name}: {msg}",
                           path=ref.path)


def _stored_dtype_name(ref: StoreRef) -> Any:
    """The raw dtype field of the metadata document, for error details."""
    for name, key in (("zarr.json", "data_type"), (".zarray", "dtype")):
        try:
            with open(os.path.join(ref.dir, name), "rb") as f:
                doc = json.load(f)
            value = doc.get(key)
            return value if isinstance(value, (str, int, float)) else repr(value)
        except (OSError, ValueError, AttributeError):
            continue
    return None


# -- metadata -> ArrayMeta -------------------------------------------------

def plain(x: Any) -> Any:
    """A JSON-ish value as msgpack-able plain data (tuples become lists)."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, Enum):
        return plain(x.value)
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (bytes, str)):
        return x.item()
    return x


def wire_scalar(value: Any, dtype: np.dtype[Any]) -> Any:
    """A fill value as a wire value (NaN and infinities stay floats)."""
    import numpy as np

    if value is None:
        return None
    v = np.asarray(value)
    if dtype.kind in "mM":
        return int(v.astype(dtype.newbyteorder("=")).view("i8"))
    if dtype.kind == "c":
        c = complex(v.item())
        return [c.real, c.imag]
    if dtype.kind == "b":
        return bool(v)
    if dtype.kind in "iu":
        return int(v)
    if dtype.kind == "f":
        return float(v)
    return plain(v.item())


def _wire_dtype(dtype: np.dtype[Any], ref: StoreRef) -> Any:
    from pybridge.dtypes import wire_dtype

    try:
        return wire_dtype(dtype)
    except UnsupportedDtype as e:
        e.details.setdefault("path", ref.path)
        raise


def _codec_id_config(c: Mapping[str, Any]) -> dict[str, Any]:
    """A v3 codec JSON as ``{"id": name, **configuration}``."""
    name = str(c["name"])
    return {"id": name.removeprefix("numcodecs."), **plain(c.get("configuration") or {})}


def _check_safe(configs: Any, allow_pickle: bool) -> None:
    from pybridge.codecs import check_safe

    check_safe(configs, allow_pickle)


def build(ref: StoreRef, fmt: int, sig: tuple[Any, ...], md: Any,
           allow_pickle: bool) -> ArrayMeta:
    if fmt == 2:
        return _build_v2(ref, sig, md, allow_pickle)
    return _build_v3(ref, sig, md, allow_pickle)


def _build_v2(ref: StoreRef, sig: tuple[Any, ...], md: Any, allow_pickle: bool) -> ArrayMeta:
    stored = md.dtype.to_native_dtype()
    filters = tuple(plain(f.get_config()) for f in (md.filters or ()))
    compressors = (plain(md.compressor.get_config()),) if md.compressor is not None else ()
    _check_safe([*filters, *compressors], allow_pickle)
    fill = md.fill_value if md.fill_value is not None else md.dtype.default_scalar()
    shape = tuple(md.shape)
    chunks = tuple(md.chunks)
    wire = {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "shards": None,
        "dtype": _wire_dtype(stored, ref),
        "fill_value": wire_scalar(md.fill_value, stored),
        "order": md.order,
        "compressor": compressors[0] if compressors else None,
        "filters": list(filters) if md.filters is not None else None,
        "codecs": None,
        "dimension_separator": md.dimension_separator,
        "dimension_names": None,
        "attributes": plain(dict(md.attributes)),
    }
    spec = ChunkSpec(
        dir=ref.dir, root=ref.root, path=ref.path, zarr_format=2, signature=sig,
        engine="v2", shape=shape, grid=chunks, dtype=stored.str, order=md.order,
        fill=fill, key_encoding="v2", separator=md.dimension_separator,
        filters=filters, compressors=compressors,
        token=json.dumps([2, filters, compressors, stored.str], default=repr),
    )
    return ArrayMeta(ref, 2, sig, shape, stored, wire, spec)


def _v3_plan(codecs: list[dict[str, Any]], native: np.dtype[Any]
             ) -> tuple[str, tuple[dict[str, Any], ...], tuple[dict[str, Any], ...], str]:
    """(engine, filters, compressors, stored dtype) for a v3 codec list.

    The engine is ``"v3"`` when every codec has a by-hand equivalent and
    ``"zarr"`` otherwise.
    """
    import numpy as np

    fallback = ("zarr", (), (), native.str)
    filters: list[dict[str, Any]] = []
    compressors: list[dict[str, Any]] = []
    endian: str | None = None
    seen_bytes = False
    for c in codecs:
        name = c["name"]
        cfg = c.get("configuration") or {}
        if name == "bytes" and not seen_bytes:
            seen_bytes = True
            endian = cfg.get("endian")
        elif not seen_bytes:
            if name not in _V3_AA_BY_HAND:
                return fallback
            for key in ("dtype", "astype"):
                if key in cfg and np.dtype(cfg[key]).newbyteorder("=") != native:
                    return fallback
            filters.append(_codec_id_config(c))
        elif name == "gzip":
            compressors.append({"id": "gzip", "level": cfg.get("level", 5)})
        elif name == "zstd":
            compressors.append({"id": "zstd", "level": cfg.get("level", 0),
                                "checksum": cfg.get("checksum", False)})
        elif name == "blosc":
            compressors.append({
                "id": "blosc", "cname": cfg.get("cname", "zstd"), "clevel": cfg.get("clevel", 5),
                "shuffle": BLOSC_SHUFFLE.get(cfg.get("shuffle", "noshuffle"), 0),
                "blocksize": cfg.get("blocksize", 0),
                "typesize": cfg.get("typesize", native.itemsize),
            })
        elif name == "crc32c":
            compressors.append({"id": CRC32C})
        elif name.startswith("numcodecs.") and name.removeprefix("numcodecs.") in _V3_BB_NUMCODECS:
            compressors.append(_codec_id_config(c))
        else:
            return fallback
    if not seen_bytes:
        return fallback
    stored = native
    if native.itemsize > 1 and native.byteorder != "|":
        stored = native.newbyteorder(">" if endian == "big" else "<")
    return "v3", tuple(filters), tuple(compressors), stored.str


def _wire_compressor(codecs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The v3 bytes-to-bytes compressor as a config (inside a shard if sharded)."""
    inner = codecs
    if codecs and codecs[0]["name"] == "sharding_indexed":
        inner = (codecs[0].get("configuration") or {}).get("codecs") or []
    seen_bytes = False
    for c in inner:
        name = c["name"]
        if not seen_bytes:
            cls = codec_class(name)
            if cls is not None and is_kind(cls, "ArrayBytesCodec"):
                seen_bytes = True
            continue
        if name not in ("crc32c", "numcodecs.crc32", "numcodecs.crc32c", "numcodecs.adler32",
                        "numcodecs.fletcher32", "numcodecs.jenkins_lookup3", "numcodecs.shuffle"):
            return _codec_id_config(c)
    return None


def _wire_filters(codecs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    inner = codecs
    if codecs and codecs[0]["name"] == "sharding_indexed":
        inner = (codecs[0].get("configuration") or {}).get("codecs") or []
    out = []
    for c in inner:
        cls = codec_class(c["name"])
        if cls is None or not is_kind(cls, "ArrayArrayCodec"):
            break
        out.append(_codec_id_config(c))
    return out or None


def codec_class(name: str) -> Any:
    """zarr-python's codec class for a v3 codec name, or None when unknown."""
    from zarr.registry import get_codec_class

    try:
        return get_codec_class(name)
    except Exception:
        return None


def is_kind(cls: type, kind: str) -> bool:
    return any(b.__name__ == kind for b in cls.__mro__)


def _build_v3(ref: StoreRef, sig: tuple[Any, ...], md: Any, allow_pickle: bool) -> ArrayMeta:
    from zarr.core.chunk_grids import RegularChunkGrid

    if not isinstance(md.chunk_grid, RegularChunkGrid):
        raise InvalidMetadata(f"the array at {where(ref)} has an irregular chunk grid",
                              path=ref.path)
    native = md.data_type.to_native_dtype()
    codecs = [plain(c.to_dict()) for c in md.codecs]
    engine, filters, compressors, stored = _v3_plan(codecs, native)
    _check_safe([_codec_id_config(c) for c in codecs if str(c["name"]).startswith("numcodecs.")],
                allow_pickle)
    shape = tuple(md.shape)
    grid = tuple(md.chunk_grid.chunk_shape)
    cke = md.chunk_key_encoding
    wire = {
        "zarr_format": 3,
        "shape": list(shape),
        "chunks": list(md.chunks),
        "shards": list(md.shards) if md.shards is not None else None,
        "dtype": _wire_dtype(native, ref),
        "fill_value": wire_scalar(md.fill_value, native),
        "order": "C",
        "compressor": _wire_compressor(codecs),
        "filters": _wire_filters(codecs),
        "codecs": codecs,
        "dimension_separator": cke.separator,
        "dimension_names": list(md.dimension_names) if md.dimension_names is not None else None,
        "attributes": plain(dict(md.attributes)),
    }
    spec = ChunkSpec(
        dir=ref.dir, root=ref.root, path=ref.path, zarr_format=3, signature=sig,
        engine=engine, shape=shape, grid=grid, dtype=stored, order="C",
        fill=md.fill_value, key_encoding=cke.name, separator=cke.separator,
        filters=filters, compressors=compressors,
        token=json.dumps([3, engine, filters, compressors, stored], default=repr),
    )
    return ArrayMeta(ref, 3, sig, shape, native, wire, spec)


def require_fixed_size(meta: ArrayMeta) -> None:
    """Raise :class:`UnsupportedDtype` unless the sidecar can read/write the data."""
    if meta.dtype.kind not in FIXED_KINDS or meta.dtype.fields is not None:
        raise UnsupportedDtype(
            f"reading and writing {meta.wire.get('dtype')!r} arrays is not supported yet",
            dtype=plain(meta.wire.get("dtype")))

"""Array metadata: open with zarr-python, describe for the wire.

zarr-python is the reference engine for metadata: it parses and validates
the ``.zarray``/``zarr.json`` documents (read by :mod:`pybridge.zarr.documents`,
which makes their spellings canonical first) and writes new ones. This
module turns what it finds into an :class:`ArrayMeta`: the wire metadata map
(``PROTOCOL.md`` §7) plus the :class:`~pybridge.zarr.chunk_codecs.ChunkSpec`
that the chunk tasks use, and builds zarr-python arrays over any store
(:func:`zarr_array`). Creating arrays is :mod:`pybridge.zarr.create`.

Opened metadata is cached per (store, path). Each use checks the metadata
files' stamps (``stat`` for files and zip archives, the bytes for memory
stores), so an array rewritten by anyone else is reopened at once, and an
unchanged one costs one or two ``stat`` calls.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pybridge.errors import (
    BridgeError,
    CodecUnavailable,
    InvalidMetadata,
    NotFound,
    StoreError,
    UnsupportedDtype,
)
from pybridge.libraries import import_zarr
from pybridge.zarr.chunk_codecs import CRC32C, ChunkSpec
from pybridge.zarr.documents import NodeDoc, from_consolidated, no_node, node_signature, read_node
from pybridge.zarr.store import StoreRef

if TYPE_CHECKING:
    import numpy as np

    from pybridge.zarr.kv import KV

__all__ = [
    "DEFAULT",
    "ArrayMeta",
    "MetadataCache",
    "open_meta",
    "require_fixed_size",
    "wire_scalar",
    "zarr_array",
]

#: Marks a create param the request did not give (so zarr's default applies).
DEFAULT: Any = type("Default", (), {"__repr__": lambda self: "DEFAULT"})()

#: dtype kinds with a raw byte form (the others, ``O`` and ``T``, travel as values).
FIXED_KINDS = "biufcmMSUV"

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
    #: zarr-python's metadata object (ArrayV2Metadata or ArrayV3Metadata).
    md: Any

    @property
    def wire_dtype(self) -> Any:
        return self.wire["dtype"]

    @property
    def variable(self) -> bool:
        """True for the variable-length dtypes (``string``, ``bytes``): values, not bytes."""
        return self.dtype.kind in "OT"

    @property
    def by_hand(self) -> bool:
        """Whether the workers serve this array (a filesystem store)."""
        return self.ref.kind == "filesystem" and not self.variable


# -- zarr-python, imported lazily ------------------------------------------

# import_zarr lives in pybridge.libraries: one thread imports zarr-python whole.


def zarr_array(meta: ArrayMeta, kv: KV) -> Any:
    """A zarr-python ``Array`` for ``meta`` over the store of ``kv``."""
    import_zarr()
    import zarr
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    from pybridge.zarr.chunk_codecs import checked_store, chunk_limit
    from pybridge.zarr.kv import with_limit

    store = checked_store(with_limit(kv.zarr_store, chunk_limit(meta.spec)),
                          json.loads(meta.spec.meta_json))
    return zarr.Array(AsyncArray(metadata=meta.md, store_path=StorePath(store, meta.ref.path)))


def where(ref: StoreRef) -> str:
    return ref.describe()


# -- the cache -------------------------------------------------------------

class MetadataCache:
    """The metadata of the arrays opened lately, by store and node (one per
    sidecar: :attr:`pybridge.context.SidecarContext.metadata_cache`). An
    entry is used only while the array's documents keep their stamps."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[tuple[str, str, str], ArrayMeta] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, ref: StoreRef) -> ArrayMeta | None:
        with self._lock:
            return self._items.get(ref.key)

    def remember(self, meta: ArrayMeta) -> None:
        with self._lock:
            self._items[meta.ref.key] = meta
            self._items.move_to_end(meta.ref.key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def forget(self, ref: StoreRef) -> None:
        """Drop the cached metadata of ``ref``."""
        with self._lock:
            self._items.pop(ref.key, None)


def open_meta(ref: StoreRef, allow_pickle: bool = False, kv: KV | None = None,
              fresh: bool = False, cache: MetadataCache | None = None) -> ArrayMeta:
    """The array at ``ref`` (cached while its metadata files are unchanged).

    ``fresh`` reads the documents even when the cached stamps match: a
    rewrite within the file system's timestamp granularity, to a file of the
    same size that got a reused inode, keeps its stamp. The requests that
    change an array's shape read it so. Raises :class:`NotFound` when there is no array (``details.node_type``
    is ``"group"`` when a group is there). When the array's own document is
    missing, an ancestor group's consolidated metadata is used. Without a
    ``cache`` nothing is cached.
    """
    if kv is None:
        from pybridge.zarr.kv import session

        with session(ref) as kv_:
            return open_meta(ref, allow_pickle, kv_, fresh, cache)
    try:
        sig = node_signature(kv, ref.path)
        hit = cache.get(ref) if cache is not None else None
        if not fresh and hit is not None and sig is not None and hit.signature == sig:
            return hit
        node = read_node(kv, ref.path, sig) if sig is not None else from_consolidated(kv, ref.path)
    except InvalidMetadata as e:
        e.details.setdefault("path", ref.path)
        raise
    except OSError as e:
        if isinstance(e, BridgeError):
            raise
        raise StoreError(f"cannot read the metadata at {where(ref)}: {e}", path=ref.path) from e
    if node is None:
        raise no_node(kv, ref.path, "array", where(ref))
    if node.kind != "array":
        raise NotFound(f"{where(ref)} is a group, not an array", path=ref.path,
                       node_type="group")
    meta = meta_from_doc(ref, node, allow_pickle)
    if sig is not None and cache is not None:
        cache.remember(meta)
    return meta


def meta_from_doc(ref: StoreRef, node: NodeDoc, allow_pickle: bool) -> ArrayMeta:
    """Parse an array document with zarr-python into an :class:`ArrayMeta`."""
    import_zarr()
    from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

    doc = node.doc
    _check_dims(doc, node.zarr_format, ref)
    if node.zarr_format == 2:
        _check_safe([doc.get("filters"), doc.get("compressor")], allow_pickle)
    try:
        md = (ArrayV2Metadata if node.zarr_format == 2 else ArrayV3Metadata).from_dict(dict(doc))
    except BridgeError:
        raise
    except Exception as e:
        raise _open_error(e, ref, doc) from e
    return build(ref, node.zarr_format, node.signature, md, allow_pickle, doc)


def _dims_of(doc: Mapping[str, Any], fmt: int) -> list[tuple[str, Any, int]]:
    """(name, value, least allowed) of each shape-like list in an array document."""
    out: list[tuple[str, Any, int]] = [("shape", doc.get("shape"), 0)]
    if fmt == 2:
        return [*out, ("chunks", doc.get("chunks"), 1)]
    grid = doc.get("chunk_grid")
    cfg = grid.get("configuration") if isinstance(grid, Mapping) else None
    if isinstance(cfg, Mapping):
        out.append(("chunk shape", cfg.get("chunk_shape"), 1))
    codecs = doc.get("codecs")
    first = codecs[0] if isinstance(codecs, list) and codecs else None
    if isinstance(first, Mapping) and first.get("name") == "sharding_indexed":
        inner = first.get("configuration")
        if isinstance(inner, Mapping):
            out.append(("inner chunk shape", inner.get("chunk_shape"), 1))
    return out


def _check_dims(doc: Mapping[str, Any], fmt: int, ref: StoreRef) -> None:
    """Refuse a shape or chunk shape that would break later (a chunk length
    of 0 divides by zero on every read; a length past int64 overflows)."""
    from pybridge.rpc.params import MAX_DIM

    for name, dims, least in _dims_of(doc, fmt):
        if not isinstance(dims, list):
            continue
        for d in dims:
            if isinstance(d, int) and not isinstance(d, bool) and not least <= d <= MAX_DIM:
                raise InvalidMetadata(f"the metadata at {where(ref)} has {name} {dims!r}: "
                                      f"each length must be in [{least}, {MAX_DIM}]",
                                      path=ref.path)


def _open_error(e: Exception, ref: StoreRef, doc: Mapping[str, Any]) -> BridgeError:
    name = type(e).__name__
    msg = str(e)
    if "UnknownCodec" in name or "codec not available" in msg or (
            isinstance(e, KeyError) and "codec" in msg.lower()):
        return CodecUnavailable(f"the array at {where(ref)} uses a codec that is not "
                                f"available: {msg}", path=ref.path)
    if ("data type" in msg and ("No Zarr" in msg or "not understood" in msg
                               or "Invalid" in msg)) or "Invalid data_type" in msg:
        raw = doc.get("dtype", doc.get("data_type"))
        return UnsupportedDtype(f"the array at {where(ref)} has an unsupported dtype: {msg}",
                                path=ref.path, dtype=raw if isinstance(raw, (str, int, float))
                                else repr(raw))
    return InvalidMetadata(f"the metadata at {where(ref)} is invalid: {name}: {msg}",
                           path=ref.path)


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
    """A fill value as a wire value.

    NaN and infinities stay floats; complex is ``[re, im]``; datetimes are
    int64 (NaT is -2**63); ``S`` and ``bytes`` are bin, ``U`` and ``string``
    str; a structured value is its packed little-endian record as bin.
    """
    import numpy as np

    from pybridge.dtypes import to_little_endian

    if value is None:
        return None
    if dtype.fields is not None or dtype.kind == "V":
        return np.array(value).astype(to_little_endian(dtype)).tobytes()
    if dtype.kind in "OT":
        return value if isinstance(value, (str, bytes)) else plain(value)
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
    if dtype.kind == "S":
        return bytes(v.item())
    if dtype.kind == "U":
        return str(v.item())
    return plain(v.item())


def _wire_dtype(dtype: np.dtype[Any], ref: StoreRef, zdtype: Any = None) -> Any:
    from pybridge.dtypes import wire_dtype

    object_as = "bytes" if type(zdtype).__name__ == "VariableLengthBytes" else "string"
    try:
        return wire_dtype(dtype, object_as=object_as)
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
          allow_pickle: bool, doc: Mapping[str, Any]) -> ArrayMeta:
    meta_json = json.dumps(doc, allow_nan=True, default=repr)
    if fmt == 2:
        return _build_v2(ref, sig, md, allow_pickle, meta_json)
    return _build_v3(ref, sig, md, allow_pickle, meta_json)


def _build_v2(ref: StoreRef, sig: tuple[Any, ...], md: Any, allow_pickle: bool,
              meta_json: str) -> ArrayMeta:
    from pybridge.zarr.chunk_codecs import dtype_token

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
        "dtype": _wire_dtype(stored, ref, md.dtype),
        "fill_value": wire_scalar(md.fill_value, stored),
        "order": md.order,
        "compressor": compressors[0] if compressors else None,
        "filters": list(filters) if md.filters is not None else None,
        "codecs": None,
        "dimension_separator": md.dimension_separator,
        "chunk_key_encoding": {"name": "v2", "separator": md.dimension_separator},
        "dimension_names": None,
        "attributes": plain(dict(md.attributes)),
    }
    token = dtype_token(stored)
    spec = ChunkSpec(
        dir=ref.dir, root=ref.root, path=ref.path, zarr_format=2, signature=sig,
        engine="v2", shape=shape, grid=chunks, dtype=token, order=md.order,
        fill=fill, key_encoding="v2", separator=md.dimension_separator,
        filters=filters, compressors=compressors,
        token=json.dumps([2, filters, compressors, token], default=repr),
        roots=ref.roots, meta_json=meta_json,
    )
    return ArrayMeta(ref, 2, sig, shape, stored, wire, spec, md)


def _v3_plan(codecs: list[dict[str, Any]], native: np.dtype[Any]
             ) -> tuple[str, tuple[dict[str, Any], ...], tuple[dict[str, Any], ...], str]:
    """(engine, filters, compressors, stored dtype) for a v3 codec list.

    The engine is ``"v3"`` when every codec has a by-hand equivalent and
    ``"zarr"`` otherwise.
    """
    import numpy as np

    from pybridge.zarr.chunk_codecs import dtype_token

    fallback = ("zarr", (), (), dtype_token(native))
    if native.kind in "OT":
        return fallback
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
                # A filter in a non-native byte order stays with zarr-python,
                # the reference: its handling of those differs from ours.
                if key in cfg and np.dtype(cfg[key]) != native:
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
    return "v3", tuple(filters), tuple(compressors), dtype_token(stored)


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
    except Exception:  # noqa: BLE001 -- a codec that cannot load is unknown
        return None


def is_kind(cls: type, kind: str) -> bool:
    return any(b.__name__ == kind for b in cls.__mro__)


def _build_v3(ref: StoreRef, sig: tuple[Any, ...], md: Any, allow_pickle: bool,
              meta_json: str) -> ArrayMeta:
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
        "dtype": _wire_dtype(native, ref, md.data_type),
        "fill_value": wire_scalar(md.fill_value, native),
        "order": "C",
        "compressor": _wire_compressor(codecs),
        "filters": _wire_filters(codecs),
        "codecs": codecs,
        "dimension_separator": cke.separator,
        "chunk_key_encoding": {"name": cke.name, "separator": cke.separator},
        "dimension_names": list(md.dimension_names) if md.dimension_names is not None else None,
        "attributes": plain(dict(md.attributes)),
    }
    spec = ChunkSpec(
        dir=ref.dir, root=ref.root, path=ref.path, zarr_format=3, signature=sig,
        engine=engine, shape=shape, grid=grid, dtype=stored, order="C",
        fill=md.fill_value, key_encoding=cke.name, separator=cke.separator,
        filters=filters, compressors=compressors,
        token=json.dumps([3, engine, filters, compressors, stored], default=repr),
        roots=ref.roots, meta_json=meta_json,
    )
    if engine == "zarr":
        from pybridge.zarr.shards import with_shard_layout

        spec = with_shard_layout(spec, codecs, _v3_plan, native)
    return ArrayMeta(ref, 3, sig, shape, native, wire, spec, md)


def require_fixed_size(meta: ArrayMeta) -> None:
    """Raise :class:`UnsupportedDtype` for variable-length data (it travels as values)."""
    if meta.variable:
        raise UnsupportedDtype(
            f"{meta.wire.get('dtype')!r} data has no raw byte form: use 'values'",
            dtype=plain(meta.wire.get("dtype")))

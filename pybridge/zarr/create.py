"""``array.create``: new arrays through zarr-python.

The request's numcodecs configs become zarr-python codecs: for Zarr v2 as
they are; for Zarr v3 ``gzip``, ``zstd`` and ``blosc`` become the core codecs
and every other id zarr-python's ``numcodecs.<id>`` codec (array-to-array
filters stay filters, bytes-to-bytes ones go before the compressor). A full
v3 ``codecs`` list is split into filters, serializer and compressors.

Every dtype zarr-python stores can be created: the variable-length
``string`` and ``bytes`` get their object codec (``vlen-utf8`` /
``vlen-bytes``) added to the v2 filters when the request leaves it out.
Creating with mode ``w-`` first checks the node's path for any metadata
document of either format (zarr-python alone would write a v2 array next to
a v3 one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pybridge.errors import (
    AlreadyExists,
    BridgeError,
    CodecUnavailable,
    InvalidCodecConfig,
    InvalidParams,
    NotFound,
    UnsupportedDtype,
)
from pybridge.libraries import import_zarr
from pybridge.zarr.documents import node_signature
from pybridge.zarr.kv import KV, session
from pybridge.zarr.metadata import (
    BLOSC_SHUFFLE,
    BLOSC_SHUFFLE_NAME,
    DEFAULT,
    ArrayMeta,
    MetadataCache,
    codec_class,
    is_kind,
    open_meta,
    plain,
    where,
)
from pybridge.zarr.oserrors import store_error, undo_new_dirs
from pybridge.zarr.store import StoreRef

if TYPE_CHECKING:
    import numpy as np

__all__ = ["create_array", "fill_for_create"]


def _given(v: Any) -> bool:
    return v is not DEFAULT


def _blosc_config(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    if cfg.get("id") == "blosc" and isinstance(cfg.get("shuffle"), str):
        if cfg["shuffle"] not in BLOSC_SHUFFLE:
            raise InvalidCodecConfig(f"blosc shuffle {cfg['shuffle']!r} is not one of "
                                     f"{', '.join(BLOSC_SHUFFLE)}", id="blosc", key="shuffle")
        cfg["shuffle"] = BLOSC_SHUFFLE[cfg["shuffle"]]
    return cfg


def _numcodec(config: Any, allow_pickle: bool) -> Any:
    from pybridge.codecs import get_codec

    if not isinstance(config, Mapping):
        raise InvalidCodecConfig("a codec config must be a map with an 'id'", key=None)
    return get_codec(_blosc_config(config), allow_pickle)


def _v3_from_numcodecs(config: Any, itemsize: int, allow_pickle: bool
                       ) -> tuple[str, dict[str, Any]]:
    """A numcodecs config as (kind, v3 codec JSON); kind is "aa" or "bb"."""
    codec = _numcodec(config, allow_pickle)
    full = plain(codec.get_config())
    cid = full.pop("id")
    core = _v3_core_form(cid, full, itemsize)
    if core is not None:
        return "bb", core
    name = f"numcodecs.{cid}"
    cls = codec_class(name)
    if cls is None:
        raise CodecUnavailable(f"codec {cid!r} has no Zarr v3 form in zarr-python", id=cid)
    kind = "aa" if is_kind(cls, "ArrayArrayCodec") else "bb" if is_kind(
        cls, "BytesBytesCodec") else "ab"
    if kind == "ab":
        raise InvalidParams(f"codec {cid!r} turns arrays into bytes: give it in 'codecs' "
                            "instead of 'compressor' or 'filters'", param="compressor",
                            expected="a bytes-to-bytes codec")
    return kind, {"name": name, "configuration": full}


def _v3_core_form(cid: str, full: dict[str, Any], itemsize: int) -> dict[str, Any] | None:
    """The Zarr v3 core codec JSON for a zstd, gzip or blosc config, or None.

    None too when zarr-python's core codec refuses values numcodecs takes
    (gzip level -1, zstd level 23...): the array then gets the
    ``numcodecs.<id>`` codec, which keeps numcodecs' meaning.
    """
    form = _v3_core_json(cid, full, itemsize)
    if form is None:
        return None
    cls = codec_class(form["name"])
    try:
        if cls is not None:
            cls.from_dict(form)
    except Exception:  # noqa: BLE001 - zarr-python's own range checks
        return None
    return form


def _v3_core_json(cid: str, full: dict[str, Any], itemsize: int) -> dict[str, Any] | None:
    if cid == "zstd":
        return {"name": "zstd", "configuration": {
            "level": full.get("level", 0), "checksum": full.get("checksum", False)}}
    if cid == "gzip":
        return {"name": "gzip", "configuration": {"level": full.get("level", 5)}}
    if cid == "blosc":
        shuffle = full.get("shuffle", 1)
        if shuffle == -1:
            shuffle = 2 if itemsize == 1 else 1
        if shuffle not in BLOSC_SHUFFLE_NAME:
            return None
        return {"name": "blosc", "configuration": {
            "typesize": itemsize, "cname": full.get("cname", "lz4"),
            "clevel": full.get("clevel", 5), "shuffle": BLOSC_SHUFFLE_NAME[shuffle],
            "blocksize": full.get("blocksize", 0)}}
    return None


#: Largest chunk (in bytes) :func:`_probe` encodes.
_PROBE_BYTES = 16 << 20


def _probe(codecs: list[Any], dtype: np.dtype[Any], chunks: list[int], order: str) -> None:
    """Encode a chunk of zeros with the new array's numcodecs codecs, in order.

    numcodecs checks many values only when it first encodes (zlib level 42,
    blosc clevel 10...): an array created with them could never be written.
    Such a config is ``invalid_codec_config`` here, with numcodecs' message.
    Object and string arrays, and chunks over 16 MiB, are not probed.
    """
    import math

    import numpy as np

    from pybridge.codecs import rejected

    codecs = [c for c in codecs if c is not None]
    if not codecs or dtype.kind in "OTV" or dtype.hasobject \
            or math.prod(chunks) * dtype.itemsize > _PROBE_BYTES:
        return
    chunk: Any = np.zeros(tuple(chunks), dtype=dtype, order="F" if order == "F" else "C")
    for codec in codecs:
        try:
            chunk = codec.encode(chunk)
        except Exception as exc:  # noqa: BLE001 - any refusal counts
            raise rejected(codec, exc) from None


def _split_v3_codecs(codecs: list[Any]) -> dict[str, Any]:
    """A full v3 codec list as zarr.create_array's filters/serializer/compressors."""
    import_zarr()
    from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
    from zarr.registry import get_codec_class

    filters, serializer, compressors = [], None, []
    for c in codecs:
        if not (isinstance(c, Mapping) and isinstance(c.get("name"), str)):
            raise InvalidParams("each v3 codec is a map with a str 'name'",
                                param="codecs", expected="v3 codec json")
        try:
            cls = get_codec_class(c["name"])
        except KeyError:
            raise CodecUnavailable(f"unknown Zarr v3 codec {c['name']!r}",
                                   id=c["name"]) from None
        try:
            codec = cls.from_dict(dict(c))
        except Exception as e:  # noqa: BLE001 -- any codec's own refusal
            raise InvalidCodecConfig(f"codec {c['name']!r} rejected its config: {e}",
                                     id=c["name"], key=None) from None
        if isinstance(codec, ArrayArrayCodec):
            if serializer is not None:
                raise InvalidParams("array-to-array codecs come before the serializer",
                                    param="codecs", expected="v3 codec order")
            filters.append(codec)
        elif isinstance(codec, ArrayBytesCodec):
            if serializer is not None:
                raise InvalidParams("only one array-to-bytes codec is allowed",
                                    param="codecs", expected="v3 codec order")
            serializer = codec
        else:
            if serializer is None:
                raise InvalidParams("bytes-to-bytes codecs come after the serializer",
                                    param="codecs", expected="v3 codec order")
            compressors.append(codec)
    if serializer is None:
        raise InvalidParams("the codecs need one array-to-bytes codec (e.g. 'bytes')",
                            param="codecs", expected="v3 codec order")
    return {"filters": filters, "serializer": serializer, "compressors": compressors}


def _create_kwargs(p: Mapping[str, Any], dtype: np.dtype[Any], allow_pickle: bool
                   ) -> dict[str, Any]:
    fmt = p["zarr_format"]
    shape, chunks = p["shape"], p["chunks"]
    if len(shape) != len(chunks):
        raise InvalidParams(f"chunks has {len(chunks)} dimensions, shape has {len(shape)}",
                            param="chunks", expected=f"{len(shape)} ints")
    if any(c < 1 for c in chunks):
        raise InvalidParams("chunk lengths must be at least 1", param="chunks",
                            expected="ints >= 1")
    kw: dict[str, Any] = {"shape": tuple(shape), "chunks": tuple(chunks), "dtype": dtype,
                          "zarr_format": fmt}
    if p.get("attributes") is not None:
        kw["attributes"] = p["attributes"]
    if _given(p["fill_value"]):
        kw["fill_value"] = fill_for_create(p["fill_value"], dtype)
    encoding = _key_encoding(p, fmt)
    if fmt == 2:
        for name in ("codecs", "shards", "dimension_names"):
            if p.get(name) is not None:
                raise InvalidParams(f"{name!r} is for Zarr v3 arrays only", param=name,
                                    expected="absent for zarr_format 2")
        if _given(p["compressor"]):
            kw["compressors"] = (None if p["compressor"] is None
                                 else _numcodec(p["compressor"], allow_pickle))
        if _given(p["filters"]) and p["filters"]:
            kw["filters"] = [_numcodec(f, allow_pickle) for f in p["filters"]]
        elif _given(p["filters"]):
            kw["filters"] = None
        if dtype.kind in "OT" and _given(p["filters"]):
            kw["filters"] = _with_object_codec(kw["filters"], dtype, allow_pickle)
        _probe([*(kw.get("filters") or []), kw.get("compressors")], dtype, chunks,
               p.get("order") or "C")
        if p.get("order"):
            kw["order"] = p["order"]
        if encoding is not None:
            kw["chunk_key_encoding"] = encoding
        return kw
    if p.get("order") == "F":
        raise InvalidParams("order 'F' is for Zarr v2 arrays only (v3 stores C order)",
                            param="order", expected="'C' for zarr_format 3")
    if p.get("codecs") is not None:
        if _given(p["compressor"]) or _given(p["filters"]):
            raise InvalidParams("give either 'codecs' or 'compressor'/'filters', not both",
                                param="codecs", expected="codecs alone")
        kw.update(_split_v3_codecs(p["codecs"]))
    else:
        aa: list[dict[str, Any]] = []
        bb: list[dict[str, Any]] = []
        given = [*((p["filters"] or []) if _given(p["filters"]) else []),
                 *([p["compressor"]] if _given(p["compressor"]) and p["compressor"] else [])]
        for f in (p["filters"] or []) if _given(p["filters"]) else []:
            kind, js = _v3_from_numcodecs(f, dtype.itemsize, allow_pickle)
            (aa if kind == "aa" else bb).append(js)
        if _given(p["filters"]):
            kw["filters"] = aa
        if _given(p["compressor"]):
            if p["compressor"] is not None:
                bb.append(_v3_from_numcodecs(p["compressor"], dtype.itemsize, allow_pickle)[1])
            kw["compressors"] = bb
        elif bb:  # shuffle-like filters, then zarr-python's default compressor
            kw["compressors"] = [*bb, {"name": "zstd",
                                       "configuration": {"level": 0, "checksum": False}}]
        _probe([_numcodec(c, allow_pickle) for c in given], dtype, chunks, "C")
    if p.get("shards") is not None:
        if dtype.fields is not None:
            raise UnsupportedDtype("zarr-python 3.1 cannot shard structured arrays",
                                   dtype=p["dtype"])
        kw["shards"] = tuple(p["shards"])
    if p.get("dimension_names") is not None:
        kw["dimension_names"] = p["dimension_names"]
    if encoding is not None:
        kw["chunk_key_encoding"] = encoding
    return kw


def _key_encoding(p: Mapping[str, Any], fmt: int) -> dict[str, str] | None:
    """The ``chunk_key_encoding`` for zarr-python from the create params."""
    sep = p.get("dimension_separator")
    cke = p.get("chunk_key_encoding")
    if cke is None:
        if not sep:
            return None
        return {"name": "v2" if fmt == 2 else "default", "separator": sep}
    name, cke_sep = cke.get("name"), cke.get("separator", "/" if cke.get("name") == "default"
                                                   else ".")
    if set(cke) - {"name", "separator"} or name not in ("default", "v2") \
            or cke_sep not in ("/", "."):
        raise InvalidParams("chunk_key_encoding is {\"name\": \"default\" | \"v2\", "
                            "\"separator\": \"/\" | \".\"}", param="chunk_key_encoding",
                            expected="chunk key encoding map")
    if fmt == 2 and name != "v2":
        raise InvalidParams("Zarr v2 arrays use the 'v2' chunk key encoding",
                            param="chunk_key_encoding", expected="name 'v2' for zarr_format 2")
    if sep and sep != cke_sep:
        raise InvalidParams("dimension_separator and chunk_key_encoding disagree",
                            param="dimension_separator", expected=cke_sep)
    return {"name": name, "separator": cke_sep}


def _with_object_codec(filters: list[Any] | None, dtype: np.dtype[Any],
                       allow_pickle: bool) -> list[Any]:
    """v2 filters for a variable-length dtype, with its object codec first."""
    want = "vlen-utf8" if dtype.kind == "T" else "vlen-bytes"
    filters = list(filters or [])
    if not any(f.codec_id in ("vlen-utf8", "vlen-bytes", "json2", "msgpack2", "vlen-array")
               for f in filters):
        filters.insert(0, _numcodec({"id": want}, allow_pickle))
    return filters


def fill_for_create(value: Any, dtype: np.dtype[Any]) -> Any:
    """A wire fill value as zarr-python takes it for ``dtype``.

    Complex is ``[re, im]`` (or a number), datetimes an int64 (or ``"NaT"``),
    structured records their packed little-endian bytes.
    """
    import numpy as np

    if value is None:
        return None
    kind = dtype.kind
    bad = InvalidParams(f"fill_value {value!r} does not fit the dtype", param="fill_value",
                        expected=f"a scalar of {dtype}")
    if dtype.fields is not None or kind == "V":
        if not isinstance(value, (bytes, bytearray)) or len(value) != dtype.itemsize:
            raise bad
        return np.frombuffer(bytes(value), dtype=dtype)[0]
    if kind == "c":
        if isinstance(value, list) and len(value) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return complex(value[0], value[1])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return complex(value)
        raise bad
    if kind in "iu":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise bad
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise InvalidParams(f"fill_value {value} is out of range for {dtype}",
                                param="fill_value", expected=f"{info.min}..{info.max}")
        return value
    if kind == "f" and not (isinstance(value, (int, float))
                            or value in ("NaN", "Infinity", "-Infinity")):
        raise bad
    if kind == "b" and not isinstance(value, (bool, int)):
        raise bad
    if kind in "mM" and isinstance(value, int) and not isinstance(value, bool):
        return np.array(value, dtype="<i8").view(dtype.newbyteorder("<"))[()]
    if kind == "S" and not isinstance(value, (bytes, bytearray)):
        raise bad
    if kind in "UT" and not isinstance(value, str):
        raise bad
    if kind == "O" and not isinstance(value, (bytes, bytearray)):
        raise bad
    return value


def _zarr_dtype(dtype: np.dtype[Any]) -> Any:
    """What zarr-python is given as the dtype (its own class for the variable ones)."""
    if dtype.kind == "O":
        from zarr.core.dtype import VariableLengthBytes

        return VariableLengthBytes()
    if dtype.kind == "T":
        from zarr.core.dtype import VariableLengthUTF8

        return VariableLengthUTF8()
    return dtype


def create_array(ref: StoreRef, p: Mapping[str, Any], allow_pickle: bool = False,
                 cache: MetadataCache | None = None) -> ArrayMeta:
    """Create (or, for modes ``a``/``r``/``r+``, open) the array at ``ref``."""
    mode = p["mode"]
    if mode in ("r", "r+"):
        return open_meta(ref, allow_pickle, cache=cache)
    with session(ref, writable=True) as kv:
        if mode == "a":
            try:
                return open_meta(ref, allow_pickle, kv, cache=cache)
            except NotFound as e:
                if e.details.get("node_type") == "group":
                    raise AlreadyExists(f"a group exists at {where(ref)}",
                                        path=ref.path) from None
        elif mode == "w-" and node_signature(kv, ref.path) is not None:
            raise AlreadyExists(f"a node exists at {where(ref)}", path=ref.path)
        return _create(ref, kv, p, mode, allow_pickle, cache)


def _create(ref: StoreRef, kv: KV, p: Mapping[str, Any], mode: str,
            allow_pickle: bool, cache: MetadataCache | None) -> ArrayMeta:
    from pybridge.dtypes import parse_dtype

    kv.require_writable()
    dtype = parse_dtype(p["dtype"])
    kw = _create_kwargs(p, dtype, allow_pickle)
    kw["dtype"] = _zarr_dtype(dtype)
    zarr = import_zarr()
    from zarr import errors as ze

    try:
        with undo_new_dirs(ref):
            zarr.create_array(kv.zarr_store, name=ref.path or None, overwrite=(mode == "w"),
                              **kw)
    except BridgeError:
        raise
    except (ze.ContainsArrayError, ze.ContainsGroupError, ze.ContainsArrayAndGroupError) as e:
        raise AlreadyExists(f"a node exists at {where(ref)}: {e}", path=ref.path) from None
    except KeyError as e:
        raise CodecUnavailable(f"unknown codec {e}", id=str(e.args[0]) if e.args else None) \
            from None
    except OSError as e:
        raise store_error(e, f"create the array at {where(ref)}", ref) from e
    except (TypeError, ValueError) as e:
        raise InvalidParams(f"zarr-python rejected the array: {e}", param=None,
                            expected="valid array metadata") from None
    if cache is not None:
        cache.forget(ref)
    return open_meta(ref, allow_pickle, kv, cache=cache)

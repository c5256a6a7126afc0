"""Access to the numcodecs codec registry, with the sidecar's safety rules.

:func:`get_codec` turns a wire codec config into a numcodecs ``Codec``, and
maps every way that can fail onto a wire error:

- an unknown id, or a codec whose optional package does not import, is
  :class:`~pybridge.errors.CodecUnavailable`;
- ``pickle`` (which runs code on decode), and any config that nests a
  ``pickle`` config, is :class:`~pybridge.errors.CodecForbidden` unless the
  sidecar allows pickle; a config naming an ``object`` dtype (``vlen-array``
  with ``"O"``, ``astype`` to ``"O"``...) is always forbidden: numcodecs would
  write or read raw object pointers, which no opt-in makes safe. The
  exception is ``categorize`` with ``dtype`` "O" (:data:`SAFE_OBJECT_DTYPES`),
  whose object arrays only ever hold its str labels;
- a config the codec rejects is :class:`~pybridge.errors.InvalidCodecConfig`
  with ``details["key"]`` naming the bad key when it can be told.

Codec instances are cached by their config, so repeated calls are cheap.
This is the sidecar's one codec cache: the codec tasks use it through
:func:`get_codec`, the chunk codec pipeline of arrays through
:func:`stored_codec` (configs read from array metadata, which the array's
open already checked with :func:`check_safe`).
"""

from __future__ import annotations

import importlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numcodecs
import numcodecs.registry
import numpy as np
from numcodecs.abc import Codec

from pybridge.errors import CodecForbidden, CodecUnavailable, InvalidCodecConfig

__all__ = ["FORBIDDEN_IDS", "OPTIONAL_CODECS", "SAFE_OBJECT_DTYPES", "check_safe", "get_codec",
           "list_codecs", "rejected", "stored_codec"]

#: Codec ids that can run code on decode: refused unless pickle is allowed.
FORBIDDEN_IDS = frozenset({"pickle"})

#: Codecs numcodecs registers only when an optional package imports, with the
#: module that holds each. They are listed even when unavailable.
OPTIONAL_CODECS: dict[str, str] = {
    "blosc": "numcodecs.blosc",
    "zstd": "numcodecs.zstd",
    "lz4": "numcodecs.lz4",
    "zfpy": "numcodecs.zfpy",
    "msgpack2": "numcodecs.msgpacks",
    "crc32c": "numcodecs.checksum32",
    "pcodec": "numcodecs.pcodec",
}

_CACHE_SIZE = 256
_cache: OrderedDict[str, Codec] = OrderedDict()
_cache_lock = threading.Lock()


# --------------------------------------------------------------------------
# Type checks at the edge
#
# Only types are checked here (an int where numcodecs takes an int, a str
# where it takes a name): what a value means is numcodecs' business. A value
# numcodecs refuses only when it first encodes (zlib level 10, blosc clevel
# 10...) is found out then: see :func:`pybridge.pool.codec_tasks.encode`.

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


_INT = (_is_int, "an int")
_STR = (_is_str, "a str")
_BOOL = (_is_bool, "a bool")

_TYPE_CHECKS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "blosc": {"cname": _STR, "clevel": _INT, "shuffle": _INT, "blocksize": _INT},
    "zstd": {"level": _INT, "checksum": _BOOL},
    "zlib": {"level": _INT},
    "gzip": {"level": _INT},
    "bz2": {"level": _INT},
    "lzma": {"format": _INT, "check": _INT},
    "lz4": {"acceleration": _INT},
    "shuffle": {"elementsize": _INT},
    "zfpy": {"mode": _INT},
    "pcodec": {"level": _INT},
}


def _type_check(codec_id: str, cfg: Mapping[str, Any]) -> None:
    for key, (check, expected) in _TYPE_CHECKS.get(codec_id, {}).items():
        if key in cfg and not check(cfg[key]):
            raise InvalidCodecConfig(
                f"codec {codec_id!r}: {key!r} must be {expected}, got {cfg[key]!r}",
                id=codec_id, key=key, expected=expected)


# --------------------------------------------------------------------------
# Safety

_DTYPE_KEY = re.compile(r"(^|_)(dtype|astype)$")

#: (codec id, key) pairs where an object dtype reads and writes no pointers.
#: ``categorize`` with ``dtype`` "O" encodes by comparing each value with its
#: str labels and decodes by filling an object array with those labels
#: (numcodecs refuses an object ``astype``): nothing is unpickled, nothing
#: is read as a pointer.
SAFE_OBJECT_DTYPES = frozenset({("categorize", "dtype")})


def _is_object_dtype(value: Any) -> bool:
    try:
        kind: str = np.dtype(value).kind
    except Exception:  # noqa: BLE001 - not a dtype at all: the codec will say
        return False
    return kind == "O"


def check_safe(config: Any, allow_pickle: bool, _top: bool = True) -> None:
    """Raise CodecForbidden if ``config`` (at any depth) could run code or
    expose raw pointers."""
    if isinstance(config, Mapping):
        cid = config.get("id")
        if cid in FORBIDDEN_IDS and not allow_pickle:
            where = "" if _top else " (nested)"
            raise CodecForbidden(
                f"codec {cid!r}{where} can run code on decode; start the sidecar with "
                "--allow-pickle to use it", id=cid)
        for key, value in config.items():
            if (isinstance(key, str) and _DTYPE_KEY.search(key) and _is_object_dtype(value)
                    and (cid, key) not in SAFE_OBJECT_DTYPES):
                raise CodecForbidden(
                    f"codec {cid!r}: an object dtype in {key!r} would read or write raw "
                    "object pointers", id=cid, key=key)
            check_safe(value, allow_pickle, False)
    elif isinstance(config, (list, tuple)):
        for value in config:
            check_safe(value, allow_pickle, False)


# --------------------------------------------------------------------------
# Registry

def _unavailable_reason(codec_id: str) -> str | None:
    """Why a codec id cannot be used, or None when its class loads."""
    try:
        _codec_class(codec_id)
    except CodecUnavailable as exc:
        return exc.message
    return None


def _codec_class(codec_id: str) -> type[Codec]:
    cls: Any = numcodecs.registry.codec_registry.get(codec_id)
    if cls is not None:
        return cls  # type: ignore[no-any-return]
    entry = numcodecs.registry.entries.get(codec_id)
    if entry is not None:
        try:
            cls = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is unavailable
            raise CodecUnavailable(
                f"codec {codec_id!r} failed to load from its entry point: {exc}",
                id=codec_id, reason=str(exc)) from None
        numcodecs.registry.register_codec(cls, codec_id=codec_id)
        return cls  # type: ignore[no-any-return]
    module = OPTIONAL_CODECS.get(codec_id)
    if module is not None:
        try:
            importlib.import_module(module)
            reason = f"numcodecs did not register {codec_id!r}"
        except Exception as exc:  # noqa: BLE001 - usually ImportError
            reason = f"{type(exc).__name__}: {exc}"
        raise CodecUnavailable(f"codec {codec_id!r} is unavailable: {reason}",
                               id=codec_id, reason=reason)
    raise CodecUnavailable(f"unknown codec id {codec_id!r}", id=codec_id, reason="unknown id")


def _wire_value(value: Any) -> Any:
    """A config value as a msgpack-able value."""
    if isinstance(value, Mapping):
        return {str(k): _wire_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return value.str
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return repr(value)


def _default_config(cls: type[Codec]) -> dict[str, Any] | None:
    """The codec's config with every default, or None when it has required params.

    Keys that its own ``from_config`` would refuse (zfpy reports
    ``compression_kwargs``) are left out, so the map can be sent back as is.
    """
    try:
        config = dict(cls().get_config())
    except Exception:  # noqa: BLE001 - the codec has required params
        return None
    for _ in range(len(config)):
        try:
            cls.from_config({k: v for k, v in config.items() if k != "id"})
            break
        except TypeError as exc:
            m = _UNEXPECTED_RE.search(str(exc))
            if not m or m.group(1) not in config:
                return None
            del config[m.group(1)]
        except Exception:  # noqa: BLE001
            return None
    wire = _wire_value(config)
    return wire if isinstance(wire, dict) else None


def list_codecs(allow_pickle: bool) -> list[dict[str, Any]]:
    """Every codec id numcodecs knows (entry points included) and the
    optional ones, with whether each can be used here."""
    ids = (set(numcodecs.registry.codec_registry) | set(numcodecs.registry.entries)
           | set(OPTIONAL_CODECS))
    out = []
    for codec_id in sorted(ids):
        reason = _unavailable_reason(codec_id)
        default = None
        if reason is None:
            default = _default_config(_codec_class(codec_id))
        out.append({
            "id": codec_id,
            "available": reason is None,
            "reason": reason,
            "forbidden": codec_id in FORBIDDEN_IDS and not allow_pickle,
            "default_config": default,
        })
    return out


# --------------------------------------------------------------------------
# Building codecs

_UNEXPECTED_RE = re.compile(r"unexpected keyword argument '([^']+)'")
_MISSING_RE = re.compile(r"missing \d+ required (?:positional|keyword-only) arguments?: '([^']+)'")


def _bad_key(exc: Exception, cfg: Mapping[str, Any]) -> str | None:
    """Which config key an exception from a codec's constructor is about."""
    msg = str(exc)
    for pattern in (_UNEXPECTED_RE, _MISSING_RE):
        m = pattern.search(msg)
        if m:
            return m.group(1)
    for key in cfg:
        if re.search(rf"\b{re.escape(key)}\b", msg):
            return key
    for key, value in cfg.items():
        if (isinstance(value, (str, int, float)) and not isinstance(value, bool)
                and (f"'{value}'" in msg or f'"{value}"' in msg)):
            return key
    if re.search(r"\b(dtype|data type)", msg):
        keys = [k for k in cfg if "dtype" in k]
        if len(keys) == 1:
            return keys[0]
    return None


def _cache_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=repr)


def get_codec(config: Any, allow_pickle: bool) -> Codec:
    """The numcodecs codec for a wire config (cached). See the module doc."""
    if not isinstance(config, Mapping):
        raise InvalidCodecConfig("a codec config must be a map with an 'id'", key=None)
    codec_id = config.get("id")
    if not isinstance(codec_id, str) or not codec_id:
        raise InvalidCodecConfig("a codec config needs a str 'id'", key="id")
    check_safe(config, allow_pickle)
    try:
        key = _cache_key(config)
    except (TypeError, ValueError) as exc:
        raise InvalidCodecConfig(f"codec {codec_id!r}: config is not plain data: {exc}",
                                 id=codec_id, key=None) from None
    codec = _cached(key)
    if codec is not None:
        return codec
    cls = _codec_class(codec_id)
    if codec_id == "pickle" and allow_pickle:
        # numcodecs keeps its own switch; the sidecar's --allow-pickle is the
        # operator's opt-in. Every other path is refused by check_safe above.
        import numcodecs.pickles

        numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = True
    cfg = {k: v for k, v in config.items() if k != "id"}
    _type_check(codec_id, cfg)
    try:
        codec = cls.from_config(dict(cfg))
    except Exception as exc:  # noqa: BLE001 - any rejection is a config error
        bad = _bad_key(exc, cfg)
        raise InvalidCodecConfig(f"codec {codec_id!r} rejected its config: {exc}",
                                 id=codec_id, key=bad) from None
    return _remember(key, codec)


def _cached(key: str) -> Codec | None:
    with _cache_lock:
        codec = _cache.get(key)
        if codec is not None:
            _cache.move_to_end(key)
        return codec


def _remember(key: str, codec: Codec) -> Codec:
    with _cache_lock:
        codec = _cache.setdefault(key, codec)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return codec


def stored_codec(config: Mapping[str, Any]) -> Codec:
    """The numcodecs codec of a config stored in an array's metadata (cached).

    The array's open already refused unsafe configs (:func:`check_safe`) and
    zarr-python accepted the rest, so the config goes to numcodecs as it is.
    """
    key = _cache_key(config)
    codec = _cached(key)
    if codec is None:
        codec = _remember(key, numcodecs.get_codec(dict(config)))
    return codec


def rejected(codec: Codec, exc: Exception) -> InvalidCodecConfig:
    """The error for a config that ``codec`` turned down only when it ran
    (numcodecs checks many values at the first encode), with its message."""
    codec_id = str(getattr(codec, "codec_id", None) or type(codec).__name__)
    try:
        cfg = {k: v for k, v in codec.get_config().items() if k != "id"}
    except Exception:  # noqa: BLE001 - a config it cannot even report
        cfg = {}
    return InvalidCodecConfig(
        f"codec {codec_id!r} rejected its config: {type(exc).__name__}: {exc}",
        id=codec_id, key=_bad_key(exc, cfg))

"""Generate ``vectors.json``: the byte-exact msgpack vectors both sides test against.

Run ``python protocol/vectors/generate.py`` to rewrite ``vectors.json`` beside
this file, or ``--check`` to exit 1 when the committed file is stale. The
schema is described in ``README.md``. The bytes come from msgpack-python
(``use_bin_type=True``, floats as float64) packing the typed values below,
except for the decode-only vectors, whose bytes are written by hand.

The helpers :func:`to_python` and :func:`from_python` convert between the
typed JSON form and Python values; the Python tests import them.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "vectors.json"
SCHEMA_VERSION = 1

Typed = dict[str, Any]

# -- the typed form ------------------------------------------------------------

NIL: Typed = {"nil": None}
TRUE: Typed = {"bool": True}
FALSE: Typed = {"bool": False}


def S(s: str) -> Typed:
    return {"str": s}


def B(b: bytes) -> Typed:
    return {"bin": b.hex()}


def I(n: int) -> Typed:  # noqa: E743 - a one-letter constructor, like the others
    return {"int": n}


def F(x: float) -> Typed:
    if math.isnan(x):
        return {"float": "nan"}
    if math.isinf(x):
        return {"float": "inf" if x > 0 else "-inf"}
    return {"float": x}


def A(*items: Typed) -> Typed:
    return {"array": list(items)}


def M(*pairs: tuple[str | Typed, Typed]) -> Typed:
    """A map; str keys are wrapped as ``{"str": k}``."""
    return {"map": [[S(k) if isinstance(k, str) else k, v] for k, v in pairs]}


def to_python(t: Typed) -> Any:
    """Typed JSON value -> Python value (dict order follows the pairs)."""
    if not isinstance(t, dict) or len(t) != 1:
        raise ValueError(f"not a typed value: {t!r}")
    ((tag, v),) = t.items()
    if tag == "nil":
        return None
    if tag == "bool":
        return bool(v)
    if tag == "int":
        return int(v)
    if tag == "float":
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[v] if isinstance(v, str) \
            else float(v)
    if tag == "str":
        return str(v)
    if tag == "bin":
        return bytes.fromhex(v)
    if tag == "array":
        return [to_python(x) for x in v]
    if tag == "map":
        return {to_python(k): to_python(x) for k, x in v}
    raise ValueError(f"unknown tag {tag!r}")


def from_python(v: Any) -> Typed:
    """Python value (as msgpack-python decodes it) -> typed JSON value."""
    if v is None:
        return NIL
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return I(v)
    if isinstance(v, float):
        return F(v)
    if isinstance(v, str):
        return S(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return B(bytes(v))
    if isinstance(v, (list, tuple)):
        return A(*(from_python(x) for x in v))
    if isinstance(v, dict):
        return {"map": [[from_python(k), from_python(x)] for k, x in v.items()]}
    raise TypeError(f"no typed form for {type(v).__name__}")


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- the vectors -----------------------------------------------------------------

TRACEBACK = ('Traceback (most recent call last):\n'
             '  File "/app/pybridge/methods/basic.py", line 140, in fail\n'
             '    raise ValueError(call.params["message"])\n'
             'ValueError: boom\n')


def _stream_vectors() -> list[dict[str, Any]]:
    """A result cut into three stream.data frames, then the final response."""
    payload = bytes(range(256)) * 4 + b"tail"  # 1028 bytes, frames of 400
    pieces = [payload[i:i + 400] for i in range(0, len(payload), 400)]
    out = []
    for n, piece in enumerate(pieces):
        out.append(_v(f"stream_result_data_{n}", "notification",
                      f"piece {n} of a streamed result for request 5 (stream_frame_bytes 400)",
                      A(I(2), S("stream.data"), M(("data", B(piece)), ("id", I(5))))))
    out.append(_v("stream_result_response", "response",
                  "the final response of the streamed result: counts in place of data",
                  A(I(1), I(5), NIL,
                    M(("stream", M(("bytes", I(len(payload))), ("frames", I(len(pieces)))))))))
    return out


def _int_vectors() -> list[dict[str, Any]]:
    values = [
        0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
        -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    ]
    return [_v(f"int_{'neg_' if n < 0 else ''}{abs(n)}", "value", f"the integer {n}", I(n))
            for n in values]


def vectors() -> list[dict[str, Any]]:
    hello_result = M(
        ("capabilities", A(S("stream"), S("codec"), S("array"), S("handoff"), S("group"),
                           S("zip"), S("memory"), S("values"), S("step"),
                           S("test_methods"))),
        ("handoff", M(("dev", I(27)), ("dir", S("/dev/shm")), ("free_bytes", I(2**30)),
                      ("reason", NIL), ("uid", I(1000)), ("usable", TRUE))),
        ("limits", M(("handoff_threshold", I(4 * 2**20)),
                     ("max_frame_bytes", I(64 * 2**20)), ("max_in_flight", I(10000)),
                     ("max_request_bytes", I(16 * 2**30)),
                     ("stream_frame_bytes", I(256 * 1024)))),
        ("pid", I(4242)),
        ("protocol", S("1.0")),
        ("versions", M(("msgpack", S("1.2.4")), ("numcodecs", S("0.16.6")),
                       ("numpy", S("2.4.6")), ("pybridge", S("0.1.0")),
                       ("python", S("3.11.7")), ("zarr", S("3.1.6")))),
        ("workers", I(2)),
    )
    v = [
        _v("hello_request", "request", "the first request a client sends",
           A(I(0), I(1), S("hello"), M(("client", S("zarr_bridge 0.1.0")),
                                      ("protocol", S("1.0"))))),
        _v("hello_response", "response", "the sidecar's answer to hello",
           A(I(1), I(1), NIL, hello_result)),
        _v("hello_protocol_mismatch", "response", "hello refused: the client speaks 2.0",
           A(I(1), I(1), M(("code", S("protocol_mismatch")),
                           ("details", M(("client", S("2.0")), ("sidecar", S("1.0")))),
                           ("message", S("the client speaks protocol 2.0, this sidecar "
                                         "speaks 1.0"))), NIL)),
        _v("ping_request", "request", "ping with empty params",
           A(I(0), I(2), S("ping"), M())),
        _v("ping_response", "response", "pong",
           A(I(1), I(2), NIL, M(("pong", TRUE)))),
        _v("error_internal", "response",
           "an unexpected Python exception: code internal with python_type and traceback",
           A(I(1), I(3), M(("code", S("internal")), ("details", M()),
                           ("message", S("ValueError: boom")),
                           ("python_type", S("ValueError")), ("traceback", S(TRACEBACK))),
             NIL)),
        _v("error_unknown_method", "response", "an error with details",
           A(I(1), I(4), M(("code", S("unknown_method")), ("details", M(("method", S("nope")))),
                           ("message", S("unknown method 'nope'"))), NIL)),
        _v("error_frame_too_large", "response", "an oversized frame's reply, to the id read "
           "from its first bytes",
           A(I(1), I(7), M(("code", S("frame_too_large")),
                           ("details", M(("bytes", I(70000000)), ("limit", I(67108864)))),
                           ("message", S("a frame of 70000000 bytes exceeds the limit of "
                                         "67108864"))), NIL)),
        _v("error_invalid_message_id0", "response",
           "a body that is not msgpack, with no readable id: replied to id 0",
           A(I(1), I(0), M(("code", S("invalid_message")), ("details", M()),
                           ("message", S("the frame's body is not one msgpack value"))), NIL)),
        _v("cancel_notification", "notification", "the client cancels request 3",
           A(I(2), S("cancel"), M(("id", I(3))))),
        *_stream_vectors(),
        _v("upload_request", "request",
           "an echo whose payload follows as an upload stream of 10 bytes",
           A(I(0), I(6), S("echo"), M(("stream", M(("bytes", I(10))))))),
        _v("upload_data_0", "notification", "the first piece of request 6's upload",
           A(I(2), S("stream.data"), M(("data", B(b"01234")), ("id", I(6))))),
        _v("upload_data_1", "notification", "the second piece of request 6's upload",
           A(I(2), S("stream.data"), M(("data", B(b"56789")), ("id", I(6))))),
        _v("sleep_request_max_id", "request", "the largest request id, 2^32 - 1",
           A(I(0), I(2**32 - 1), S("sleep"), M(("ms", I(2000))))),
        _v("floats_special", "value", "NaN, +Inf and -Inf as float64",
           A(F(math.nan), F(math.inf), F(-math.inf))),
        _v("floats_plain", "value", "ordinary float64 values (never packed as float32)",
           A(F(1.5), F(-0.25), F(0.1), F(3.141592653589793), F(2.0), F(0.0))),
        _v("float32_decode", "value", "float32 1.5: accepted on decode, re-encoded as float64",
           F(1.5), raw=struct.pack(">Bf", 0xCA, 1.5)),
        _v("float32_nan_decode", "value", "float32 NaN: accepted on decode",
           F(math.nan), raw=bytes.fromhex("ca7fc00000")),
        _v("bin_vs_str", "value", "the same three bytes as str and as bin; empty str and bin",
           A(S("abc"), B(b"abc"), S(""), B(b""))),
        _v("str_utf8", "value", "a str with multi-byte UTF-8", S("héllo wörld ✓ 𝄞")),
        _v("str8", "value", "a 32-byte str (str 8)", S("s" * 32)),
        _v("str16", "value", "a 256-byte str (str 16)", S("t" * 256)),
        _v("bin8", "value", "a 255-byte bin (bin 8)", B(bytes(range(255)))),
        _v("bin16", "value", "a 300-byte bin (bin 16)", B(bytes(i % 251 for i in range(300)))),
        _v("bin32", "value", "a 65536-byte bin (bin 32)", B(bytes(i % 253 for i in range(65536)))),
        _v("array16", "value", "an array of 16 elements (array 16)",
           A(*(I(i) for i in range(16)))),
        _v("map16", "value", "a map of 16 pairs (map 16)",
           M(*((f"k{i:02d}", I(i)) for i in range(16)))),
        _v("nested_empty", "value", "empty array and map, nil and booleans",
           A(A(), M(), NIL, TRUE, FALSE)),
        *_int_vectors(),
    ]
    return v


def invalid() -> list[dict[str, str]]:
    """Bodies every decoder must reject."""
    cases = [
        ("truncated_array", "an array of 4 with only 2 elements", "940001"),
        ("truncated_str", "a str 8 of 5 bytes with 2", "d90561 62".replace(" ", "")),
        ("reserved_byte", "0xc1 starts no msgpack value", "c1"),
        ("trailing_bytes", "a complete value followed by more bytes", "9300010203"),
        ("empty", "a zero-length body", ""),
    ]
    return [{"name": n, "description": d, "hex": h} for n, d, h in cases]


def _v(name: str, kind: str, description: str, value: Typed,
       raw: bytes | None = None) -> dict[str, Any]:
    _check_sorted(value)
    body = raw if raw is not None else pack(to_python(value))
    return {
        "name": name,
        "kind": kind,
        "description": description,
        "hex": body.hex(),
        "frame_hex": (struct.pack(">I", len(body)) + body).hex(),
        "value": value,
        "decode_only": raw is not None,
    }


def _check_sorted(t: Typed) -> None:
    """Every map's keys must be in bytewise order (see README.md)."""
    ((tag, v),) = t.items()
    if tag == "array":
        for x in v:
            _check_sorted(x)
    elif tag == "map":
        keys = [to_python(k) for k, _ in v]
        raw = [k.encode() if isinstance(k, str) else k for k in keys]
        if raw != sorted(raw):
            raise ValueError(f"map keys not in bytewise order: {keys}")
        for _, x in v:
            _check_sorted(x)


def document() -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "about": "ZarrBridge protocol vectors; see README.md. Generated by generate.py.",
        "vectors": vectors(),
        "invalid": invalid(),
    }


def render() -> str:
    """The JSON text: one vector per line, so diffs name the vector that changed."""
    doc = document()

    def line(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))

    def block(items: list[Any]) -> str:
        return "[\n" + ",\n".join("  " + line(x) for x in items) + "\n ]"

    return (
        "{\n"
        f' "schema": {doc["schema"]},\n'
        f' "about": {line(doc["about"])},\n'
        f' "vectors": {block(doc["vectors"])},\n'
        f' "invalid": {block(doc["invalid"])}\n'
        "}\n"
    )


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(document()['vectors'])} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

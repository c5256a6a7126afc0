"""The shared protocol vectors (protocol/vectors/): Python's side of the contract."""

from __future__ import annotations

import importlib.util
import json
import math
import struct

import msgpack
import pytest
from helpers import REPO, unpack

from pybridge.rpc import protocol

VECTORS_DIR = REPO / "protocol" / "vectors"


def _load_generator():
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
DOC = json.loads((VECTORS_DIR / "vectors.json").read_text())
VECTORS = {v["name"]: v for v in DOC["vectors"]}
BY_NAME = sorted(VECTORS)


def test_committed_file_is_current():
    assert (VECTORS_DIR / "vectors.json").read_text() == gen.render(), \
        "vectors.json is stale: run python protocol/vectors/generate.py"


def test_names_are_unique_and_kinds_known():
    assert len(VECTORS) == len(DOC["vectors"])
    assert {v["kind"] for v in DOC["vectors"]} <= {"request", "response", "notification", "value"}


@pytest.mark.parametrize("name", BY_NAME)
def test_decode(name):
    v = VECTORS[name]
    body = bytes.fromhex(v["hex"])
    assert gen.from_python(protocol.unpack(body)) == v["value"]
    assert bytes.fromhex(v["frame_hex"]) == struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("name", [n for n in BY_NAME if not VECTORS[n]["decode_only"]])
def test_encode(name):
    v = VECTORS[name]
    assert protocol.pack(gen.to_python(v["value"])).hex() == v["hex"]


@pytest.mark.parametrize("name", [n for n in BY_NAME if VECTORS[n]["kind"] != "value"])
def test_messages_parse_and_rebuild(name):
    v = VECTORS[name]
    body = bytes.fromhex(v["hex"])
    if v["kind"] == "response":
        _, rid, error, result = protocol.unpack(body)
        assert protocol.pack_response(rid, error, result) == body
        return
    msg = protocol.parse(body)
    if v["kind"] == "request":
        assert isinstance(msg, protocol.Request)
    else:
        assert isinstance(msg, protocol.Notification)
        assert protocol.pack_notification(msg.method, msg.params) == body
        if msg.method == "stream.data":
            parts = protocol.stream_data_parts(msg.params["id"],
                                               memoryview(msg.params["data"]))
            assert b"".join(bytes(p) for p in parts) == body


def test_special_floats_and_bin_vs_str():
    values = protocol.unpack(bytes.fromhex(VECTORS["floats_special"]["hex"]))
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf
    assert protocol.unpack(bytes.fromhex(VECTORS["bin_vs_str"]["hex"])) == ["abc", b"abc", "",
                                                                            b""]
    assert protocol.unpack(bytes.fromhex(VECTORS["float32_decode"]["hex"])) == 1.5


@pytest.mark.parametrize("entry", DOC["invalid"], ids=lambda e: e["name"])
def test_invalid_bodies_are_rejected(entry):
    with pytest.raises(protocol.BadMessage):
        protocol.unpack(bytes.fromhex(entry["hex"]))


def test_typed_form_round_trips_python_values():
    value = [None, True, False, 0, -1, 2**64 - 1, 1.5, math.inf, "s", b"b", [], {"k": [b""]}]
    assert gen.from_python(gen.to_python(gen.from_python(value))) == gen.from_python(value)
    assert gen.to_python(gen.from_python(value))[:7] == value[:7]


# -- the vectors against the real sidecar ------------------------------------------------

def test_sidecar_answers_the_ping_vector_byte_for_byte(sidecar):
    sidecar.send_raw(bytes.fromhex(VECTORS["ping_request"]["frame_hex"]))
    reply = sidecar.response(2)
    assert msgpack.packb([1, reply.id, reply.error, reply.result], use_bin_type=True).hex() \
        == VECTORS["ping_response"]["hex"]


def test_sidecar_takes_the_upload_vectors(sidecar):
    for name in ("upload_request", "upload_data_0", "upload_data_1"):
        sidecar.send_raw(bytes.fromhex(VECTORS[name]["frame_hex"]))
    assert sidecar.response(6).unwrap() == {"data": b"0123456789"}


def test_sidecar_hello_matches_the_vector_shape(sidecar):
    sidecar.send_raw(bytes.fromhex(VECTORS["hello_request"]["frame_hex"]))
    got = sidecar.response(1).unwrap()
    want = unpack(bytes.fromhex(VECTORS["hello_response"]["hex"]))[3]
    assert set(got) == set(want)
    assert set(got["limits"]) == set(want["limits"])
    assert set(got["versions"]) == set(want["versions"])


def test_sidecar_mismatch_matches_the_vector(sidecar):
    sidecar.send([0, 1, "hello", {"protocol": "2.0"}])
    reply = sidecar.response(1)
    want = unpack(bytes.fromhex(VECTORS["hello_protocol_mismatch"]["hex"]))
    assert [1, reply.id, reply.error, reply.result] == want


def test_sidecar_streams_like_the_vectors(sidecar_factory):
    """With stream_frame_bytes 400, echo of the vectors' payload gives the vectors' frames."""
    sc = sidecar_factory(["--stream-frame-bytes", "400"])
    names = sorted(n for n in VECTORS if n.startswith("stream_result_data_"))
    pieces = [unpack(bytes.fromhex(VECTORS[n]["hex"]))[2]["data"] for n in names]
    sc.request("echo", {"data": b"".join(pieces)}, id=5)
    bodies = []
    while True:
        msg = sc.recv()
        bodies.append(msgpack.packb(msg, use_bin_type=True).hex())
        if msg[0] == 1:
            break
    assert bodies == [VECTORS[n]["hex"] for n in names] + \
        [VECTORS["stream_result_response"]["hex"]]

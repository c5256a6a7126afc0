"""Security promises, each tested through a real sidecar (issue 6).

- **Path confinement.** With ``--allowed-root`` every path is resolved,
  symlinks included, and must stay inside a root: ``..`` escapes, absolute
  paths elsewhere, symlinks pointing out (store, node, chunk file, chunk
  directory, metadata document), prefix look-alikes and zip entries that
  escape are refused with ``forbidden_path``, and nothing outside is read
  or written. Every method that takes a store is checked, from the method
  table.
- **No code runs on decode without the opt-in.** A pickle payload that
  creates a file when unpickled is offered through every door (codec,
  nested config, pipelines, an array's metadata); the file never appears.
  With ``--allow-pickle`` the same payload does run, which shows that the
  refusals are what kept it from running.
- **Resource limits.** A 1 TB read is refused (``too_large``) or, with the
  limit raised, streamed with flat memory; a 1 TB upload is refused before
  a byte is read; a compressed buffer that announces a huge size, or one
  cut short, is refused without the sidecar or a worker running out of
  memory or reading past the buffer.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from helpers import SidecarProcess, fs

from pybridge.methods import method_table
from pybridge.rpc.params import Param
from pybridge.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

MiB = 1 << 20
TB = 1 << 40


def expect(reply: Any, code: str) -> dict[str, Any]:
    assert reply.error is not None, f"expected {code}, got a result: {reply.result!r:.300}"
    assert reply.error["code"] == code, reply.error
    return reply.error


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


# --------------------------------------------------------------------------
# Path confinement


class Tree:
    """``inside`` (the allowed root) and ``outside``, with links from one to the other."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.inside = base / "inside"
        self.outside = base / "outside"
        self.inside.mkdir()
        self.outside.mkdir()
        # arrays on both sides; the outside one holds a secret
        self.secret = np.arange(8, dtype="<i4") + 1000
        z = zarr.create_array(str(self.outside / "a"), shape=(8,), chunks=(4,), dtype="int32",
                              compressors=None)
        z[...] = self.secret
        z = zarr.create_array(str(self.inside / "ok"), shape=(8,), chunks=(4,), dtype="int32",
                              compressors=None)
        z[...] = np.arange(8, dtype="int32")
        zarr.create_group(str(self.outside / "g"))
        os.symlink(self.outside, self.inside / "link")  # a directory link out
        (base / "inside-evil").mkdir()  # shares the root's name as a prefix
        zarr.create_array(str(base / "inside-evil" / "a"), shape=(2,), chunks=(2,), dtype="int8")

    def outside_files(self) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(self.outside.rglob("*")) if p.is_file()}


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.fixture
def confined(tree: Tree) -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=1, args=["--allowed-root", str(tree.inside)]) as sc:
        sc.ping(timeout=30)
        yield sc


def _escapes(t: Tree) -> dict[str, tuple[dict[str, str], str]]:
    """(store, node path) pairs that all name something outside the root."""
    return {
        "absolute-elsewhere": (fs(t.outside / "a"), ""),
        "absolute-elsewhere-node": (fs(t.outside), "a"),
        "dotdot-in-store": (fs(f"{t.inside}/../outside/a"), ""),
        "dotdot-in-node": (fs(t.inside), "../outside/a"),
        "dotdot-deep-in-node": (fs(t.inside), "ok/../../outside/a"),
        "symlinked-store": (fs(t.inside / "link" / "a"), ""),
        "symlinked-node": (fs(t.inside), "link/a"),
        "prefix-look-alike": (fs(f"{t.inside}-evil/a"), ""),
        "root-itself-dotdot": (fs(t.inside), ".."),
    }


#: Params besides store and path that make each method get as far as the store.
EXTRA: dict[str, dict[str, Any]] = {
    "array.create": {"shape": [8], "chunks": [4], "dtype": "int32", "mode": "w"},
    "array.write": {"shape": [8], "data": bytes(32)},
    "array.resize": {"shape": [16]},
    "array.append": {"shape": [4], "data": bytes(16)},
    "array.read_chunk_raw": {"key": "c/0"},
    "array.write_chunk_raw": {"key": "c/0", "data": bytes(16)},
    "group.create": {"mode": "w"},
}

_CANDIDATES: list[Any] = ["x", b"x", 0, 1, 2, True, [], [1], {}, {"a": 1}]


def _valid(p: Param) -> Any:
    choices = []
    if p.expected.startswith("one of "):
        choices = list(ast.literal_eval("[" + p.expected[len("one of "):] + "]"))
    for v in choices + _CANDIDATES:
        if p.check(v):
            return v
    raise AssertionError(p.expected)


def _store_methods() -> dict[str, dict[str, Any]]:
    """Every method with a ``store`` param, with params that get it to the store."""
    out = {}
    for name, method in method_table(Settings(workers=1, test_methods=True)).items():
        if "store" not in method.params:
            continue
        params = {k: _valid(p) for k, p in method.params.items()
                  if p.required and k not in ("store", "path")}
        if name.endswith("_attributes") and "attributes" in method.params:
            params["attributes"] = {"pwned": True}
        out[name] = {**params, **EXTRA.get(name, {})}
    return out


def test_every_store_method_refuses_every_escape(tree: Tree, confined: SidecarProcess) -> None:
    methods = _store_methods()
    assert {"array.open", "array.read", "array.write", "array.create"} <= set(methods)
    before = tree.outside_files()
    failures = []
    for method, extra in sorted(methods.items()):
        for case, (store, path) in _escapes(tree).items():
            if method.startswith("group.") or method.startswith("store."):
                path = {"": "", "a": "g", "link/a": "link/g"}.get(path, path)
                if store["path"].endswith("/a"):
                    store = fs(store["path"][:-2] + "/g")
            reply = confined.call(method, {"store": store, "path": path, **extra}, timeout=30)
            if reply.code != "forbidden_path":
                failures.append(f"{method} {case}: {reply.error or reply.result}")
    assert not failures, "\n".join(failures)
    assert tree.outside_files() == before, "a file outside the root changed"
    # inside the root everything works
    ok = confined.call("array.read", {"store": fs(tree.inside), "path": "ok"}).unwrap()
    assert ok["data"] == np.arange(8, dtype="<i4").tobytes()


def test_dotdot_is_refused_even_without_allowed_roots(tree: Tree) -> None:
    with SidecarProcess(workers=1) as sc:
        for path in ("..", "../outside/a", "ok/../../outside/a", "a/..", "./../x"):
            expect(sc.call("array.open", {"store": fs(tree.inside), "path": path}, timeout=30),
                   "forbidden_path")
        for key in ("../../outside/a/c/0", "c/../../../outside/a/zarr.json", "/etc/passwd",
                    "c/0/../../../ok/zarr.json"):
            # refused either as a path escape or as a key that is no chunk key
            for method, extra in (("array.read_chunk_raw", {}),
                                  ("array.write_chunk_raw", {"data": b"pwned"})):
                reply = sc.call(method, {"store": fs(tree.inside), "path": "ok", "key": key,
                                         **extra})
                assert reply.code in ("forbidden_path", "invalid_params"), \
                    (method, key, reply.error or reply.result)
        assert not any(b"pwned" in p.read_bytes() for p in tree.base.rglob("*") if p.is_file())


def test_symlinked_chunk_file_pointing_out_is_refused(tree: Tree,
                                                      confined: SidecarProcess) -> None:
    """A chunk file inside an allowed array that links to a file outside."""
    st = {"store": fs(tree.inside), "path": "ok"}
    chunk = tree.inside / "ok" / "c" / "1"
    chunk.unlink()
    os.symlink(tree.outside / "a" / "c" / "0", chunk)
    before = tree.outside_files()
    err = confined.call("array.read", st)
    assert err.code == "forbidden_path", err.error or err.result
    assert confined.call("array.read", {**st, "start": [4]}).code == "forbidden_path"
    raw = confined.call("array.read_chunk_raw", {**st, "key": "c/1"})
    assert raw.code == "forbidden_path", raw.error or raw.result
    # a write replaces the link or is refused; it never writes through it
    confined.call("array.write", {**st, "start": [4], "shape": [4], "data": bytes(16)})
    confined.call("array.write", {**st, "start": [5], "shape": [1], "data": bytes(4)})
    assert tree.outside_files() == before


def test_symlinked_chunk_directory_pointing_out_is_refused(tree: Tree,
                                                           confined: SidecarProcess) -> None:
    st = {"store": fs(tree.inside), "path": "ok"}
    chunks = tree.inside / "ok" / "c"
    for p in chunks.iterdir():
        p.unlink()
    chunks.rmdir()
    os.symlink(tree.outside / "a" / "c", chunks)
    before = tree.outside_files()
    assert confined.call("array.read", st).code == "forbidden_path"
    confined.call("array.write", {**st, "shape": [8], "data": bytes(32)})
    assert tree.outside_files() == before
    assert sorted(p.name for p in (tree.outside / "a" / "c").iterdir()) == ["0", "1"]


def test_symlinked_metadata_document_pointing_out_is_refused(tree: Tree,
                                                             confined: SidecarProcess) -> None:
    (tree.inside / "m").mkdir()
    os.symlink(tree.outside / "a" / "zarr.json", tree.inside / "m" / "zarr.json")
    for method in ("array.open", "array.read", "array.get_attributes"):
        reply = confined.call(method, {"store": fs(tree.inside), "path": "m"})
        assert reply.code == "forbidden_path", (method, reply.error or reply.result)


def _zip_kind_available(sc: SidecarProcess, path: Path) -> bool:
    reply = sc.call("array.open", {"store": {"kind": "zip", "path": str(path)}})
    return not (reply.code == "invalid_params" and "kind" in reply.error["message"])


def test_zip_stores_are_confined_and_refuse_escaping_entries(tree: Tree,
                                                             confined: SidecarProcess) -> None:
    if not _zip_kind_available(confined, tree.inside / "none.zip"):
        pytest.skip("this sidecar has no zip store kind yet")
    good = tree.inside / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("zarr.json", (tree.inside / "ok" / "zarr.json").read_text())
    outside = tree.outside / "out.zip"
    outside.write_bytes(good.read_bytes())
    ok = confined.call("array.open", {"store": {"kind": "zip", "path": str(good)}})
    assert ok.ok, ok.error
    expect(confined.call("array.open", {"store": {"kind": "zip", "path": str(outside)}}),
           "forbidden_path")
    os.symlink(outside, tree.inside / "link.zip")
    expect(confined.call("array.open", {"store": {"kind": "zip",
                                                  "path": str(tree.inside / "link.zip")}}),
           "forbidden_path")
    for name in ("../../outside/pwned/zarr.json", "/abs/zarr.json", "a/../../zarr.json",
                 "a\\..\\..\\zarr.json"):
        evil = tree.inside / "evil.zip"
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr("zarr.json", (tree.inside / "ok" / "zarr.json").read_text())
            zf.writestr(name, b"{}")
        for method, extra in (("array.open", {}),
                              ("array.write", {"shape": [8], "data": bytes(32)}),
                              ("group.tree", {})):
            reply = confined.call(method, {"store": {"kind": "zip", "path": str(evil)},
                                           **extra})
            assert reply.code == "forbidden_path", (name, method, reply.error or reply.result)
        evil.unlink()
    assert not (tree.base / "pwned").exists() and not (tree.outside / "pwned").exists()


# --------------------------------------------------------------------------
# No code on decode without the opt-in


class _Trap:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _trap(path: Path) -> bytes:
    return pickle.dumps(_Trap(path), protocol=2)


def test_pickle_payloads_never_run_without_the_opt_in(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = _trap(marker)
    pickle_cfg = {"id": "pickle"}
    store = tmp_path / "s"
    # an array whose metadata asks for the pickle codec, with the trap as a chunk
    v2 = {"zarr_format": 2, "shape": [2], "chunks": [2], "dtype": "|O", "compressor": None,
          "fill_value": None, "filters": [pickle_cfg], "order": "C"}
    (store / "o2").mkdir(parents=True)
    (store / "o2" / ".zarray").write_text(json.dumps(v2))
    (store / "o2" / "0").write_bytes(payload)
    v2i = {**v2, "dtype": "<i8", "filters": None, "compressor": pickle_cfg}
    (store / "i2").mkdir()
    (store / "i2" / ".zarray").write_text(json.dumps(v2i))
    (store / "i2" / "0").write_bytes(payload)
    v3 = _v3_doc()
    v3["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "numcodecs.pickle", "configuration": {}}]
    (store / "p3" / "c").mkdir(parents=True)
    (store / "p3" / "zarr.json").write_text(json.dumps(v3))
    (store / "p3" / "c" / "0").write_bytes(payload)

    forbidden = {"codec_forbidden"}
    refused = {"codec_forbidden", "unsupported_dtype"}
    # zarr-python has no v3 pickle codec at all: unknown is as good as forbidden
    unknown = {"codec_forbidden", "codec_unavailable"}
    requests: list[tuple[str, dict[str, Any], set[str]]] = [
        ("codec.decode", {"codec": pickle_cfg, "data": payload}, forbidden),
        ("codec.decode_many", {"codec": pickle_cfg, "items": [payload]}, forbidden),
        ("codec.decode", {"codec": {"id": "zlib", "nested": pickle_cfg},
                          "data": numcodecs.Zlib().encode(payload)}, forbidden),
        ("codec.decode", {"codec": {"id": "vlen-array", "dtype": "O"}, "data": payload},
         forbidden),
        ("codec.decode", {"codec": {"id": "zlib"}, "data": numcodecs.Zlib().encode(payload),
                          "dtype": "O"}, refused),
        ("codec.pipeline_decode", {"zarr_format": 2, "dtype": "string", "shape": [1],
                                   "filters": [pickle_cfg], "compressor": None, "order": "C",
                                   "data": payload}, forbidden),
        ("codec.pipeline_decode", {"zarr_format": 2, "dtype": "int64", "shape": [1],
                                   "filters": None, "compressor": pickle_cfg, "order": "C",
                                   "data": payload}, forbidden),
        ("codec.pipeline_decode", {"zarr_format": 3, "dtype": "int64", "shape": [1],
                                   "codecs": v3["codecs"], "data": payload}, unknown),
        ("array.read", {"store": fs(store), "path": "o2"}, refused),
        ("array.read", {"store": fs(store), "path": "i2"}, forbidden),
        ("array.read", {"store": fs(store), "path": "p3"}, unknown),
        ("array.open", {"store": fs(store), "path": "i2"}, forbidden),
    ]
    with SidecarProcess(workers=1) as sc:
        for method, params, codes in requests:
            reply = sc.call(method, params, timeout=30)
            assert reply.code in codes, (method, params, reply.error)
            assert not marker.exists(), f"{method} ran the payload: {params}"
        # the raw chunk is only bytes: handing them over (or refusing to) runs nothing
        raw = sc.call("array.read_chunk_raw", {"store": fs(store), "path": "i2", "key": "0"})
        assert raw.code == "codec_forbidden" or raw.data == payload, raw.error
        assert not marker.exists()
        sc.ping()
    # the control: with the opt-in the very same payload runs
    with SidecarProcess(workers=1, args=["--allow-pickle"]) as sc:
        sc.call("codec.decode", {"codec": pickle_cfg, "data": payload}, timeout=30)
    assert marker.exists(), "the trap payload does not run even when pickle is allowed"


def _v3_doc() -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "array", "shape": [2], "data_type": "int64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [], "attributes": {}}


# --------------------------------------------------------------------------
# Resource limits


@pytest.fixture(scope="module")
def terabyte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 TiB float64 array (nothing stored: every chunk reads as the fill value)."""
    root = tmp_path_factory.mktemp("tb")
    zarr.create_array(str(root / "t"), shape=(1 << 20, 1 << 17), chunks=(1024, 1024),
                      dtype="float64", fill_value=0.5)
    return root / "t"


def test_a_1_tb_read_is_refused_at_once(terabyte: Path) -> None:
    with SidecarProcess(workers=2) as sc:
        sc.ping(timeout=30)
        err = expect(sc.call("array.read", {"store": fs(terabyte)}, timeout=30), "too_large")
        assert err["details"]["bytes"] == TB
        expect(sc.call("array.read", {"store": fs(terabyte), "handoff": True}), "too_large")
        expect(sc.call("array.write", {"store": fs(terabyte), "shape": [1 << 20, 1 << 17],
                                       "stream": {"bytes": TB}}), "too_large")
        sc.ping()
        assert vm_kib(sc.pid, "VmHWM") < 200 * 1024


def test_a_1_tb_read_with_the_limit_raised_streams_in_flat_memory(terabyte: Path) -> None:
    with SidecarProcess(workers=2, args=["--max-request-bytes", "2TiB"]) as sc:
        assert sc.call("hello").unwrap()["limits"]["max_request_bytes"] == 2 * TB
        # a handoff of 1 TB would fill /dev/shm: it has its own cap
        expect(sc.call("array.read", {"store": fs(terabyte), "handoff": True}, timeout=30),
               "too_large")
        rid = sc.request("array.read", {"store": fs(terabyte)})
        got = 0
        while got < 64 * MiB:  # it streams: take 64 MiB of it
            msg = sc.recv(timeout=60)
            assert msg[0] == 2 and msg[2]["id"] == rid, msg
            piece = msg[2]["data"]
            assert piece == np.full(len(piece) // 8, 0.5).tobytes()
            got += len(piece)
        peak = vm_kib(sc.pid, "VmHWM")
        sc.cancel(rid)
        sc.ping(timeout=30)
        sc.pending(wait=0.5)
        sc._inbox.clear()
        assert peak < 250 * 1024, f"the sidecar's peak RSS reached {peak} KiB"


def test_compressed_buffers_announcing_huge_sizes(tmp_path: Path) -> None:
    """A zstd frame that says it holds 1 TiB, lz4 and blosc headers that lie."""
    zstd = bytearray(numcodecs.Zstd(level=1).encode(bytes(1000)))
    # frame header descriptor: 8-byte content size, single segment
    bomb = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (TB).to_bytes(8, "little") + bytes(zstd[6:])
    lz4 = (2**31 - 1).to_bytes(4, "little") + b"\x00" * 8
    with SidecarProcess(workers=1) as sc:
        for codec, data in (({"id": "zstd"}, bomb), ({"id": "lz4"}, lz4)):
            reply = sc.call("codec.decode", {"codec": codec, "data": data}, timeout=60)
            assert reply.code in ("decode_failed", "too_large"), (codec, reply.error)
        assert sc.call("codec.encode", {"codec": {"id": "zstd"}, "data": b"ok"}).ok
        assert vm_kib(sc.pid, "VmHWM") < 200 * 1024


def test_a_blosc_buffer_cut_short_is_never_decoded_from_memory_past_it(tmp_path: Path) -> None:
    """blosc trusts its header's compressed size: a cut buffer reads past its end.

    The sidecar must check the header against the buffer (codec.decode and
    chunk reads alike) instead of returning whatever memory follows it.
    """
    blosc = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=1)
    # Random bytes do not compress: blosc stores them as they are, and its
    # decoder copies the size its header announces from the buffer.
    values = np.frombuffer(os.urandom(4096 * 8), dtype="<u8")
    raw = blosc.encode(values)
    cut = raw[: len(raw) // 2]
    z = zarr.create_array(str(tmp_path / "b"), shape=(4096,), chunks=(4096,), dtype="uint64",
                          zarr_format=2, compressors=blosc)
    z[...] = values
    (tmp_path / "b" / "0").write_bytes(cut)
    with SidecarProcess(workers=1) as sc:
        expect(sc.call("codec.decode", {"codec": {"id": "blosc"}, "data": cut}, timeout=30),
               "decode_failed")
        expect(sc.call("array.read", {"store": fs(tmp_path / "b")}), "decode_failed")

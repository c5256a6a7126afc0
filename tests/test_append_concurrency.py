"""Concurrent appends through one sidecar never lose acknowledged rows.

Each test sends many requests at once from several threads to one real
sidecar, which runs them on its handler threads concurrently. Every append
carries a block of its own value, so afterwards each acknowledged block can
be found at the region its reply reports, exactly once, and no row of the
array is left at the fill value. The stored array is checked with
zarr-python where the store is on disk, and through the sidecar otherwise.
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import Reply, SidecarProcess

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

FILL = -1
WIDTH = 3


@pytest.fixture(scope="module")
def sc() -> Iterator[SidecarProcess]:
    with SidecarProcess(workers=2) as proc:
        proc.ping(timeout=30)
        yield proc


def store(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind == "memory":
        return {"store": {"kind": "memory", "name": f"append-{tmp_path.name}"}, "path": "a"}
    if kind == "zip":
        return {"store": {"kind": "zip", "path": str(tmp_path / "a.zip")}, "path": "a"}
    return {"store": {"kind": "filesystem", "path": str(tmp_path / "a")}}


def create(sc: SidecarProcess, st: dict[str, Any], fmt: int, shape: Sequence[int],
           chunks: Sequence[int]) -> None:
    sc.call("array.create", {**st, "mode": "w", "zarr_format": fmt, "shape": list(shape),
                             "chunks": list(chunks), "dtype": "int32",
                             "fill_value": FILL}).unwrap()


def block(value: int, rows: int) -> np.ndarray:
    return np.full((rows, WIDTH), value, "<i4")


def concurrently(sc: SidecarProcess, requests: Sequence[tuple[str, dict[str, Any]]],
                 threads: int = 8, timeout: float = 120.0) -> list[Reply]:
    """Send every request at once from ``threads`` threads; the replies in order."""
    ids = [sc.next_id() for _ in requests]
    go = threading.Barrier(threads)

    def send(k: int) -> None:
        go.wait()
        for i in range(k, len(requests), threads):
            method, params = requests[i]
            sc.request(method, params, id=ids[i])

    senders = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    return [sc.response(rid, timeout=timeout) for rid in ids]


def read_all(sc: SidecarProcess, st: dict[str, Any]) -> np.ndarray:
    reply = sc.call("array.read", st, timeout=60)
    shape = reply.unwrap()["shape"]
    return np.frombuffer(reply.data, "<i4").reshape(shape)


def stored(sc: SidecarProcess, st: dict[str, Any], kind: str, tmp_path: Path) -> np.ndarray:
    """The array as it is stored: zarr-python's view for files, the sidecar's for memory."""
    if kind == "filesystem":
        return np.asarray(zarr.open_array(str(tmp_path / "a"), mode="r")[...])
    if kind == "zip":
        with zipfile.ZipFile(tmp_path / "a.zip") as zf:
            assert zf.testzip() is None
        zs = zarr.storage.ZipStore(str(tmp_path / "a.zip"), mode="r")
        try:
            return np.asarray(zarr.open_array(zs, path="a", mode="r")[...])
        finally:
            zs.close()
    return read_all(sc, st)


def region(reply: Reply) -> tuple[int, int]:
    """(start, stop) along axis 0 of an append's reply, checked for its shape."""
    result = reply.unwrap()
    start, stop = result["region"]["start"], result["region"]["stop"]
    assert start[1:] == [0] and stop[1:] == [WIDTH], result["region"]
    assert result["metadata"]["shape"][0] >= stop[0]
    return start[0], stop[0]


def check_blocks(data: np.ndarray, blocks: dict[int, tuple[int, int, int]]) -> None:
    """Every block (value -> start, stop, rows) sits at its region, and only there."""
    for value, (a, b, rows) in blocks.items():
        assert b - a == rows, (value, a, b, rows)
        got = data[a:b]
        assert (got == value).all(), f"append {value}: region [{a}, {b}) holds " \
                                     f"{sorted(set(got.ravel().tolist()))}"
    values, counts = np.unique(data[:, 0], return_counts=True)
    seen = dict(zip(values.tolist(), counts.tolist()))
    for value, (_, _, rows) in blocks.items():
        assert seen.get(value) == rows, f"append {value}: {seen.get(value)} rows, not {rows}"


def appends(st: dict[str, Any], n: int, first: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """``n`` appends of 1 to 5 rows, append ``i`` holding the value ``first + i``."""
    out = []
    for i in range(n):
        rows = 1 + (i * 7) % 5
        out.append(("array.append", {**st, "shape": [rows, WIDTH],
                                     "data": block(first + i, rows).tobytes()}))
    return out


def rows_of(request: tuple[str, dict[str, Any]]) -> int:
    return int(request[1]["shape"][0])


@pytest.mark.parametrize("kind,fmt", [("filesystem", 3), ("filesystem", 2), ("memory", 3),
                                      ("zip", 3)])
def test_concurrent_appends_keep_every_row(sc, tmp_path, kind, fmt):
    st = store(kind, tmp_path)
    create(sc, st, fmt, [5, WIDTH], [4, 2])
    base = np.arange(5 * WIDTH, dtype="<i4").reshape(5, WIDTH) + 1000
    sc.call("array.write", {**st, "shape": [5, WIDTH], "data": base.tobytes()}).unwrap()
    reqs = appends(st, 80)
    replies = concurrently(sc, reqs)
    failed = [r.error for r in replies if not r.ok]
    assert not failed, f"{len(failed)} appends failed, first: {failed[0]}"
    total = 5 + sum(rows_of(r) for r in reqs)
    blocks = {i + 1: (*region(r), rows_of(q)) for i, (q, r) in enumerate(zip(reqs, replies))}
    # the regions tile the new rows exactly: disjoint, no gap
    spans = sorted((a, b) for a, b, _ in blocks.values())
    assert spans[0][0] == 5 and spans[-1][1] == total
    assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    data = stored(sc, st, kind, tmp_path)
    assert data.shape == (total, WIDTH)
    assert (data[:5] == base).all()
    check_blocks(data, blocks)
    assert not (data == FILL).any()
    assert sc.call("array.open", st).unwrap()["metadata"]["shape"] == [total, WIDTH]


@pytest.mark.parametrize("kind", ["filesystem", "memory"])
def test_streamed_appends_wait_without_wedging_the_channel(sc, tmp_path, kind):
    """Streamed appends whose pieces arrive interleaved: each waiting append takes
    its upload while it waits, so the one holding the array gets the rest of its
    pieces (the reader thread would otherwise block on a full upload queue)."""
    st = store(kind, tmp_path)
    create(sc, st, 3, [0, WIDTH], [4096, WIDTH])
    rows, piece = 30_000, 4096  # 88 pieces each: more than a request's queue holds
    count = 6
    ids = [sc.request("array.append", {**st, "shape": [rows, WIDTH],
                                       "stream": {"bytes": rows * WIDTH * 4}})
           for _ in range(count)]
    payloads = [block(v, rows).tobytes() for v in range(1, count + 1)]
    for offset in range(0, len(payloads[0]), piece):
        for rid, payload in zip(ids, payloads):
            sc.notify("stream.data", {"id": rid, "data": payload[offset:offset + piece]})
    blocks = {v: (*region(sc.response(rid, timeout=60)), rows)
              for v, rid in enumerate(ids, 1)}
    data = stored(sc, st, kind, tmp_path)
    assert data.shape == (count * rows, WIDTH)
    check_blocks(data, blocks)


def test_appends_racing_a_resize(sc, tmp_path):
    """A resize runs between two appends, never inside one: every block is kept,
    appends after it start at its extent, and the rows it added are fill."""
    st = store("filesystem", tmp_path)
    create(sc, st, 3, [0, WIDTH], [4, 2])
    big = 1000
    reqs = appends(st, 60)
    mixed: list[tuple[str, dict[str, Any]]] = list(reqs)
    mixed.insert(30, ("array.resize", {**st, "shape": [big, WIDTH]}))
    replies = concurrently(sc, mixed)
    resize_reply = replies.pop(30)
    assert resize_reply.unwrap()["metadata"]["shape"] == [big, WIDTH]
    failed = [r.error for r in replies if not r.ok]
    assert not failed, f"{len(failed)} appends failed, first: {failed[0]}"
    blocks = {i + 1: (*region(r), rows_of(q)) for i, (q, r) in enumerate(zip(reqs, replies))}
    before = sorted((a, b) for a, b, _ in blocks.values() if b <= big)
    after = sorted((a, b) for a, b, _ in blocks.values() if a >= big)
    assert len(before) + len(after) == len(blocks)
    end_before = before[-1][1] if before else 0
    for spans, first in ((before, 0), (after, big)):
        if spans:
            assert spans[0][0] == first
            assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    total = after[-1][1] if after else big
    data = stored(sc, st, "filesystem", tmp_path)
    assert data.shape == (total, WIDTH)
    check_blocks(data, blocks)
    assert (data[end_before:big] == FILL).all()
    assert not (data[:end_before] == FILL).any() and not (data[big:] == FILL).any()


@pytest.mark.parametrize("kind", ["filesystem", "memory"])
def test_readers_see_whole_appends_only(sc, tmp_path, kind):
    """A read racing appends sees the array between two appends: its extent is
    some prefix of the final array, and it holds no fill value."""
    st = store(kind, tmp_path)
    create(sc, st, 3, [0, WIDTH], [4, 2])
    reqs = appends(st, 60)
    mixed: list[tuple[str, dict[str, Any]]] = []
    for i, q in enumerate(reqs):
        mixed.append(q)
        if i % 2:
            mixed.append(("array.read", st))
    replies = concurrently(sc, mixed)
    reads = [r for (m, _), r in zip(mixed, replies) if m == "array.read"]
    done = [r for (m, _), r in zip(mixed, replies) if m == "array.append"]
    blocks = {i + 1: (*region(r), rows_of(q)) for i, (q, r) in enumerate(zip(reqs, done))}
    final = stored(sc, st, kind, tmp_path)
    check_blocks(final, blocks)
    stops = {b for _, b, _ in blocks.values()} | {0}
    for r in reads:
        shape = r.unwrap()["shape"]
        got = np.frombuffer(r.data, "<i4").reshape(shape)
        assert shape[0] in stops, f"a read saw extent {shape[0]}, between two appends' ends"
        assert (got == final[:shape[0]]).all()
        assert not (got == FILL).any()


def test_writes_racing_appends_keep_both(sc, tmp_path):
    """A write of the array's first rows (within one edge chunk) and appends into
    that same chunk, all at once: neither loses the other's rows."""
    st = store("filesystem", tmp_path)
    rounds = 12
    for k in range(rounds):
        create(sc, st, 3, [3, WIDTH], [8, WIDTH])
        mixed: list[tuple[str, dict[str, Any]]] = []
        for i in range(4):
            mixed.append(("array.write", {**st, "shape": [3, WIDTH],
                                          "data": block(500 + k, 3).tobytes()}))
            mixed.append(("array.append", {**st, "shape": [1, WIDTH],
                                           "data": block(1 + i, 1).tobytes()}))
        replies = concurrently(sc, mixed, threads=8)
        for r in replies:
            r.unwrap()
        blocks = {1 + i: (*region(r), 1) for i, r in enumerate(replies[1::2])}
        data = stored(sc, st, "filesystem", tmp_path)
        assert data.shape == (7, WIDTH)
        assert (data[:3] == 500 + k).all()
        check_blocks(data, blocks)


def test_failed_append_shrinks_back_and_keeps_others(sc, tmp_path):
    """An append whose upload overruns fails, leaves no fill rows, and does not
    undo the appends that ran around it."""
    st = store("filesystem", tmp_path)
    create(sc, st, 3, [0, WIDTH], [4, 2])
    reqs = appends(st, 20)
    rid = sc.next_id()
    bad_at = 10
    mixed = list(reqs)
    mixed.insert(bad_at, ("array.append", {**st, "shape": [5, WIDTH],
                                           "stream": {"bytes": 5 * WIDTH * 4}}))
    ids = [sc.next_id() if i != bad_at else rid for i in range(len(mixed))]
    for i, (method, params) in enumerate(mixed):
        sc.request(method, params, id=ids[i])
    # the upload overruns its declared size: the append fails once it sees that
    sc.upload(rid, block(999, 6).tobytes(), piece=1 << 20)
    replies = [sc.response(i, timeout=60) for i in ids]
    bad = replies.pop(bad_at)
    assert bad.code == "invalid_params", bad.error
    blocks = {i + 1: (*region(r), rows_of(q)) for i, (q, r) in enumerate(zip(reqs, replies))}
    total = sum(rows_of(q) for q in reqs)
    data = stored(sc, st, "filesystem", tmp_path)
    assert data.shape == (total, WIDTH)
    check_blocks(data, blocks)
    assert not (data == FILL).any() and not (data == 999).any()


def test_attribute_changes_racing_appends_keep_both(sc, tmp_path):
    """An attribute change rewrites zarr.json, shape included: racing appends it
    must neither lose their growth nor lose its own keys."""
    st = store("filesystem", tmp_path)
    create(sc, st, 3, [0, WIDTH], [4, 2])
    reqs = appends(st, 40)
    mixed: list[tuple[str, dict[str, Any]]] = []
    for i, q in enumerate(reqs):
        mixed.append(q)
        mixed.append(("array.update_attributes", {**st, "attributes": {f"k{i}": i}}))
    replies = concurrently(sc, mixed)
    for r in replies:
        r.unwrap()
    blocks = {i + 1: (*region(r), rows_of(q)) for i, (q, r) in enumerate(zip(reqs, replies[::2]))}
    total = sum(rows_of(q) for q in reqs)
    z = zarr.open_array(str(tmp_path / "a"), mode="r")
    assert z.shape == (total, WIDTH)
    assert dict(z.attrs) == {f"k{i}": i for i in range(len(reqs))}
    check_blocks(np.asarray(z[...]), blocks)


def test_an_extent_changed_by_another_process_is_a_conflict(sc, tmp_path):
    """Another process resizes the array while an append waits for its upload:
    the append says so in its own terms, and leaves the other's shape alone."""
    st = store("filesystem", tmp_path)
    create(sc, st, 3, [4, WIDTH], [4, WIDTH])
    rid = sc.request("array.append", {**st, "shape": [4, WIDTH],
                                      "stream": {"bytes": 4 * WIDTH * 4}})
    deadline = time.monotonic() + 10
    while zarr.open_array(str(tmp_path / "a"), mode="r").shape != (8, WIDTH):
        assert time.monotonic() < deadline, "the append never grew the array"
        time.sleep(0.01)
    z = zarr.open_array(str(tmp_path / "a"), mode="r+")
    z.resize((20, WIDTH))
    sc.upload(rid, block(7, 4).tobytes())
    reply = sc.response(rid)
    assert reply.code == "conflict", reply.error
    assert "extent changed during the append" in reply.error["message"]
    assert reply.error["details"]["expected_shape"] == [8, WIDTH]
    assert reply.error["details"]["shape"] == [20, WIDTH]
    assert zarr.open_array(str(tmp_path / "a"), mode="r").shape == (20, WIDTH)


def test_a_request_cancelled_while_waiting_for_the_array_goes(sc, tmp_path):
    """An append waiting behind another is cancelled: it never runs, and the
    sidecar serves the array on."""
    st = store("filesystem", tmp_path)
    create(sc, st, 3, [0, WIDTH], [4, WIDTH])
    first = sc.request("array.append", {**st, "shape": [2, WIDTH],
                                        "stream": {"bytes": 2 * WIDTH * 4}})
    deadline = time.monotonic() + 10
    while zarr.open_array(str(tmp_path / "a"), mode="r").shape != (2, WIDTH):
        assert time.monotonic() < deadline, "the first append never grew the array"
        time.sleep(0.01)
    second = sc.request("array.append", {**st, "shape": [1, WIDTH],
                                         "data": block(2, 1).tobytes()})
    time.sleep(0.2)  # the second waits for the first, which waits for its upload
    sc.cancel(second)
    time.sleep(0.2)
    sc.upload(first, block(1, 2).tobytes())
    assert region(sc.response(first)) == (0, 2)
    after = sc.call("array.append", {**st, "shape": [1, WIDTH], "data": block(3, 1).tobytes()})
    assert region(after) == (2, 3)
    assert not [m for m in sc.pending(0.2) if isinstance(m, list) and m[1] == second]
    data = stored(sc, st, "filesystem", tmp_path)
    assert data[:, 0].tolist() == [1, 1, 3]

"""The worker pool (pybridge.pool.pool) and shared-memory segments (pybridge.handoff.shm).

Real worker processes, real signals, real files in /dev/shm. The module-level
functions below are the tasks: workers import this module to run them.
"""

from __future__ import annotations

import mmap
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, SidecarProcess, wait_for

from pybridge import errors
from pybridge.handoff import shm
from pybridge.pool import pool as workers
from pybridge.pool.pool import PIPELINE_DEPTH, RemoteError, WorkerPool, output_buffer

# --------------------------------------------------------------------------
# Tasks (run in the workers)


def echo(payload: Any, *args: Any) -> Any:
    return bytes(payload) if payload is not None else args


def describe_payload(payload: Any) -> tuple[str, bool, int]:
    """What the worker received: its type, whether it is a view of a mapped segment, its size."""
    is_mapped = isinstance(payload, memoryview) and isinstance(payload.obj, mmap.mmap)
    return type(payload).__name__, is_mapped, 0 if payload is None else len(payload)


def big_result(payload: Any, n: int) -> bytes:
    return bytes(range(256)) * (n // 256)


def sleep_then(payload: Any, seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def my_pid(payload: Any) -> int:
    return os.getpid()


def wait_for_file(payload: Any, path: str, pid_file: str | None = None) -> int:
    """Block until ``path`` exists (a cross-process gate); write our pid first."""
    if pid_file is not None:
        Path(pid_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def exit_with(payload: Any, code: int) -> None:
    os._exit(code)


def touch(payload: Any, path: str) -> None:
    Path(path).write_text("ran")


def raise_bridge(payload: Any) -> None:
    raise errors.DecodeFailed("corrupt chunk", index=3, codec={"id": "zstd"})


def raise_other(payload: Any) -> int:
    table: dict[str, int] = {}
    return table["missing-key"]


def unpicklable(payload: Any) -> Any:
    return lambda: None


def in_place(payload: Any, n: int) -> memoryview:
    buf = output_buffer(n)
    buf[:] = bytes([7]) * n
    return buf


def write_into(payload: Any, path: str, offset: int) -> int:
    with shm.Segment.attach(path) as seg:
        seg.buf[offset:offset + len(payload)] = payload
    return len(payload)


# --------------------------------------------------------------------------
# Helpers


@pytest.fixture
def pool2() -> Iterator[WorkerPool]:
    pool = WorkerPool(2)
    pool.start()
    assert pool.wait_ready(30), "the workers did not start"
    try:
        yield pool
    finally:
        pool.close()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def own_segments() -> list[Path]:
    return sorted(Path(shm.SHM_DIR).glob(f"pybridge-{os.getpid()}-*"))


# --------------------------------------------------------------------------
# Segments


def test_segment_create_attach_grow_unlink() -> None:
    seg = shm.Segment.create(4096, "test")
    try:
        name = os.path.basename(seg.path)
        assert name.startswith(f"pybridge-{os.getpid()}-test-")
        assert stat.S_IMODE(os.stat(seg.path).st_mode) == 0o600
        seg.buf[:5] = b"hello"
        other = shm.Segment.attach(seg.path)
        assert bytes(other.buf[:5]) == b"hello" and other.size == 4096
        other.close()
        bigger = seg.grow(10_000, "test")
        assert bigger is not seg and bigger.size >= 10_000
        assert not os.path.exists(seg.path), "grow unlinks the old file"
        assert seg.grow(10, "test") is seg
        bigger.unlink()
        bigger.unlink()  # idempotent
        assert not os.path.exists(bigger.path)
        bigger.close()
        bigger.close()
    finally:
        seg.close()
        seg.unlink()


def test_segment_close_with_exported_view() -> None:
    seg = shm.Segment.create(100, "test")
    view = seg.buf[:10]
    seg.close()  # a view is still held: no BufferError
    assert len(view) == 10
    seg.unlink()


def test_sweep_dead_removes_only_dead_sidecars(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_file = Path(shm.SHM_DIR) / f"pybridge-{dead.pid}-test-0"
    live_file = Path(shm.SHM_DIR) / f"pybridge-{os.getppid()}-test-sweep-0"
    dead_file.write_bytes(b"x")
    live_file.write_bytes(b"x")
    try:
        removed = shm.sweep_dead()
        assert str(dead_file) in removed
        assert not dead_file.exists()
        assert live_file.exists(), "a live pid's segment must stay"
    finally:
        for f in (dead_file, live_file):
            f.unlink(missing_ok=True)


def test_sweeps_remove_upload_staging_directories_too() -> None:
    """A client that died while creating an upload file leaves ``….stage/data``."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own = shm.sidecar_pid()
    stages = [Path(shm.SHM_DIR) / f"pybridge-{pid}-up-9.1.stage" for pid in (dead.pid, own)]
    outside = Path(shm.SHM_DIR) / f"zb-sweep-test-{os.getpid()}"
    outside.write_bytes(b"keep")
    try:
        for stage in stages:
            stage.mkdir()
            (stage / "data").write_bytes(b"x")
        # a symlink among the leftovers is removed itself, its target kept
        link = Path(shm.SHM_DIR) / f"pybridge-{dead.pid}-up-9.2"
        link.symlink_to(outside)
        removed = shm.sweep_dead()
        assert str(stages[0]) in removed and not stages[0].exists()
        assert str(link) in removed and not link.is_symlink()
        assert stages[1].exists(), "the running sidecar's own files wait for sweep_own"
        assert str(stages[1]) in shm.sweep_own() and not stages[1].exists()
        assert outside.read_bytes() == b"keep"
    finally:
        outside.unlink(missing_ok=True)
        for stage in stages:
            (stage / "data").unlink(missing_ok=True)
            if stage.exists():
                stage.rmdir()


def test_pool_start_sweeps_dead_segments() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = Path(shm.SHM_DIR) / f"pybridge-{dead.pid}-w1o0-7"
    leftover.write_bytes(b"stale")
    pool = WorkerPool(1)
    try:
        pool.start()
        assert not leftover.exists()
    finally:
        pool.close()
        leftover.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Tasks and transport


def test_map_returns_results_in_input_order(pool2: WorkerPool) -> None:
    # Later items finish first; the results must still follow the input.
    durations = [0.2, 0.0, 0.1, 0.0, 0.05, 0.0]
    futures = [pool2.submit(sleep_then, d, i) for i, d in enumerate(durations)]
    assert [f.result(10) for f in futures] == list(range(len(durations)))
    items = [bytes([i]) * (i * 50_000 + 1) for i in range(8)]
    assert pool2.map(echo, items) == items


def test_small_and_large_payloads_take_the_right_path(pool2: WorkerPool) -> None:
    small = pool2.submit(describe_payload, payload=b"abc").result(10)
    assert small == ("bytes", False, 3)
    big = os.urandom(8 << 20)
    kind, mapped, n = pool2.submit(describe_payload, payload=big).result(10)
    assert (kind, mapped, n) == ("memoryview", True, 8 << 20), \
        "an 8 MiB payload must arrive as a view of a shared-memory segment"
    assert pool2.submit(describe_payload, payload=None).result(10)[0] == "NoneType"


def output_segments() -> list[Path]:
    return [p for p in own_segments() if "o" in p.name.split("-")[2]]


def test_8mib_round_trip_reuses_segments(pool2: WorkerPool) -> None:
    big = os.urandom(8 << 20)
    assert pool2.map(echo, [big] * 8) == [big] * 8
    before = own_segments()
    assert before, "large buffers go through segments named after this process"
    for p in before:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    seen = set(before)
    for _ in range(10):
        assert pool2.map(echo, [big] * 8) == [big] * 8
        seen.update(own_segments())
    # Created per call, 80 output segments would have come and gone. Reused,
    # there are at most: per worker, one output per result it held at once
    # (8 at most) plus the pipelined ones, and its inputs.
    bound = pool2.size * (8 + 2 * PIPELINE_DEPTH)
    assert len(seen) <= bound, f"{len(seen)} segments seen, bound {bound}"
    assert bytes(pool2.submit(big_result, 8 << 20).result(10)) == bytes(range(256)) * (32 << 10)


def test_large_results_are_leased_views(pool2: WorkerPool) -> None:
    first, second = os.urandom(2 << 20), os.urandom(2 << 20)
    held = pool2.submit(echo, payload=first).result(10)
    assert isinstance(held, memoryview) and held.readonly
    # Many tasks later, the held result has not been overwritten.
    assert pool2.map(echo, [second] * 12) == [second] * 12
    assert held == first
    small = pool2.submit(echo, payload=b"small").result(10)
    assert small == b"small" and isinstance(small, bytes)


def test_results_past_the_lease_limit_are_copied(pool2: WorkerPool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "LEASE_LIMIT", 3 << 20)
    data = os.urandom(2 << 20)
    a = pool2.submit(echo, payload=data).result(10)
    b = pool2.submit(echo, payload=data).result(10)
    assert isinstance(a, memoryview) and isinstance(b, bytes)
    assert a == data and b == data
    del a
    c = pool2.submit(echo, payload=data).result(10)
    assert isinstance(c, memoryview), "a dropped lease frees its budget"


def test_idle_output_segments_are_trimmed(pool2: WorkerPool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "KEEP_IDLE_BYTES", 4 << 20)
    data = os.urandom(3 << 20)
    held = pool2.map(echo, [data] * 10)  # ten results held: ten output segments or so
    grown = len(output_segments())
    assert grown >= 8, output_segments()
    del held
    # The next tasks tell the workers which idle segments to remove.
    for _ in range(4):
        pool2.map(echo, [b"x"] * 4)
    assert len(output_segments()) <= 2 * (PIPELINE_DEPTH + 1) < grown


def test_output_buffer_in_place(pool2: WorkerPool) -> None:
    assert pool2.submit(in_place, 3 << 20).result(10) == bytes([7]) * (3 << 20)
    assert pool2.submit(in_place, 10).result(10) == bytes([7]) * 10
    # Outside a worker the same task still works.
    assert bytes(in_place(None, 100)) == bytes([7]) * 100


def test_tasks_write_into_a_named_segment(pool2: WorkerPool) -> None:
    parts = [os.urandom(300_000) for _ in range(6)]
    seg = shm.Segment.create(sum(map(len, parts)), "test")
    try:
        offsets = [sum(map(len, parts[:i])) for i in range(len(parts))]
        futures = [pool2.submit(write_into, seg.path, off, payload=p)
                   for p, off in zip(parts, offsets)]
        assert [f.result(10) for f in futures] == [len(p) for p in parts]
        assert bytes(seg.buf) == b"".join(parts)
    finally:
        seg.close()
        seg.unlink()


def test_bridge_errors_keep_class_message_and_details(pool2: WorkerPool) -> None:
    with pytest.raises(errors.DecodeFailed) as info:
        pool2.submit(raise_bridge).result(10)
    assert info.value.message == "corrupt chunk"
    assert info.value.details == {"index": 3, "codec": {"id": "zstd"}}
    assert info.value.code == "decode_failed"


def test_other_errors_carry_type_and_worker_traceback(pool2: WorkerPool) -> None:
    with pytest.raises(RemoteError) as info:
        pool2.submit(raise_other).result(10)
    assert info.value.python_type == "KeyError"
    assert "raise_other" in info.value.remote_traceback
    with pytest.raises(RemoteError) as info:
        pool2.submit(unpicklable).result(10)
    assert "pickle" in str(info.value).lower() or "Pickl" in info.value.python_type
    assert pool2.submit(echo, 1).result(10) == (1,)


def test_unpicklable_argument_fails_only_its_task(pool2: WorkerPool) -> None:
    with pytest.raises(Exception):
        pool2.submit(echo, threading.Lock()).result(10)
    assert pool2.submit(echo, 2).result(10) == (2,)


def test_payload_must_be_bytes_like(pool2: WorkerPool) -> None:
    with pytest.raises(TypeError):
        pool2.submit(echo, payload="text")


def test_cancelled_queued_task_never_runs(tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "ran"
    with WorkerPool(1) as pool:
        blocker = pool.submit(wait_for_file, str(gate))
        # Fill the worker's pipe so the next task stays in the queue.
        fillers = [pool.submit(sleep_then, 0, i) for i in range(PIPELINE_DEPTH)]
        victim = pool.submit(touch, str(marker))
        assert victim.cancel()
        gate.touch()
        blocker.result(30)
        assert [f.result(30) for f in fillers] == list(range(PIPELINE_DEPTH))
        assert pool.submit(echo, 3).result(30) == (3,)
    assert not marker.exists(), "a cancelled task ran"


def test_submit_blocks_when_the_queue_is_full(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    total = 12
    with WorkerPool(1) as pool:
        assert pool.wait_ready(30)
        submitted: list[Any] = []

        def producer() -> None:
            for i in range(total):
                submitted.append(pool.submit(wait_for_file, str(gate)))

        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        time.sleep(0.5)
        # One pool of size 1: at most 2 queued plus what its worker holds.
        limit = 2 * pool.size + PIPELINE_DEPTH + 1
        assert thread.is_alive(), "submit never blocked"
        assert len(submitted) <= limit, f"{len(submitted)} tasks accepted, bound is {limit}"
        gate.touch()
        thread.join(30)
        assert not thread.is_alive()
        # Back-pressure never drops a task.
        assert len(submitted) == total
        assert all(isinstance(f.result(30), int) for f in submitted)


# --------------------------------------------------------------------------
# Crashes


def test_killed_worker_fails_only_its_task_and_is_replaced(pool2: WorkerPool,
                                                            tmp_path: Path) -> None:
    gate, pid_file = tmp_path / "gate", tmp_path / "pid"
    old_pids = set(pool2.pids())
    victim = pool2.submit(wait_for_file, str(gate), str(pid_file))
    assert wait_for(pid_file.exists, timeout=10)
    victim_pid = int(pid_file.read_text())
    assert victim_pid in old_pids
    others = [pool2.submit(sleep_then, 0.02, i) for i in range(10)]
    os.kill(victim_pid, signal.SIGKILL)
    with pytest.raises(errors.WorkerCrashed) as info:
        victim.result(10)
    assert "SIGKILL" in info.value.message
    assert info.value.details["signal"] == "SIGKILL"
    assert info.value.details["pid"] == victim_pid
    assert [f.result(10) for f in others] == list(range(10))
    assert wait_for(lambda: pool2.alive_count() == 2, timeout=10)
    new_pids = set(pool2.pids())
    assert victim_pid not in new_pids and len(new_pids) == 2
    assert not list(Path(shm.SHM_DIR).glob(f"pybridge-{os.getpid()}-w{victim_pid}o*")), \
        "the dead worker's output segments must be removed"
    gate.touch()


def test_worker_exit_is_reported_with_its_status(pool2: WorkerPool) -> None:
    with pytest.raises(errors.WorkerCrashed) as info:
        pool2.submit(exit_with, 7).result(10)
    assert "exit status 7" in info.value.message
    assert info.value.details["exit_code"] == 7
    assert pool2.submit(echo, 4).result(10) == (4,)


def test_workers_die_with_their_owner(tmp_path: Path) -> None:
    # Both workers are busy when their owner dies: an idle worker would also
    # leave on its pipe's EOF, a busy one only through the death signal.
    script = textwrap.dedent(f"""
        import os, sys, time
        from pybridge.pool.pool import WorkerPool
        from test_workers import wait_for_file
        pool = WorkerPool(2)
        pool.start()
        assert pool.wait_ready(30)
        for i in range(2):
            pool.submit(wait_for_file, "{tmp_path}/never", f"{tmp_path}/pid{{i}}")
        while not all(os.path.exists(f"{tmp_path}/pid{{i}}") for i in range(2)):
            time.sleep(0.01)
        print(" ".join(map(str, pool.pids())), flush=True)
        time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                             cwd=tmp_path)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().decode()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids), line
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        gone = wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=2.0)
        assert gone, f"workers still alive 2 s after their owner was killed: " \
                     f"{[p for p in pids if pid_alive(p)]}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for path in Path(shm.SHM_DIR).glob(f"pybridge-{owner.pid}-*"):
            path.unlink(missing_ok=True)


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_alive(int(entry)):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid``, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def test_killed_sidecar_takes_its_workers_along() -> None:
    sc = SidecarProcess(workers=2)
    try:
        # A slow request keeps a worker busy when the sidecar dies.
        blob = os.urandom(32 << 20)
        sc.request("codec.encode", {"codec": {"id": "lzma", "preset": 9}, "data": blob})
        assert wait_for(lambda: len(descendants(sc.pid)) >= 3, timeout=30), \
            "the fork server and two workers did not start"
        below = descendants(sc.pid)
        start = {p: cpu_ticks(p) for p in below}
        assert wait_for(lambda: any(cpu_ticks(p) - start[p] >= 20 for p in below), timeout=30), \
            "no worker got busy with the request"
        os.kill(sc.pid, signal.SIGKILL)
        sc.wait(10)
        assert wait_for(lambda: not any(pid_alive(p) for p in below), timeout=2.0), \
            f"still alive 2 s after the sidecar was killed: {[p for p in below if pid_alive(p)]}"
    finally:
        sc.close()
        for path in Path(shm.SHM_DIR).glob(f"pybridge-{sc.pid}-*"):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Life cycle


def test_close_is_idempotent_and_sweeps_segments() -> None:
    pool = WorkerPool(2)
    pool.start()
    assert pool.wait_ready(30)
    pids = pool.pids()
    assert pool.submit(echo, payload=os.urandom(1 << 20)).result(10)
    assert own_segments()
    pool.close()
    pool.close()
    assert own_segments() == []
    assert wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5)
    with pytest.raises(RuntimeError):
        pool.submit(echo, 1)


def test_close_fails_running_and_queued_tasks(tmp_path: Path) -> None:
    pool = WorkerPool(1)
    pool.start()
    running = pool.submit(wait_for_file, str(tmp_path / "never"))
    queued = [pool.submit(echo, i) for i in range(2)]
    time.sleep(0.3)
    pool.close()
    for f in [running, *queued]:
        with pytest.raises(errors.WorkerCrashed):
            f.result(10)


def test_submit_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        WorkerPool(1).submit(echo, 1)
    with pytest.raises(ValueError):
        WorkerPool(0)

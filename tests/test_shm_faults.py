"""A small, full, read-only or missing ``/dev/shm`` never kills or breaks the sidecar.

Each sidecar here runs in a mount namespace of its own (``unshare --mount``,
as root) where ``/dev/shm`` is:

- ``small``: a 2 MiB tmpfs (a 4 MiB handoff cannot be made in it, and
  band buffers only partly);
- ``full``: a 2 MiB tmpfs filled to the last byte;
- ``ro``: a read-only tmpfs;
- ``missing``: absent (``/dev`` is a fresh tmpfs holding only the few
  device nodes a process needs).

Reads and writes of 16 MiB and more must then work, with and without
``handoff``, through the pipe (results) and memfds (the workers' buffers),
with the data proven right by zarr-python; the sidecar keeps its pid (a
SIGBUS once killed it with status 135); ``hello`` and ``doctor`` say that
handoff is unusable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
from helpers import REPO, SidecarProcess, fs, ok

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

MiB = 1 << 20

#: Shell that prepares the namespace's /dev/shm, per fault.
SETUPS = {
    "small": "mount -t tmpfs -o size=2m,mode=1777 tmpfs /dev/shm",
    "full": "mount -t tmpfs -o size=2m,mode=1777 tmpfs /dev/shm && "
            "(head -c 4194304 /dev/zero > /dev/shm/filler 2>/dev/null; true)",
    "ro": "mount -t tmpfs -o ro,size=2m tmpfs /dev/shm",
    # cwd keeps the hidden /dev reachable while a tmpfs covers it (-c: mount must
    # not resolve ./null to the new, empty /dev/null)
    "missing": 'W=$PWD && cd /dev && mount -t tmpfs -o size=1m tmpfs /dev && '
               'for n in null zero full random urandom; do '
               'touch /dev/$n && mount -c --bind ./$n /dev/$n || exit 1; done && '
               'ln -s /proc/self/fd /dev/fd && cd "$W"',
}
FAULTS = list(SETUPS)


def wrapper(fault: str) -> list[str]:
    """The command that runs the sidecar with ``/dev/shm`` in the state ``fault``."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            SETUPS[fault] + ' && exec "$@"', "sh"]


def _namespaces_work() -> str | None:
    """None when this process can make mount namespaces, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    try:
        done = subprocess.run(wrapper("small") + ["true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if done.returncode != 0:
        return f"unshare --mount with a tmpfs failed (root needed): {done.stderr.decode()!r}"
    return None


_WHY_NOT = _namespaces_work()
needs_ns = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 16 MiB int32 array written by zarr-python (chunks of 1 MiB)."""
    root = tmp_path_factory.mktemp("shm") / "a"
    data = np.arange(1024 * 4096, dtype="<i4").reshape(1024, 4096)
    z = zarr.create_array(str(root), shape=data.shape, chunks=(256, 1024), dtype="int32",
                          compressors=[zarr.codecs.BloscCodec(cname="lz4", clevel=1)],
                          zarr_format=3)
    z[:] = data
    return root, data


@pytest.fixture(params=FAULTS)
def faulty(request: pytest.FixtureRequest) -> Iterator[SidecarProcess]:
    """A sidecar with two workers whose /dev/shm is small, full, read-only or missing."""
    if _WHY_NOT is not None:
        pytest.skip(_WHY_NOT)
    sc = SidecarProcess(workers=2, wrapper=wrapper(request.param))
    try:
        yield sc
    finally:
        sc.close()


def alive(sc: SidecarProcess, pid: int) -> None:
    """The sidecar still serves, with the same OS pid as before."""
    assert ok(sc.call("hello", {}))["pid"] == pid
    sc.ping()
    assert sc.proc is not None and sc.proc.poll() is None


# --------------------------------------------------------------------------


@needs_ns
def test_hello_says_handoff_is_unusable(faulty: SidecarProcess) -> None:
    hello = ok(faulty.call("hello", {}))
    status = hello["handoff"]
    assert status["usable"] is False
    assert status["dir"] == "/dev/shm"
    assert "/dev/shm" in status["reason"]
    assert status["uid"] == os.geteuid()
    # the namespace's /dev/shm is not this process's: the client can tell
    assert status["dev"] != os.stat("/dev/shm").st_dev
    assert "handoff is unusable" in faulty.stderr_text()


def test_hello_says_handoff_is_usable_with_a_normal_dev_shm(sidecar: SidecarProcess) -> None:
    status = ok(sidecar.call("hello", {}))["handoff"]
    assert status == {"usable": True, "dir": "/dev/shm", "free_bytes": status["free_bytes"],
                      "dev": os.stat("/dev/shm").st_dev, "uid": os.geteuid(), "reason": None}
    assert isinstance(status["free_bytes"], int) and status["free_bytes"] > 0


@needs_ns
@pytest.mark.parametrize("fault", FAULTS)
def test_doctor_says_handoff_is_unusable(fault: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([*wrapper(fault), sys.executable, "-m", "pybridge", "doctor"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("\nhandoff:\n", 1)[1].split("\n\n", 1)[0]
    assert "UNUSABLE" in section and "/dev/shm" in section, done.stdout


@needs_ns
@pytest.mark.parametrize("handoff", [False, True])
def test_big_reads_come_by_the_pipe(faulty: SidecarProcess, big: tuple[Path, np.ndarray],
                                    handoff: bool) -> None:
    root, data = big
    pid = ok(faulty.call("hello", {}))["pid"]
    reply = faulty.call("array.read", {"store": fs(root), "handoff": handoff}, timeout=120)
    assert reply.ok, reply.error
    assert "shm" not in reply.unwrap() and reply.data == data.tobytes()
    reply = faulty.call("array.read", {"store": fs(root), "handoff": handoff,
                                       "start": [100, 7], "stop": [1000, 4000]}, timeout=120)
    assert reply.data == data[100:1000, 7:4000].tobytes()
    alive(faulty, pid)


@needs_ns
def test_big_writes_work(faulty: SidecarProcess, tmp_path: Path) -> None:
    pid = ok(faulty.call("hello", {}))["pid"]
    root = tmp_path / "w"
    zarr.create_array(str(root), shape=(2048, 4096), chunks=(256, 1024), dtype="int32",
                      zarr_format=3)
    data = (np.arange(2048 * 4096, dtype="<i4") * 3).reshape(2048, 4096)  # 32 MiB
    rid = faulty.request("array.write", {"store": fs(root), "start": [0, 0],
                                         "shape": [2048, 4096],
                                         "stream": {"bytes": data.nbytes}})
    faulty.upload(rid, data.tobytes())
    assert ok(faulty.response(rid, timeout=120)) == {"bytes": data.nbytes}
    got = zarr.open_array(str(root), mode="r")[:]
    assert got.dtype == np.int32 and np.array_equal(got, data)
    alive(faulty, pid)


@needs_ns
def test_decode_many_handoff_comes_by_the_pipe(faulty: SidecarProcess) -> None:
    pid = ok(faulty.call("hello", {}))["pid"]
    arrays = [np.arange(k, k + 256 * 1024, dtype="<i4") for k in range(6)]  # 6 MiB decoded
    for config in ({"id": "zstd", "level": 1}, {"id": "zlib", "level": 1}):
        codec = numcodecs.get_codec(config)
        items = [bytes(codec.encode(a)) for a in arrays]
        res = ok(faulty.call("codec.decode_many", {"codec": config, "items": items,
                                                   "handoff": True}, timeout=120))
        assert "shm" not in res
        assert [bytes(x) for x in res["items"]] == [a.tobytes() for a in arrays]
    alive(faulty, pid)


def test_a_memfd_locator_never_opens_a_reused_descriptor() -> None:
    """A memfd segment is found by ``/proc/<pid>/fd/<n>``; once its
    descriptor is closed and the number reused, its locator is stale."""
    from pybridge.handoff import shm

    a = shm.Segment.create_memfd(4096, "t")
    a.buf[:1] = b"a"
    old = a.path
    a.close()
    a.unlink()
    b = shm.Segment.create_memfd(4096, "t")
    try:
        b.buf[:1] = b"b"
        assert old.split(":")[2] == b.path.split(":")[2]  # the same descriptor number
        with pytest.raises(FileNotFoundError):
            shm.Segment.attach(old)
        with shm.Segment.attach(b.path) as seen:
            assert bytes(seen.buf[:1]) == b"b" and seen.size == 4096
    finally:
        b.close()
        b.unlink()

"""The sidecar's shared state lives on its context, made once, on first use."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from pybridge.context import SidecarContext
from pybridge.settings import Settings

SHARED = ("chunk_locks", "extent_locks", "band_buffers", "metadata_cache", "handoff_janitor")


def test_each_context_has_its_own_state():
    a, b = SidecarContext(Settings(workers=1)), SidecarContext(Settings(workers=1))
    for name in SHARED:
        assert getattr(a, name) is getattr(a, name)
        assert getattr(a, name) is not getattr(b, name)
    keys = a.chunk_locks.acquire([("dir", (0,))])
    try:
        assert a.chunk_locks.held() == 1 and b.chunk_locks.held() == 0
    finally:
        a.chunk_locks.release(keys)


def test_threads_racing_for_the_first_use_get_one_object():
    ctx = SidecarContext(Settings(workers=1))
    start = threading.Barrier(8)
    seen: list[object] = []

    def take() -> None:
        start.wait()
        seen.append(ctx.chunk_locks)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(s is seen[0] for s in seen)


def test_a_new_context_imports_none_of_the_state_modules():
    code = ("import sys\n"
            "from pybridge.context import SidecarContext\n"
            "from pybridge.settings import Settings\n"
            "SidecarContext(Settings(workers=1))\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pybridge.zarr', "
            "'pybridge.handoff.results'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_way_back_is_decided_once_from_the_sidecar_limits():
    from pybridge.rpc.call import Call
    from pybridge.rpc.framing import FrameWriter

    r, w = os.pipe()
    try:
        ctx = SidecarContext(Settings(workers=1, stream_frame_bytes=1000,
                                      handoff_threshold=5000))
        call = Call(1, "array.read", {}, ctx, FrameWriter(w))
        assert call.way_back(1000, handoff=True) == "inline"
        assert call.way_back(1001, handoff=True) == "stream"
        assert call.way_back(4999, handoff=True) == "stream"
        assert call.way_back(5000, handoff=True) == "handoff"
        assert call.way_back(5000, handoff=False) == "stream"
    finally:
        os.close(r)
        os.close(w)

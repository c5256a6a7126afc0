"""The raw Port echo floor: read ``{packet, 4}`` frames from fd 3, write them back on fd 4.

Started by ``bench/elixir/bench.exs`` with ``Port.open({:spawn_executable,
python}, [{:packet, 4}, :nouse_stdio, ...])``, the same channel the sidecar
uses, with nothing else: no msgpack, no dispatch, no threads. A ``ping``
through ``ZarrBridge.Sidecar.call`` is compared against this floor.
Exits at EOF.
"""

from __future__ import annotations

import os
import sys

IN_FD = 3
OUT_FD = 4


def _read_exact(n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        piece = os.read(IN_FD, n)
        if not piece:
            return None
        parts.append(piece)
        n -= len(piece)
    return b"".join(parts)


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(OUT_FD, view):]


def main() -> int:
    while True:
        header = _read_exact(4)
        if header is None:
            return 0
        body = _read_exact(int.from_bytes(header, "big"))
        if body is None:
            return 0
        _write_all(header + body)


if __name__ == "__main__":
    sys.exit(main())

"""``hello``, ``ping`` and the test methods (PROTOCOL.md §4)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from pybridge import PROTOCOL_VERSION, __version__
from pybridge.errors import Cancelled, InvalidParams, ProtocolMismatch
from pybridge.methods.method import Method
from pybridge.rpc.params import Bin, Int, Map, Str

if TYPE_CHECKING:
    from pybridge.rpc.call import Call

__all__ = ["METHODS", "capabilities", "handoff_status", "versions"]

#: Capabilities every sidecar of this version has.
CAPABILITIES = ("stream", "codec", "array", "handoff", "group", "zip", "memory", "values", "step")

_versions: dict[str, str] | None = None


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Versions of installed distributions, read from ``*.dist-info`` names.

    Scanning ``sys.path`` directories is much cheaper than importing the
    packages (or ``importlib.metadata``); ``importlib.metadata`` is the
    fallback for a distribution the scan does not find.
    """
    wanted = {_normalize(n): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            with os.scandir(entry) as it:
                for de in it:
                    if not de.name.endswith(".dist-info"):
                        continue
                    dist, _, version = de.name[:-len(".dist-info")].partition("-")
                    name = wanted.get(_normalize(dist))
                    if name is not None and name not in found and version:
                        found[name] = version
        except OSError:
            continue
        if len(found) == len(wanted):
            break
    missing = [n for n in names if n not in found]
    if missing:
        from importlib import metadata

        for name in missing:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                found[name] = "not installed"
    return found


def versions() -> dict[str, str]:
    """The versions reported by ``hello`` (computed once, imports nothing heavy)."""
    global _versions
    if _versions is None:
        import msgpack

        v = _installed_versions(("zarr", "numcodecs", "numpy"))
        _versions = {
            "pybridge": __version__,
            "zarr": v["zarr"],
            "numcodecs": v["numcodecs"],
            "numpy": v["numpy"],
            "msgpack": ".".join(str(p) for p in msgpack.version),
            "python": sys.version.split()[0],
        }
    return dict(_versions)


def handoff_status(settings: Any) -> dict[str, Any]:
    """``hello``'s ``"handoff"`` map: whether ``/dev/shm`` can take a handoff
    of the threshold's size now (:func:`pybridge.handoff.shm.probe`). When it cannot,
    every result and upload goes by the pipe."""
    from pybridge.handoff.shm import probe

    return probe(int(getattr(settings, "handoff_threshold", 0)))


def capabilities(test_methods: bool) -> list[str]:
    return [*CAPABILITIES, "test_methods"] if test_methods else list(CAPABILITIES)


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def hello(call: Call) -> dict[str, Any]:
    client = call.params["protocol"]
    if client is not None and _major(client) != _major(PROTOCOL_VERSION):
        raise ProtocolMismatch(
            f"the client speaks protocol {client}, this sidecar speaks {PROTOCOL_VERSION}",
            client=client, sidecar=PROTOCOL_VERSION)
    s = call.settings
    return {
        "protocol": PROTOCOL_VERSION,
        "versions": versions(),
        "limits": {
            "max_frame_bytes": s.max_frame_bytes,
            "stream_frame_bytes": s.stream_frame_bytes,
            "max_in_flight": s.max_in_flight,
            "max_request_bytes": s.max_request_bytes,
            "handoff_threshold": s.handoff_threshold,
        },
        "capabilities": capabilities(s.test_methods),
        "pid": os.getpid(),
        "workers": s.workers,
        "handoff": handoff_status(s),
    }


def ping(call: Call) -> dict[str, Any]:
    return {"pong": True}


# -- test methods (PYBRIDGE_TEST_METHODS=1) -------------------------------

def sleep(call: Call) -> dict[str, Any]:
    ms = call.params["ms"]
    if call.cancelled.wait(ms / 1000):
        raise Cancelled(f"request {call.id} was cancelled")
    return {"slept_ms": ms}


def echo(call: Call) -> dict[str, Any]:
    data = call.params["data"]
    if call.upload_bytes is not None:
        if data is not None:
            raise InvalidParams("give either 'data' or 'stream', not both",
                                param="data", expected="absent")
        data = call.read_upload()
    elif data is None:
        raise InvalidParams("missing param 'data'", param="data", expected="bin")
    return call.reply_bytes(data)


def crash(call: Call) -> dict[str, Any]:
    sys.stderr.flush()
    os._exit(70)


def fail(call: Call) -> dict[str, Any]:
    raise ValueError(call.params["message"])


METHODS: list[Method] = [
    Method("hello", hello, {"protocol": Str(required=False), "client": Str(required=False)},
           inline=True),
    Method("ping", ping, {}, inline=True),
    Method("sleep", sleep, {"ms": Int(min=0, max=86_400_000)}, test_only=True),
    Method("echo", echo, {"data": Bin(required=False), "stream": Map(required=False)},
           test_only=True),
    Method("crash", crash, {}, test_only=True),
    Method("fail", fail, {"message": Str(required=False, default="fail")}, test_only=True),
]

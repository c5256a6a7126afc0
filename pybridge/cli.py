"""Command line: ``python -m pybridge [serve|doctor] [options]``.

``serve`` (the default) serves the channel: fds 3 and 4, or 0 and 1 with
``--stdio``. ``doctor`` prints, for people, the versions, the settings in
effect and the codecs available. Options are listed in
:mod:`pybridge.settings` and by ``python -m pybridge --help``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pybridge.settings import Settings, SettingsError

__all__ = ["doctor", "main"]

COMMANDS = ("serve", "doctor")

#: Codecs that need an optional package, and the numcodecs module that has them.
_OPTIONAL_CODECS = {
    "blosc": "numcodecs.blosc",
    "zstd": "numcodecs.zstd",
    "lz4": "numcodecs.lz4",
    "zfpy": "numcodecs.zfpy",
    "pcodec": "numcodecs.pcodec",
    "crc32c": "numcodecs.checksum32",
    "msgpack2": "numcodecs.msgpacks",
    "vlen-utf8": "numcodecs.vlen",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = "serve"
    if args and not args[0].startswith("-"):
        command = args.pop(0)
    if command not in COMMANDS:
        print(f"pybridge: unknown command {command!r} (expected one of: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    try:
        settings = Settings.from_argv(args, os.environ)
    except SettingsError as e:
        print(f"pybridge: error: {e}", file=sys.stderr)
        return 2
    _configure_logging(os.environ.get("PYBRIDGE_LOG_LEVEL", "WARNING"))
    if command == "doctor":
        return doctor(settings)
    from pybridge.rpc.server import serve

    try:
        return serve(settings)
    except KeyboardInterrupt:
        return 130


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper() if level.upper() in logging.getLevelNamesMapping() else "WARNING",
        format="pybridge[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def doctor(settings: Settings, out: Any = None) -> int:
    """Print versions, settings and codecs for a person; return 0."""
    out = out or sys.stdout
    from pybridge.methods.basic import versions

    print("pybridge doctor", file=out)
    print("\nversions:", file=out)
    for name, version in versions().items():
        print(f"  {name:<10} {version}", file=out)
    print("\nsettings:", file=out)
    for name, value in settings.describe().items():
        print(f"  {name:<19} {value}", file=out)
    _print_handoff(settings, out)
    print("\ncodecs:", file=out)
    try:
        codecs = _codecs(settings)
    except Exception as e:  # noqa: BLE001 -- numcodecs itself cannot be imported
        print(f"  unavailable: {type(e).__name__}: {e}", file=out)
        return 0
    for c in codecs:
        state = "available" if c.get("available") else "UNAVAILABLE"
        if c.get("forbidden"):
            state += ", forbidden (needs --allow-pickle)"
        reason = f" ({c['reason']})" if c.get("reason") else ""
        print(f"  {c.get('id', '?'):<14} {state}{reason}", file=out)
    return 0


def _print_handoff(settings: Settings, out: Any) -> None:
    """The ``handoff`` section of ``doctor``: what ``hello`` reports."""
    from pybridge.methods.basic import handoff_status

    status = handoff_status(settings)
    print("\nhandoff:", file=out)
    if status["usable"]:
        print(f"  usable     {status['dir']}", file=out)
    else:
        print(f"  UNUSABLE   results and uploads go by the pipe ({status['reason']})", file=out)
    free = status["free_bytes"]
    print(f"  free       {'unknown' if free is None else f'{free} bytes'}", file=out)


def _codecs(settings: Settings) -> list[dict[str, Any]]:
    """The codec list: ``pybridge.codecs.list_codecs`` when it can be imported, else
    numcodecs' registry plus a try-import of the optional codecs."""
    try:
        from pybridge.codecs import list_codecs
    except ImportError:
        pass
    else:
        return list_codecs(settings.allow_pickle)

    import importlib

    from numcodecs.registry import codec_registry

    found: dict[str, dict[str, Any]] = {}
    for codec_id in sorted(codec_registry):
        found[codec_id] = {"id": codec_id, "available": True, "reason": None,
                           "forbidden": codec_id == "pickle" and not settings.allow_pickle}
    for codec_id, module in _OPTIONAL_CODECS.items():
        if codec_id in found:
            continue
        try:
            importlib.import_module(module)
            reason = "not registered"
        except ImportError as e:
            reason = f"{type(e).__name__}: {e}"
        found[codec_id] = {"id": codec_id, "available": False, "reason": reason,
                           "forbidden": False}
    return [found[k] for k in sorted(found)]

"""The sidecar's settings, read once at start-up from argv and the environment.

Every option can be given on the command line or in an environment variable;
the command line wins. :meth:`Settings.from_argv` is the one place where
options are parsed and checked, so a typo or a bad value stops the sidecar at
start with a clear message instead of surfacing later.

| option | environment variable | default |
|---|---|---|
| ``--workers N`` | ``PYBRIDGE_WORKERS`` | ``os.cpu_count()`` |
| ``--max-frame-bytes N`` | ``PYBRIDGE_MAX_FRAME_BYTES`` | 64 MiB |
| ``--stream-frame-bytes N`` | ``PYBRIDGE_STREAM_FRAME_BYTES`` | 256 KiB |
| ``--max-in-flight N`` | ``PYBRIDGE_MAX_IN_FLIGHT`` | 10000 |
| ``--max-request-bytes N`` | ``PYBRIDGE_MAX_REQUEST_BYTES`` | 16 GiB |
| ``--allow-pickle`` | ``PYBRIDGE_ALLOW_PICKLE=1`` | off |
| ``--allowed-root DIR`` (repeatable) | ``PYBRIDGE_ALLOWED_ROOTS`` (``:``-separated) | none |
| ``--allowed-url URL`` (repeatable) | ``PYBRIDGE_ALLOWED_URLS`` (space-separated) | none |
| ``--handoff-threshold N`` | ``PYBRIDGE_HANDOFF_THRESHOLD`` | 4 MiB |
| ``--stdio`` | ``PYBRIDGE_STDIO=1`` | off (fds 3 and 4) |
| (none) | ``PYBRIDGE_TEST_METHODS=1`` | off |

Byte sizes accept a binary suffix: ``256KiB``, ``64M``, ``1g``, ``2T``.

``max_request_bytes`` bounds the bytes one request may move: an array read's
result, an array write's data, any upload stream. Such payloads are streamed
in bands, so the sidecar's memory does not grow with them; the limit stops a
mistaken request (a whole 1 TB array) from running for hours. A request over
it gets ``too_large`` before any work is done. Results handed over through
shared memory have their own, lower cap (they live in ``/dev/shm``).

``allowed_urls`` are the object-store prefixes remote stores may live under
(``s3://bucket``, ``s3://bucket/team``, ``https://data.example.org/zarr``;
matched at a path boundary by :func:`pybridge.stores.check_allowed`). None
given: any location is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Settings", "SettingsError", "parse_bool", "parse_size"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Smallest ``max_frame_bytes`` accepted, and the room a ``stream.data``
#: frame needs around its payload (msgpack headers and the id).
MIN_FRAME_BYTES = 4 * KiB
STREAM_FRAME_OVERHEAD = 64
#: The length prefix is a 4-byte unsigned integer.
MAX_FRAME_LIMIT = 2**32 - 1

_SUFFIXES = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": 1024 * MiB, "gb": 1024 * MiB, "gib": 1024 * MiB,
    "t": 1024 * GiB, "tb": 1024 * GiB, "tib": 1024 * GiB,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """An option or environment variable has a bad value."""


def parse_size(text: str) -> int:
    """Parse a byte count such as ``"262144"``, ``"256KiB"`` or ``"64M"``."""
    s = text.strip().lower().replace("_", "")
    digits = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    suffix = s[len(digits):].strip()
    if not digits.strip().isdigit() or suffix not in _SUFFIXES:
        raise SettingsError(f"not a byte size: {text!r}")
    return int(digits) * _SUFFIXES[suffix]


def parse_bool(text: str) -> bool:
    """Parse an environment flag: 1/true/yes/on or 0/false/no/off/empty."""
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise SettingsError(f"not a boolean: {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SettingsError(f"not an integer: {text!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything the sidecar is configured with. Immutable after start."""

    workers: int
    max_frame_bytes: int = 64 * MiB
    stream_frame_bytes: int = 256 * KiB
    max_in_flight: int = 10_000
    max_request_bytes: int = 16 * GiB
    allow_pickle: bool = False
    test_methods: bool = False
    allowed_roots: tuple[str, ...] = ()
    allowed_urls: tuple[str, ...] = ()
    handoff_threshold: int = 4 * MiB
    stdio: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= MAX_FRAME_LIMIT:
            raise SettingsError(
                f"max_frame_bytes must be in [{MIN_FRAME_BYTES}, {MAX_FRAME_LIMIT}], "
                f"got {self.max_frame_bytes}")
        if not 1 <= self.stream_frame_bytes <= self.max_frame_bytes - STREAM_FRAME_OVERHEAD:
            raise SettingsError(
                f"stream_frame_bytes must be in [1, max_frame_bytes - {STREAM_FRAME_OVERHEAD}], "
                f"got {self.stream_frame_bytes}")
        if self.max_in_flight < 1:
            raise SettingsError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.max_request_bytes < 1:
            raise SettingsError(
                f"max_request_bytes must be at least 1, got {self.max_request_bytes}")
        if self.handoff_threshold < 0:
            raise SettingsError(f"handoff_threshold must be >= 0, got {self.handoff_threshold}")
        for root in self.allowed_roots:
            if not os.path.isabs(root):
                raise SettingsError(f"allowed root must be an absolute path: {root!r}")
        for url in self.allowed_urls:
            scheme, sep, rest = url.partition("://")
            if not sep or not scheme or not rest.strip("/"):
                raise SettingsError(
                    f"allowed url must be a url with a bucket or host (s3://bucket): {url!r}")

    @classmethod
    def from_argv(cls, argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
        """Build settings from command-line options and environment variables.

        ``argv`` holds the options only (no program name, no sub-command).
        A bad command-line option exits with status 2 and a usage message
        (argparse); a bad value raises :class:`SettingsError`.
        """
        ns = _fast_parse(argv)
        if ns is None:  # --help, a mistake, or an abbreviation: argparse decides
            ns = vars(_parser().parse_args(list(argv)))

        def pick(cli: Any, env_name: str, parse: Any, default: Any) -> Any:
            if cli is not None:
                return cli
            raw = environ.get(env_name)
            if raw is None:
                return default
            try:
                return parse(raw)
            except SettingsError as e:
                raise SettingsError(f"{env_name}: {e}") from None

        if ns["allowed_root"]:
            roots_raw: list[str] = list(ns["allowed_root"])
        else:
            roots_raw = [r for r in environ.get("PYBRIDGE_ALLOWED_ROOTS", "").split(":") if r]
        if ns["allowed_url"]:
            urls: tuple[str, ...] = tuple(ns["allowed_url"])
        else:
            urls = tuple(environ.get("PYBRIDGE_ALLOWED_URLS", "").split())
        max_frame = pick(ns["max_frame_bytes"], "PYBRIDGE_MAX_FRAME_BYTES", parse_size, 64 * MiB)
        roots = tuple(os.path.realpath(r) if os.path.isabs(r) else r for r in roots_raw)

        return cls(
            workers=pick(ns["workers"], "PYBRIDGE_WORKERS", _parse_int, os.cpu_count() or 1),
            max_frame_bytes=max_frame,
            # The default shrinks to fit under a small max_frame_bytes.
            stream_frame_bytes=pick(ns["stream_frame_bytes"], "PYBRIDGE_STREAM_FRAME_BYTES",
                                    parse_size,
                                    max(1, min(256 * KiB, max_frame - STREAM_FRAME_OVERHEAD))),
            max_in_flight=pick(ns["max_in_flight"], "PYBRIDGE_MAX_IN_FLIGHT", _parse_int, 10_000),
            max_request_bytes=pick(ns["max_request_bytes"], "PYBRIDGE_MAX_REQUEST_BYTES",
                                   parse_size, 16 * GiB),
            allow_pickle=pick(True if ns["allow_pickle"] else None, "PYBRIDGE_ALLOW_PICKLE",
                              parse_bool, False),
            test_methods=parse_bool(environ.get("PYBRIDGE_TEST_METHODS", "")),
            allowed_roots=roots,
            allowed_urls=urls,
            handoff_threshold=pick(ns["handoff_threshold"], "PYBRIDGE_HANDOFF_THRESHOLD",
                                   parse_size, 4 * MiB),
            stdio=pick(True if ns["stdio"] else None, "PYBRIDGE_STDIO", parse_bool, False),
        )

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict (for ``doctor`` and logs)."""
        return asdict(self)


#: The options: flag -> (name, kind). ``_parser`` builds argparse from the
#: same names; ``_fast_parse`` handles the exact spellings without importing
#: argparse (it costs a few milliseconds of start-up).
_OPTIONS: dict[str, tuple[str, str]] = {
    "--workers": ("workers", "int"),
    "--max-frame-bytes": ("max_frame_bytes", "size"),
    "--stream-frame-bytes": ("stream_frame_bytes", "size"),
    "--max-in-flight": ("max_in_flight", "int"),
    "--max-request-bytes": ("max_request_bytes", "size"),
    "--allow-pickle": ("allow_pickle", "flag"),
    "--allowed-root": ("allowed_root", "append"),
    "--allowed-url": ("allowed_url", "append"),
    "--handoff-threshold": ("handoff_threshold", "size"),
    "--stdio": ("stdio", "flag"),
}


def _fast_parse(argv: Sequence[str]) -> dict[str, Any] | None:
    """Parse well-formed options by hand; None for anything argparse should see."""
    ns: dict[str, Any] = {name: False if kind == "flag" else None
                          for name, kind in _OPTIONS.values()}
    args = list(argv)
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag not in _OPTIONS:
            return None
        name, kind = _OPTIONS[flag]
        i += 1
        if kind == "flag":
            if eq:
                return None
            ns[name] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
        try:
            parsed: Any = int(value) if kind == "int" else (
                parse_size(value) if kind == "size" else value)
        except ValueError:
            return None
        if kind == "append":
            ns[name] = [*(ns[name] or []), parsed]
        else:
            ns[name] = parsed
    return ns


def _argparse_size(text: str) -> int:
    import argparse

    try:
        return parse_size(text)
    except SettingsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m pybridge [serve|doctor]",
        description="The ZarrBridge sidecar. Every option can also be set in the "
                    "environment (PYBRIDGE_<OPTION>); the command line wins.",
    )
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes in the pool (default: the number of CPUs)")
    p.add_argument("--max-frame-bytes", type=_argparse_size, metavar="BYTES",
                   help="largest frame accepted (default 64MiB)")
    p.add_argument("--stream-frame-bytes", type=_argparse_size, metavar="BYTES",
                   help="size of the pieces large payloads are cut into (default 256KiB)")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="requests accepted and not yet answered (default 10000)")
    p.add_argument("--max-request-bytes", type=_argparse_size, metavar="BYTES",
                   help="most bytes one request may read, write or upload (default 16GiB)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow codecs that can run code on decode (pickle)")
    p.add_argument("--allowed-root", action="append", metavar="DIR",
                   help="a directory stores may live under (repeatable)")
    p.add_argument("--allowed-url", action="append", metavar="URL",
                   help="an object-store prefix remote stores may live under (repeatable)")
    p.add_argument("--handoff-threshold", type=_argparse_size, metavar="BYTES",
                   help="smallest result sent by shared-memory handoff (default 4MiB)")
    p.add_argument("--stdio", action="store_true",
                   help="use fds 0 and 1 for the channel instead of 3 and 4")
    return p

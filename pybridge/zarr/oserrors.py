"""OSErrors from store I/O as ``store_error`` replies that say what failed, where and why.

zarr-python and the standard library raise plain :class:`OSError` for a
full disk, a read-only file system or a permission problem, sometimes with
no file name (a ``write`` that hits ENOSPC) and sometimes with a bare entry
name (``shutil.rmtree`` reports ``'9'`` for ``<array>/9``). :func:`store_io`
turns them into :class:`~pybridge.errors.StoreError` whose message names the
operation, the reason in plain words and the full path, with the details
``path`` (that full path), ``node``, ``operation`` and ``errno`` (e.g.
``"ENOSPC"``). Every such failure is ``store_error``, whatever the errno:
a client tells them apart by ``details.errno``.

:func:`undo_new_dirs` removes the directories a failed create made, and
only those.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator

from pybridge.errors import BridgeError, StoreError
from pybridge.zarr.store import StoreRef

__all__ = ["failed_path", "file_error", "reason", "store_error", "store_io", "undo_new_dirs"]

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (permission denied)",
}
#: Entries looked at when searching a store for a bare name.
_SEARCH_LIMIT = 100_000


def reason(e: OSError) -> str:
    """Why ``e`` happened, in lower-case words."""
    if e.errno in _REASONS:
        return _REASONS[e.errno]
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


#: zarr-python's LocalStore writes ``<dir>/<name>`` through ``<dir>/<stem>.<uuid hex>.partial``
#: (``Path.with_suffix``: ``zarr.json`` becomes ``zarr.<hex>.partial``).
_PARTIAL = re.compile(r"^(?P<stem>.+)\.[0-9a-f]{32}\.partial$")


def failed_path(e: OSError, ref: StoreRef) -> str:
    """The full path of the file ``e`` is about (the node's own when it names none)."""
    if e.filename is None:
        return ref.root if ref.kind == "zip" else ref.dir
    name = os.fsdecode(e.filename)
    if ref.kind != "filesystem":
        return name
    if not os.path.isabs(name):
        name = _locate(ref.dir, name)
    return _unpartial(name)


def _unpartial(path: str) -> str:
    """The file a zarr-python temporary file stands for; other paths as they are."""
    d, base = os.path.split(path)
    m = _PARTIAL.match(base)
    if m is None:
        return path
    stem = m.group("stem")
    if stem == "zarr":
        return os.path.join(d, "zarr.json")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        names = []
    for candidate in names:
        if candidate == stem or candidate.startswith(stem + "."):
            return os.path.join(d, candidate)
    return os.path.join(d, stem)


def _locate(base: str, name: str) -> str:
    """``name`` (relative, maybe only an entry's name) as a path under ``base``.

    ``shutil.rmtree`` works with directory fds and reports the bare name of
    the entry it failed on, depth first: so the first entry found depth
    first (children before their directory) with that name is the one.
    """
    direct = os.path.join(base, name)
    if os.path.lexists(direct) or os.sep in name:
        return direct
    budget = [_SEARCH_LIMIT]

    def search(d: str) -> str | None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return None
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                return None
            if entry.is_dir(follow_symlinks=False):
                found = search(entry.path)
                if found is not None:
                    return found
            if entry.name == name:
                return entry.path
        return None

    return search(base) or direct


def _errno_name(e: OSError) -> str | None:
    return errno.errorcode.get(e.errno) if e.errno else None


def file_error(e: OSError, operation: str, path: str) -> StoreError:
    """A StoreError for ``e``, raised while trying to ``operation`` the file ``path``
    (e.g. "write chunk", "/data/a/c/0")."""
    return StoreError(f"cannot {operation} {path!r}: {reason(e)}", path=path,
                      operation=operation, errno=_errno_name(e))


def store_error(e: OSError, operation: str, ref: StoreRef) -> StoreError:
    """A StoreError for ``e``, raised while trying to ``operation`` (e.g. "write to the
    array at path 'a' of store '/data'")."""
    path = failed_path(e, ref)
    return StoreError(f"cannot {operation}: {reason(e)}: {path!r}", path=path, node=ref.path,
                      operation=operation, errno=_errno_name(e))


@contextlib.contextmanager
def store_io(operation: str, ref: StoreRef) -> Iterator[None]:
    """Turn an OSError raised inside (one that is not a BridgeError) into :func:`store_error`."""
    try:
        yield
    except BridgeError:
        raise
    except OSError as e:
        raise store_error(e, operation, ref) from e


def _new_dirs(ref: StoreRef) -> list[str]:
    """The directories down to the node's that do not exist yet: the store
    root's missing parents, the root, then the node's parents and its own."""
    chain = [ref.root]
    parent = os.path.dirname(ref.root)
    while parent != chain[0] and not os.path.lexists(parent):
        chain.insert(0, parent)
        parent = os.path.dirname(parent)
    for part in ref.path.split("/") if ref.path else []:
        chain.append(os.path.join(chain[-1], part))
    return [d for d in chain if not os.path.lexists(d)]


@contextlib.contextmanager
def undo_new_dirs(ref: StoreRef) -> Iterator[None]:
    """On failure inside, remove the directories that did not exist before it.

    For a filesystem store: the node's directory, when this request made it,
    goes with what is in it; the parents made for it go only when they are
    empty. A directory that existed before is never removed.
    """
    if ref.kind != "filesystem":
        yield
        return
    new = _new_dirs(ref)
    try:
        yield
    except BaseException:
        if new:
            _settle_zarr_io()
            _remove(new)
        raise


def _settle_zarr_io(timeout: float = 2.0) -> None:
    """Wait (at most ``timeout`` seconds) for the tasks still running on
    zarr-python's I/O loop.

    zarr-python writes a node's documents with ``asyncio.gather``: when one
    write fails the others go on in their threads, and one of them may make
    the node's directory again after it was removed.
    """
    import asyncio

    from zarr.core.sync import sync

    async def settle() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    with contextlib.suppress(Exception):
        sync(settle())


def _remove(new: list[str]) -> None:
    node_dir = new[-1]
    with contextlib.suppress(OSError):
        if os.path.isdir(node_dir) and not os.path.islink(node_dir):
            shutil.rmtree(node_dir)
    for d in reversed(new[:-1]):
        with contextlib.suppress(OSError):
            os.rmdir(d)

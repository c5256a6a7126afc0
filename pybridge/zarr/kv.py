"""Key-value access to a store, the same for every kind of store.

The sidecar reads metadata documents, lists nodes and chunk keys, and moves
raw chunk bytes itself through a :class:`KV`; zarr-python gets
:attr:`KV.zarr_store`. Keys are relative to the store's root, ``/``-separated,
as in zarr-python.

Open a KV with :func:`session`, a context manager: for a zip store opened
for writing, everything written inside it becomes visible at once when the
block ends without an exception, and nothing otherwise
(:mod:`pybridge.zarr.zipstore`). Filesystem writes are atomic per file;
memory writes are plain dict assignments; a remote store's writes are one
object PUT each (old or new, never a mix), through :class:`RemoteKV`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from pybridge.errors import ReadOnly, StoreError
from pybridge.zarr.files import limits_for
from pybridge.zarr.oserrors import file_error
from pybridge.zarr.store import MemoryHolder, StoreRef, check_inside

__all__ = ["KV", "RemoteKV", "confined_local_store", "session", "with_limit"]


class KV:
    """Sync access to one store. Subclasses: filesystem, memory, zip."""

    kind = ""
    zarr_store: Any

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """The bytes of ``key`` (None: missing).

        A metadata document over :data:`~pybridge.zarr.files.MAX_METADATA_BYTES`
        is :class:`InvalidMetadata`; any other value over ``limit`` bytes is
        :class:`DecodeFailed` (a stored chunk larger than any encoding of it).
        """
        raise NotImplementedError

    def stamp(self, key: str) -> Any:
        """A cheap value that changes when ``key`` changes (None: missing)."""
        raise NotImplementedError

    def set(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def keys_under(self, prefix: str) -> list[str]:
        """Every key below the node ``prefix`` ("" = all), as full keys."""
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        """The stored size of ``key`` in bytes, without reading it (None: missing)."""
        raise NotImplementedError

    def children(self, prefix: str) -> list[str]:
        """The names one level below the node ``prefix``."""
        raise NotImplementedError

    def require_writable(self) -> None:
        """Raise :class:`ReadOnly` when the store itself takes no writes (an http store)."""


def confined_local_store(root: str, roots: tuple[str, ...], read_only: bool,
                         limit: int | None = None) -> Any:
    """zarr-python's ``LocalStore`` at ``root``, reading files as
    :mod:`pybridge.zarr.files` does (no FIFO, device or directory is read;
    metadata documents and, with ``limit``, chunks are refused above their
    size limits); with ``roots``, one that refuses to read or write a file
    that resolves outside them (a symlink inside)."""
    from pybridge.libraries import import_zarr

    import_zarr()
    return _confined_class()(root, roots, read_only=read_only, limit=limit)


def with_limit(store: Any, limit: int | None) -> Any:
    """``store`` refusing chunks over ``limit`` bytes, when it is one of the
    sidecar's own stores (a memory store is returned as it is)."""
    method = getattr(store, "with_chunk_limit", None)
    return store if method is None else method(limit)


_CONFINED: Any = None


def _confined_class() -> Any:
    global _CONFINED
    if _CONFINED is not None:
        return _CONFINED
    from zarr.storage import LocalStore

    class ConfinedLocalStore(LocalStore):
        """A LocalStore whose files must resolve inside the allowed roots
        (when there are any), read so that none can block or exhaust it."""

        def __init__(self, root: str, roots: tuple[str, ...], *, read_only: bool,
                     limit: int | None = None) -> None:
            super().__init__(root, read_only=read_only)
            self.roots = roots
            self.limit = limit

        def with_read_only(self, read_only: bool = False) -> Any:
            return type(self)(str(self.root), self.roots, read_only=read_only, limit=self.limit)

        def with_chunk_limit(self, limit: int | None) -> Any:
            return type(self)(str(self.root), self.roots, read_only=self.read_only, limit=limit)

        def _check(self, key: str) -> str:
            path = os.path.join(str(self.root), key)
            check_inside(path, self.roots)
            return path

        def _read(self, key: str, byte_range: Any) -> bytes | None:
            from pybridge.zarr.files import read_range, read_regular

            path = self._check(key)
            what, limit, oversize = limits_for(key, self.limit)
            if byte_range is None:
                return read_regular(path, what, limit, oversize)
            return read_range(path, what, byte_range)

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            from zarr.core.buffer import default_buffer_prototype

            if not self._is_open:
                await self._open()
            data = await asyncio.to_thread(self._read, key, byte_range)
            if data is None:
                return None
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
            return list(await asyncio.gather(*(self.get(key, prototype, r)
                                               for key, r in key_ranges)))

        async def set(self, key: str, value: Any) -> None:
            self._check(key)
            await super().set(key, value)

        async def set_if_not_exists(self, key: str, value: Any) -> None:
            self._check(key)
            await super().set_if_not_exists(key, value)

        async def delete(self, key: str) -> None:
            self._check(key)
            await super().delete(key)

    _CONFINED = ConfinedLocalStore
    return _CONFINED


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


class FilesystemKV(KV):
    kind = "filesystem"

    def __init__(self, ref: StoreRef, writable: bool) -> None:
        self.root = ref.root
        self.roots = ref.roots
        self.zarr_store = confined_local_store(ref.root, ref.roots, not writable)

    def _path(self, key: str) -> str:
        path = os.path.join(self.root, *key.split("/"))
        check_inside(path, self.roots)
        return path

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        from pybridge.zarr.files import read_regular

        what, limit, oversize = limits_for(key, limit)
        return read_regular(self._path(key), what, limit, oversize)

    def stamp(self, key: str) -> Any:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise file_error(e, "stat", path) from e
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def size(self, key: str) -> int | None:
        stamp = self.stamp(key)
        return None if stamp is None else int(stamp[1])

    def set(self, key: str, data: bytes) -> None:
        from pybridge.zarr.files import write_chunk_file

        write_chunk_file(self._path(key), data)

    def delete(self, key: str) -> None:
        from pybridge.zarr.files import remove_chunk_file

        remove_chunk_file(self._path(key))

    def keys_under(self, prefix: str) -> list[str]:
        base = os.path.join(self.root, *prefix.split("/")) if prefix else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                out.append(name if rel == "." else f"{rel}/{name}")
        return out

    def children(self, prefix: str) -> list[str]:
        base = os.path.join(self.root, *prefix.split("/")) if prefix else self.root
        try:
            return [e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=True)
                    or e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise file_error(e, "list", base) from e


class MemoryKV(KV):
    kind = "memory"

    def __init__(self, ref: StoreRef, writable: bool) -> None:
        holder: MemoryHolder = ref.memory
        self.dict = holder.dict
        self.zarr_store = holder.store if writable else holder.store.with_read_only(True)

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        buf = self.dict.get(key)
        return None if buf is None else buf.to_bytes()

    def stamp(self, key: str) -> Any:
        return self.get(key)

    def size(self, key: str) -> int | None:
        buf = self.dict.get(key)
        return None if buf is None else len(buf)

    def set(self, key: str, data: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.dict[key] = default_buffer_prototype().buffer.from_bytes(data)

    def delete(self, key: str) -> None:
        self.dict.pop(key, None)

    def keys_under(self, prefix: str) -> list[str]:
        if not prefix:
            return list(self.dict)
        return [k for k in list(self.dict) if k.startswith(prefix + "/")]

    def children(self, prefix: str) -> list[str]:
        from pybridge.zarr.zipstore import child_names

        return child_names(list(self.dict), prefix)


class ZipKV(KV):
    kind = "zip"

    def __init__(self, ref: StoreRef, archive: Any, zip_session: Any) -> None:
        from pybridge.zarr.zipstore import ZipArchiveStore, archive_stamp

        self.path = ref.root
        self.archive = archive
        self.session = zip_session
        self.zarr_store = ZipArchiveStore(archive, zip_session, read_only=zip_session is None)
        self._stamp = archive_stamp(ref.root)

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        return None if self.archive is None else self.archive.read(key, limit=limit)

    def stamp(self, key: str) -> Any:
        if self.session is not None:  # inside a write session: no caching
            return self.get(key)
        if self.archive is None or key not in self.archive.infos:
            return None
        info = self.archive.infos[key]
        return (self._stamp, info.CRC, info.file_size)

    def size(self, key: str) -> int | None:
        if self.archive is None or key not in self.archive.keys():  # noqa: SIM118 -- a zip reader, not a dict
            return None
        return int(self.archive.infos[key].file_size)

    def set(self, key: str, data: bytes) -> None:
        if self.session is None:
            raise StoreError("the zip store was opened for reading", path=self.path)
        self.session.write(key, data)

    def delete(self, key: str) -> None:
        if self.session is None:
            raise StoreError("the zip store was opened for reading", path=self.path)
        self.session.delete(key)

    def keys_under(self, prefix: str) -> list[str]:
        keys = self.archive.keys() if self.archive is not None else []
        if not prefix:
            return keys
        return [k for k in keys if k.startswith(prefix + "/")]

    def children(self, prefix: str) -> list[str]:
        from pybridge.zarr.zipstore import child_names

        return child_names(self.archive.keys() if self.archive is not None else [], prefix)


class RemoteKV(KV):
    """A remote store (S3, GCS, Azure, HTTP) through its zarr-python store.

    The store is :func:`pybridge.stores.open_remote_store`'s: its failures
    are already wire errors (``not_found``, ``access_denied``,
    ``no_such_bucket``, ``store_unavailable``, ``read_only``), credentials
    redacted. A key's stamp is its bytes (one GET; object stores give no
    cheaper change marker through zarr-python's store API), so a cached
    metadata entry is only used while the documents are byte-for-byte the
    same.
    """

    kind = "remote"

    def __init__(self, ref: StoreRef, writable: bool) -> None:
        handle = ref.remote
        self.spec = handle.spec
        self.location = ref.root
        store = handle.store
        self.zarr_store = store.with_read_only(True) if not writable and not store.read_only \
            else store

    def _run(self, coro: Any) -> Any:
        from zarr.core.sync import sync

        from pybridge.stores import store_errors

        with store_errors(self.spec):
            return sync(coro)

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        from zarr.core.buffer import default_buffer_prototype

        buf = self._run(self.zarr_store.get(key, default_buffer_prototype()))
        if buf is None:
            return None
        data: bytes = buf.to_bytes()
        what, limit, oversize = limits_for(key, limit)
        if limit is not None and len(data) > limit:
            raise oversize(f"the {what} {self.location}/{key} is {len(data)} bytes, "
                           f"over the limit of {limit}", key=key, limit=limit)
        return data

    def stamp(self, key: str) -> Any:
        return self.get(key)

    def size(self, key: str) -> int | None:
        from pybridge.errors import NotFound

        try:
            return int(self._run(self.zarr_store.getsize(key)))
        except NotFound:
            return None

    def set(self, key: str, data: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self._run(self.zarr_store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def delete(self, key: str) -> None:
        self._run(self.zarr_store.delete(key))

    def require_writable(self) -> None:
        if self.spec.read_only:
            raise ReadOnly(f"the store {self.location} is read-only", url=self.location)

    def _collect(self, items: Callable[[], Any]) -> list[str]:
        async def collect() -> list[str]:
            return [item async for item in items()]

        out: list[str] = self._run(collect())
        return out

    def keys_under(self, prefix: str) -> list[str]:
        if not prefix:
            return self._collect(lambda: self.zarr_store.list())
        return self._collect(lambda: self.zarr_store.list_prefix(prefix + "/"))

    def children(self, prefix: str) -> list[str]:
        return sorted(set(self._collect(lambda: self.zarr_store.list_dir(prefix))))


@contextlib.contextmanager
def _bucket_checked(ref: StoreRef) -> Iterator[None]:
    """A ``not_found`` inside is ``no_such_bucket`` when the bucket itself is
    missing (object stores answer a read in a missing bucket as a missing
    key). Checked only then, with one listing: any other answer to it keeps
    the ``not_found``."""
    from pybridge.errors import NoSuchBucket, NotFound

    try:
        yield
    except NotFound:
        spec = ref.remote.spec
        if spec.kind in ("s3", "gcs", "azure"):
            from pybridge.stores import probe

            try:
                probe(ref.remote.store, spec)
            except NoSuchBucket:
                raise
            except Exception:  # noqa: BLE001 - the first error is the answer
                pass
        raise


@contextlib.contextmanager
def session(ref: StoreRef, writable: bool = False) -> Iterator[KV]:
    """A :class:`KV` for ``ref``'s store; writes to a zip store commit at the end."""
    if ref.kind == "filesystem":
        yield FilesystemKV(ref, writable)
        return
    if ref.kind == "memory":
        yield MemoryKV(ref, writable)
        return
    if ref.kind == "remote":
        with _bucket_checked(ref):
            yield RemoteKV(ref, writable)
        return
    from pybridge.zarr.zipstore import ZipSession, open_reader, session_lock

    if not writable:
        yield ZipKV(ref, open_reader(ref.root), None)
        return
    with session_lock(ref.root):
        zs = ZipSession(ref.root)
        try:
            yield ZipKV(ref, zs.archive, zs)
        except BaseException:
            zs.abort()
            raise
        zs.commit()

"""numcodecs' blosc with a thread lock instead of a multiprocessing one, in any process.

The sidecar installs the hook at start-up (:func:`install_blosc_hook`); each
worker applies the lock when it starts (:func:`pybridge.pool.pool.quiet_blosc`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Any

__all__ = ["blosc_thread_lock", "install_blosc_hook"]


def blosc_thread_lock(blosc: Any) -> None:
    """Give numcodecs' blosc module a thread lock instead of a multiprocessing one.

    numcodecs creates a ``multiprocessing.Lock`` (a named POSIX semaphore,
    registered with the resource tracker) the first time a process uses
    blosc. A process ended by a signal (every shutdown terminates the
    workers, a crash kills them) never unregisters it, and the resource
    tracker then warns about "leaked semaphore objects" and unlinks it. The
    lock only guards blosc's global context against other threads of the
    same process (each process has its own context), so a
    ``threading.Lock`` does the same job without a semaphore.
    """
    if not getattr(blosc, "_MUTEX_IS_INIT", True):
        blosc._MUTEX = threading.Lock()
        blosc._MUTEX_IS_INIT = True


class _BloscHook(importlib.abc.MetaPathFinder):
    """Runs :func:`blosc_thread_lock` on ``numcodecs.blosc`` as it is imported.

    The import runs in whichever thread needs blosc first, under the import
    system's own lock, so nothing else imports numcodecs in the background
    (two threads importing numcodecs at once can see it half initialized).
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "numcodecs.blosc":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader: Any = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            blosc_thread_lock(module)

        loader.exec_module = exec_module
        return spec


def install_blosc_hook() -> None:
    """Make blosc use a thread lock in this process, now or when it is imported."""
    blosc = sys.modules.get("numcodecs.blosc")
    if blosc is not None:
        blosc_thread_lock(blosc)
    elif not any(isinstance(f, _BloscHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _BloscHook())

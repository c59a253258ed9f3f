"""One process at a time compiles into numba's on-disk cache.

librosa's kernels and ours (``chorus.scoring.winograd``) are compiled by numba with
``cache=True``: the machine code is written beside the sources (or in ``NUMBA_CACHE_DIR``)
and read by every later process. Two processes writing one function's cache at once can
leave an index entry pointing at the other's machine code, and every later process that
loads it crashes with a segmentation fault and no message (seen after ``make demo``
started its validators and miners together). Models load, and their kernels compile,
inside ``compile_lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
_held = threading.local()  # how deep this thread is inside compile_lock
_threads = threading.Lock()  # flock excludes open files, not a process's own threads


def lock_path() -> Path:
    """Beside the cache every process of this installation shares (``NUMBA_CACHE_DIR``,
    else the site-packages its kernels are cached in), or in the temporary folder when
    that cannot be written."""
    for folder in (os.environ.get("NUMBA_CACHE_DIR"), sysconfig.get_paths()["purelib"]):
        if folder and os.access(folder, os.W_OK):
            return Path(folder) / ".chorus-numba-cache.lock"
    return Path(tempfile.gettempdir()) / f"chorus-numba-cache-{os.getuid()}.lock"


@contextlib.contextmanager
def compile_lock() -> Iterator[None]:
    """Hold the installation-wide lock while loading models (and compiling or caching
    their numba kernels); other processes doing the same wait. Re-entrant."""
    depth = getattr(_held, "depth", 0)
    if depth:
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
        return
    with _threads, open(lock_path(), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another chorus process to finish loading its models")
            fcntl.flock(handle, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            fcntl.flock(handle, fcntl.LOCK_UN)

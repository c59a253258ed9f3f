"""One process at a time compiles into numba's on-disk cache.

librosa's kernels and ours (``chorus.scoring.winograd``) are compiled by numba with
``cache=True``: the machine code is written beside the sources (or in ``NUMBA_CACHE_DIR``)
and read by every later process. Two processes writing one function's cache at once can
leave an index entry pointing at the other's machine code, and every later process that
loads it crashes with a segmentation fault and no message (seen after ``make demo``
started its validators and miners together). Models load, and their kernels compile,
inside ``compile_lock``.

librosa imports its submodules lazily, and several compile kernels into the cache when
first imported (``guvectorize`` with signatures: peak picking, zero crossings, phase
vocoding), which a miner did in its first generation, outside any lock. So the lock
imports them all (``KERNEL_MODULES``) the first time a process takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
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
_imported = threading.Event()  # KERNEL_MODULES are imported in this process
# librosa 0.11's modules that define numba kernels; importing one compiles those it
# declares with signatures (or loads them from the cache).
KERNEL_MODULES = (
    "librosa.core.audio",
    "librosa.core.constantq",
    "librosa.core.convert",
    "librosa.core.notation",
    "librosa.core.pitch",
    "librosa.core.spectrum",
    "librosa.beat",
    "librosa.feature.utils",
    "librosa.filters",
    "librosa.sequence",
    "librosa.util.matching",
    "librosa.util.utils",
)


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
            if not _imported.is_set():
                for name in KERNEL_MODULES:
                    importlib.import_module(name)
                _imported.set()
            yield
        finally:
            _held.depth = 0
            fcntl.flock(handle, fcntl.LOCK_UN)

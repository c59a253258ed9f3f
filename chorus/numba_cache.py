"""One process at a time compiles into numba's on-disk cache.

librosa's kernels and ours (``chorus.scoring.winograd``) are compiled by numba with
``cache=True``: the machine code is written beside the sources and read by every later
process. Two processes writing one function's cache at once can leave an index entry
pointing at the other's machine code, and every later process that loads it crashes with
a segmentation fault and no message (seen after ``make demo`` started its validators and
miners together). Models load, and their kernels compile, inside ``compile_lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def lock_path() -> Path:
    """One lock per user: processes of one user share a site-packages cache."""
    return Path(tempfile.gettempdir()) / f"chorus-numba-cache-{os.getuid()}.lock"


@contextlib.contextmanager
def compile_lock() -> Iterator[None]:
    """Hold the machine-wide lock for this user while loading models (and compiling or
    caching their numba kernels); other processes doing the same wait."""
    with open(lock_path(), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

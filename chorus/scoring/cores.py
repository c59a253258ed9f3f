"""One slot per CPU core for the scorers' model calls, shared by the whole process.

Whisper and DNSMOS run side by side on every answer. Run blindly, Whisper's threads and
DNSMOS's workers outnumbered the cores, and the time-slicing made a 30 s evaluation slower
(1.33 s) than giving each model one core (1.13 s). With slots, each model call takes a core
while it runs, so DNSMOS works on one core while Whisper decodes and on both once Whisper is
done, and answers scored concurrently share the cores instead of fighting over them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CORES = threading.BoundedSemaphore(os.cpu_count() or 1)


def single_threaded_scoring() -> None:
    """Run BLAS, and torch if it is loaded, on one thread each in this (scoring) process:
    parallelism comes from model calls side by side, one per core. Their own second threads
    on top of that made voice-cloning scoring slower (30 s: 1.36 s against 1.25 s). Scorers
    call this when they load; miners never do, so generation keeps every thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def on_a_core(fn: Callable[[], T]) -> T:
    """``fn()``, once a core is free."""
    with CORES:
        return fn()

"""One slot per CPU core for the scorers' model calls, shared by the whole process.

Whisper and DNSMOS run side by side on every answer. Run blindly, Whisper's threads and
DNSMOS's workers outnumbered the cores, and the time-slicing made a 30 s evaluation slower
(1.33 s) than giving each model one core (1.13 s). With slots, each model call takes a core
while it runs, so DNSMOS works on one core while Whisper decodes and on both once Whisper is
done, and answers scored concurrently share the cores instead of fighting over them. A call
that scales (Whisper's encoder) may take the spare cores too, when nothing else wants them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
SLOTS = os.cpu_count() or 1
CORES = threading.BoundedSemaphore(SLOTS)


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


@contextmanager
def spare_cores() -> Iterator[bool]:
    """For a call already on a core: take every other core too, if all are free right now;
    yields whether it got them. It never waits: two calls that each held a core and waited
    for the other's would wait forever."""
    taken = 0
    while taken < SLOTS - 1 and CORES.acquire(blocking=False):
        taken += 1
    try:
        yield SLOTS > 1 and taken == SLOTS - 1
    finally:
        for _ in range(taken):
            CORES.release()

"""Where the scorers' model calls run: one slot per CPU core, and a few threads for the work
that runs beside Whisper. One ``ScoringRuntime`` is shared by every evaluator of a process.

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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class ScoringRuntime:
    """Core slots and the beside-Whisper threads. Making one changes nothing outside it;
    ``limit_threads`` is the one process-wide step, and its caller's to take."""

    def __init__(self, cores: int | None = None, beside_threads: int = 2):
        self.cores = cores or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(self.cores)
        self._beside = ThreadPoolExecutor(beside_threads, thread_name_prefix="beside-whisper")

    @staticmethod
    def limit_threads() -> None:
        """Run BLAS, and torch if it is loaded, on one thread each in this (scoring) process:
        parallelism comes from model calls side by side, one per core. Their own second
        threads on top of that made voice-cloning scoring slower (30 s: 1.36 s against
        1.25 s). Whoever runs evaluators calls this once they are loaded: it only limits
        the libraries loaded by then (DNSMOS loads numba's BLAS, the speaker encoder torch).
        Miners never call it, so generation keeps every thread."""
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)

    def on_a_core(self, fn: Callable[[], T]) -> T:
        """``fn()``, once a core is free."""
        with self._slots:
            return fn()

    @contextmanager
    def spare_cores(self) -> Iterator[bool]:
        """For a call already on a core: take every other core too if all are free right now,
        else none; yields whether it got them. It never waits: two calls that each held a
        core and waited for the other's would wait forever."""
        taken = 0
        while taken < self.cores - 1 and self._slots.acquire(blocking=False):
            taken += 1
        if taken < self.cores - 1:  # some are busy: keep none, others may want the free ones
            for _ in range(taken):
                self._slots.release()
            taken = 0
        try:
            yield taken > 0
        finally:
            for _ in range(taken):
                self._slots.release()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(*args)`` on a beside-Whisper thread (it takes a core itself where it
        runs a model: these threads only wait for one)."""
        return self._beside.submit(fn, *args)

    def close(self) -> None:
        self._beside.shutdown(wait=True)


def shared_runtime(runtime: ScoringRuntime | None, *parts: Any) -> ScoringRuntime:
    """The runtime of an evaluator built on ``parts`` (its models, each given or None):
    ``runtime``, else the parts', else a new one. Parts on another runtime would not share
    its cores, which is what the slots are for."""
    given = [p.runtime for p in parts if p is not None]
    chosen = runtime or (given[0] if given else ScoringRuntime())
    if any(r is not chosen for r in given):
        raise ValueError("an evaluator's models must share its ScoringRuntime")
    return chosen

"""Model calls in a scoring process never run more at once than there are cores."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from chorus.scoring.cores import CORES, SLOTS, on_a_core, spare_cores


def test_no_more_model_calls_at_once_than_cores() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def model_call() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return 1

    cores = os.cpu_count() or 1
    with ThreadPoolExecutor(cores * 3) as pool:
        done = sum(pool.map(lambda _: on_a_core(model_call), range(cores * 6)))
    assert done == cores * 6
    assert peak == cores  # every core used, none shared


def test_spare_cores_are_taken_only_when_all_are_free_and_never_waited_for() -> None:
    """A call on a core may widen to every core when nothing else holds one; when another
    call holds one it goes on at once with its own (two calls waiting on each other's core
    would never finish), and what it took is given back either way."""
    held, release = threading.Event(), threading.Event()

    def other_call() -> None:
        held.set()
        release.wait(5)

    def spare_now() -> bool:
        with spare_cores() as spare:
            if spare:  # every other slot is taken now: nobody else gets one
                assert not CORES.acquire(blocking=False)
            return spare

    assert on_a_core(spare_now) is (SLOTS > 1)
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(on_a_core, other_call)
        held.wait(5)
        start = time.perf_counter()
        assert on_a_core(spare_now) is False
        assert time.perf_counter() - start < 1  # went on without waiting
        release.set()
        job.result()
    assert on_a_core(spare_now) is (SLOTS > 1)  # all slots were given back

"""A scoring runtime never runs more model calls at once than it has cores."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chorus.scoring.runtime import ScoringRuntime


@pytest.mark.parametrize("cores", [1, 3])
def test_no_more_model_calls_at_once_than_cores(cores: int) -> None:
    runtime = ScoringRuntime(cores)
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

    with ThreadPoolExecutor(cores * 3) as pool:
        done = sum(pool.map(lambda _: runtime.on_a_core(model_call), range(cores * 6)))
    assert done == cores * 6
    assert peak == cores  # every core used, none shared


@pytest.mark.parametrize("cores", [2, 4])
def test_spare_cores_are_taken_only_when_all_are_free_and_never_waited_for(cores: int) -> None:
    """A call on a core may widen to every core when nothing else holds one; when another
    call holds one it goes on at once with its own (two calls waiting on each other's core
    would never finish), and what it took is given back either way."""
    runtime = ScoringRuntime(cores)
    held, release = threading.Event(), threading.Event()

    def other_call() -> None:
        held.set()
        release.wait(5)

    def spare_now() -> bool:
        with runtime.spare_cores() as spare:
            if spare:  # every other slot is taken now: nobody else gets one
                assert free_slots(runtime) == 0
            else:  # took none: only this call's core and the other call's are held
                assert free_slots(runtime) == cores - 2
            return spare

    assert runtime.on_a_core(spare_now) is True
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(runtime.on_a_core, other_call)
        held.wait(5)
        start = time.perf_counter()
        assert runtime.on_a_core(spare_now) is False
        assert time.perf_counter() - start < 1  # went on without waiting
        release.set()
        job.result()
    held.clear()
    assert free_slots(runtime) == cores  # all slots were given back
    assert runtime.on_a_core(spare_now) is True


def test_one_core_has_none_to_spare() -> None:
    runtime = ScoringRuntime(1)

    def widen() -> bool:
        with runtime.spare_cores() as spare:
            return spare

    assert runtime.on_a_core(widen) is False
    assert free_slots(runtime) == 1


def free_slots(runtime: ScoringRuntime) -> int:
    """How many core slots nobody holds right now."""
    taken = 0
    while runtime._slots.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        runtime._slots.release()
    return taken


def test_runtimes_do_not_share_cores() -> None:
    """A runtime is one object, not process state: another one's busy cores are not its."""
    busy, free = ScoringRuntime(2), ScoringRuntime(2)

    def widen() -> bool:
        with free.spare_cores() as spare:
            return spare

    with busy._slots, busy._slots:
        assert free_slots(busy) == 0
        assert free.on_a_core(lambda: free_slots(free)) == 1
        assert free.on_a_core(widen) is True


def test_beside_work_runs_on_the_runtime_threads() -> None:
    runtime = ScoringRuntime(1)
    try:
        name = runtime.submit(lambda: threading.current_thread().name).result(5)
        assert name.startswith("beside-whisper")
    finally:
        runtime.close()

"""Model calls in a scoring process never run more at once than there are cores."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from chorus.scoring.cores import on_a_core


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

"""A real miner process under 50 concurrent signed requests: bounded queue, bounded memory."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chorus.load import MinerProcess, hammer, rss_mb


@pytest.mark.slow
def test_miner_survives_bursts_with_429_beyond_its_queue(tmp_path):
    with MinerProcess(tmp_path, max_queue=8) as miner:
        first = asyncio.run(hammer(miner.url, miner.hotkey, miner.validator, 50, 50))
        after_first = rss_mb(miner.proc.pid)
        second = asyncio.run(hammer(miner.url, miner.hotkey, miner.validator, 50, 50))
        after_second = rss_mb(miner.proc.pid)
        assert httpx.get(miner.url + "/health").json()["ok"]
        served = httpx.get(miner.url + "/health").json()["served"]
    for report in (first, second):
        assert set(report.statuses) <= {"200", "429"}, report.statuses
        assert report.statuses.get("200", 0) >= 8 and report.statuses.get("429", 0) >= 1
        assert report.rejected_p50_s is not None and report.rejected_p50_s < 5.0
    assert served == first.statuses["200"] + second.statuses["200"]
    # The second burst must not grow the miner: nothing piles up between bursts.
    assert after_second - after_first < 50, (after_first, after_second)


def test_a_flood_pins_the_miner_and_gives_this_process_its_cpus_back():
    """The load bench pins the miner to one CPU and itself to the others for a flood; it
    must not stay pinned for whatever the bench measures next."""
    import os
    import subprocess
    import sys

    from chorus.load import split_cpus

    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("one CPU: nothing to split")
    miner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with split_cpus(miner.pid) as (miner_cpus, clients):
            assert os.sched_getaffinity(miner.pid) == miner_cpus
            assert os.sched_getaffinity(0) == clients and not clients & miner_cpus
        assert os.sched_getaffinity(0) == before
        with split_cpus(None) as placement:
            assert placement is None and os.sched_getaffinity(0) == before
    finally:
        miner.kill()
        miner.wait()

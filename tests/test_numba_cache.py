"""Processes load models (and write numba's on-disk cache) one at a time: two writing one
function's cache at once left an index pointing at the other's machine code, and every
later validator crashed with a segmentation fault."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chorus.numba_cache import compile_lock, lock_path

HOLDER = """
import pathlib, sys, time
from chorus.numba_cache import compile_lock, lock_path
folder = pathlib.Path(sys.argv[1])
with compile_lock():
    (folder / "held").touch()
    while not (folder / "release").exists():
        time.sleep(0.02)
"""

KERNELS = """
import pathlib, sys
from chorus.numba_cache import compile_lock
cache = pathlib.Path(sys.argv[1])
def written():
    return sorted(p.name for p in cache.rglob("*.nbi"))
with compile_lock():
    pass
after_lock = written()
import librosa, numpy as np
# What a miner's first generation imported: onsets and peak picking, zero crossings,
# magnitudes and phases.
y = np.sin(np.arange(22050) / 7.0).astype(np.float32)
librosa.onset.onset_detect(y=y, sr=22050)
librosa.zero_crossings(y)
librosa.magphase(librosa.stft(y))
print(len(after_lock), after_lock == written())
"""


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A fresh numba cache, filled by a process that took the lock and then ran what a
    miner's first generation runs; later tests load their kernels from it instead of
    compiling them again (half a minute each)."""
    cache = tmp_path_factory.mktemp("numba-cache")
    done = subprocess.run(
        [sys.executable, "-c", KERNELS, str(cache)],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return cache, done


def _wait_for(path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_second_process_waits_for_the_first_to_finish_loading(kernel_cache, monkeypatch) -> None:
    # A cache (and so a lock) of their own: a real load elsewhere neither waits nor delays.
    tmp_path = kernel_cache[0]
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert lock_path().parent == tmp_path
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)])
    try:
        _wait_for(tmp_path / "held")
        acquired = threading.Event()

        def load() -> None:
            with compile_lock():
                acquired.set()

        waiter = threading.Thread(target=load, daemon=True)
        waiter.start()
        assert not acquired.wait(1.0), "the lock was taken while another process held it"
        (tmp_path / "release").touch()
        assert acquired.wait(30.0), "the lock was never handed over"
        waiter.join(5)
    finally:
        (tmp_path / "release").touch()
        holder.wait(30)
    assert holder.returncode == 0


def test_a_load_inside_a_load_does_not_wait_for_itself(tmp_path, monkeypatch) -> None:
    """A service whose loading loads another (a plug-in's backend calling
    ``load_evaluators``) takes the lock it already holds."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    done = threading.Event()

    def nested() -> None:
        with compile_lock(), compile_lock():
            done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(10.0), "a nested load waited for its own lock"


def test_librosa_kernels_compile_inside_the_lock(kernel_cache) -> None:
    """librosa compiles kernels when its submodules are first imported, lazily: a miner
    did so in its first generation, outside the lock, while the demo's other processes
    might be writing the same cache."""
    done = kernel_cache[1]
    assert done.returncode == 0, done.stderr
    count, unchanged = done.stdout.split()
    assert int(count) >= 7, done.stdout  # peak picking, zero crossings, phases ...
    assert unchanged == "True", "librosa compiled kernels after the lock was released"

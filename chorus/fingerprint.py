"""Audio fingerprints, to catch miners that copy each other or replay old answers.

Honest generation is stochastic (Piper samples noise per call), so two honest answers to
the same prompt differ sample by sample. A copy, a re-encode or a replay of an earlier
answer does not: after resampling to a common rate and normalising, its waveform
correlates almost perfectly with the original.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from chorus.audio import resample

RATE = 8000
COPY_THRESHOLD = 0.95


def fingerprint(samples: np.ndarray, rate: int) -> np.ndarray:
    """A zero-mean, unit-norm 8 kHz version of the waveform."""
    x = resample(samples, rate, RATE).astype(np.float64)
    x -= x.mean() if x.size else 0.0
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Waveform correlation of two fingerprints; 0 when their lengths differ by over 2%."""
    if a.size == 0 or b.size == 0 or abs(a.size - b.size) > 0.02 * max(a.size, b.size):
        return 0.0
    n = min(a.size, b.size)
    return float(np.dot(a[:n], b[:n]))


class ReplayMemory:
    """Fingerprints of recent answers, to spot one served again for a new prompt."""

    def __init__(self, size: int = 256):
        self.recent: deque[tuple[int, np.ndarray]] = deque(maxlen=size)

    def seen(self, fp: np.ndarray) -> int | None:
        """The round of an earlier answer this one copies, if any."""
        for round_no, old in self.recent:
            if similarity(fp, old) > COPY_THRESHOLD:
                return round_no
        return None

    def remember(self, round_no: int, fp: np.ndarray) -> None:
        self.recent.append((round_no, fp))

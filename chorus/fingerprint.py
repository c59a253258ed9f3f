"""Audio fingerprints, to catch miners that copy each other or replay old answers.

The method is a landmark ("constellation") hash, as in Shazam-style audio identification:

1. Resample to 4 kHz mono and take a log-power spectrogram (64 ms Hann window, 8 ms hop,
   62 Hz - 2 kHz: 15.6 Hz bins). Above 2 kHz the peaks are mostly cymbals, hi-hats and
   hiss, which honest music shares and added noise destroys.
2. Keep the spectral peaks that are the loudest point of their 136 ms x 484 Hz neighbourhood,
   stand 8 dB above the mean of the ±15 bins around them, and are within 30 dB of the
   loudest frame of the surrounding second. All three tests are relative, so gain does not
   move them; white noise seldom makes a peak that beats a harmonic of speech or music.
3. Pair every peak with the next 16 peaks within 640 ms and ±984 Hz: a landmark is
   (frequency, frequency step, time step), 21 bits, kept with the anchor's frame.

A near-copy shares many landmarks *at one constant time offset*; two independent
renditions share few. The score is the number of a probe's landmarks found in a stored
fingerprint at the best single offset (exactly that offset: a copy keeps its timing, while
two honest renditions of one drum groove differ by a few milliseconds per note), divided
by the smaller landmark count. A copy's offset may fall between two frames, so a probe
that is not plainly unrelated at first (``GREY``) is looked at again with its frames moved
by a quarter, a half and three quarters of a hop. A pair is a near-copy when the score
reaches ``THRESHOLD`` with at least ``MIN_VOTES`` landmarks and the shared part covers
half of a clip (within a round, of either clip; for a replay, of the new answer: an honest
deterministic backend may rightly repeat one sentence of an old answer inside a new one).

Measured on the project's own audio (Piper, Festival, the symbolic composer; numbers and
the clips in docs/security.md, the cases in ``tests/test_novelty.py``): 16-bit WAV/FLAC,
MP3 at about 80 kbit/s, 8-bit mu-law (also at 8 kHz) and a 4 kHz low-pass keep 0.7 or
more of the landmarks; resampling and -12 dB keep all; +12 dB (clipped) keeps 0.24 or
more; trimming 20 % or shifting keeps 0.68 or more; noise at 15 dB SNR keeps 0.31 or more
(music is the hard case, speech keeps 0.7). Two honest answers to one prompt share at most
0.035 (two Piper seeds) or 0.098 (two composer seeds, whose drum grooves for a style are
the same); ``THRESHOLD`` sits between. Speed or pitch changes are not caught.

Matching scales through an inverted index: landmarks sorted by hash in O(log n) runs,
searched with ``np.searchsorted``; a probe's cost grows with its own landmark count and
the postings it hits, not with the number of fingerprints stored (about 3-5 ms against
4,096 stored answers; a fingerprint about 1-1.6 ms per second of audio, on 2 busy cores).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.fft
from scipy.ndimage import maximum_filter1d

from chorus.audio import resample, to_mono_float

VERSION = 1  # bump when landmarks change; stored fingerprints of other versions are ignored

RATE = 4000
NFFT = 256
HOP = 32  # 8 ms
LO_BIN, HI_BIN = 4, 128  # 62.5 Hz - 2 kHz
PEAK_FRAMES, PEAK_BINS = 17, 31  # a peak is the maximum of this neighbourhood
PROMINENCE_DB, PROMINENCE_BINS = 8.0, 31  # ... and stands this far above its surroundings
LOUDNESS_FRAMES, RANGE_DB = 127, 30.0  # ... within this range of the second's loudest frame
FANOUT = 16  # pairs tried per anchor peak
MAX_DT, MAX_DF = 80, 63  # target zone: 640 ms, ±984 Hz
SEGMENT_FRAMES = 62  # ~0.5 s: the unit of coverage
SHIFTS = 4  # sub-hop alignments tried for a probe (a quarter hop = 2 ms)

THRESHOLD = 0.15  # share of landmarks matched at one offset: a near-copy
GREY = 0.08  # below this at the first alignment, the other alignments are not tried
COVERAGE = 0.5  # a replay must cover at least this share of the new answer
MIN_VOTES = 8  # fewer matched landmarks than this is never evidence
REPLAY_CAPACITY = 4096  # fingerprints remembered (the oldest are dropped)

_WINDOW = np.hanning(NFFT).astype(np.float32)


@dataclass
class Fingerprint:
    """Landmark hashes and the frame of each hash's anchor peak."""

    hashes: np.ndarray  # uint32
    times: np.ndarray  # uint16 frames (8 ms)

    def __len__(self) -> int:
        return int(self.hashes.size)

    def to_bytes(self) -> tuple[bytes, bytes]:
        return self.hashes.astype("<u4").tobytes(), self.times.astype("<u2").tobytes()

    @classmethod
    def from_bytes(cls, hashes: bytes, times: bytes) -> Fingerprint:
        return cls(np.frombuffer(hashes, "<u4").copy(), np.frombuffer(times, "<u2").copy())


def _spectrogram(x: np.ndarray) -> np.ndarray:
    if x.size < NFFT:
        return np.zeros((0, HI_BIN - LO_BIN), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, NFFT)[::HOP] * _WINDOW
    spec = scipy.fft.rfft(frames, axis=1)[:, LO_BIN:HI_BIN]
    power = spec.real**2 + spec.imag**2
    return (10.0 * np.log10(power + 1e-12)).astype(np.float32)


def _peaks(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = maximum_filter1d(s, PEAK_BINS, axis=1, mode="nearest")
    top = maximum_filter1d(top, PEAK_FRAMES, axis=0, mode="nearest")
    t, f = np.nonzero((s == top) & (s > -100.0))  # by time, then frequency; not silence
    level = s[t, f]
    loud = maximum_filter1d(s.max(axis=1), LOUDNESS_FRAMES, mode="nearest")[t]
    # the mean level of the PROMINENCE_BINS bins around each candidate (edges repeated)
    half = PROMINENCE_BINS // 2
    cols = np.clip(f[:, None] + np.arange(-half, half + 1), 0, s.shape[1] - 1)
    around = s[t[:, None], cols].mean(axis=1)
    keep = (level > loud - RANGE_DB) & (level > around + PROMINENCE_DB)
    return t[keep], f[keep]


def _landmarks(t: np.ndarray, f: np.ndarray) -> Fingerprint:
    hashes, times = [], []
    for k in range(1, min(FANOUT, t.size - 1) + 1):
        dt, df = t[k:] - t[:-k], f[k:] - f[:-k]
        ok = (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
        hashes.append((f[:-k][ok] << 14) | ((df[ok] + 64) << 7) | dt[ok])
        times.append(t[:-k][ok])
    if not hashes:
        return Fingerprint(np.zeros(0, np.uint32), np.zeros(0, np.uint16))
    h, tt = np.concatenate(hashes).astype(np.uint32), np.concatenate(times)
    return Fingerprint(h, np.minimum(tt, 65535).astype(np.uint16))


def _prepare(samples: np.ndarray, rate: int) -> np.ndarray:
    x = np.nan_to_num(to_mono_float(samples), nan=0.0, posinf=0.0, neginf=0.0)
    return resample(x, rate, RATE)


def fingerprint(samples: np.ndarray, rate: int) -> Fingerprint:
    """The landmarks of a mono clip at any sample rate."""
    return _landmarks(*_peaks(_spectrogram(_prepare(samples, rate))))


class Probe:
    """A clip about to be checked: its fingerprint, and the same at sub-hop shifts
    (computed only when asked for)."""

    def __init__(self, samples: np.ndarray, rate: int):
        self._x = _prepare(samples, rate)
        self._shifted: dict[int, Fingerprint] = {}
        self.fingerprint = self.shifted(0)

    def shifted(self, k: int) -> Fingerprint:
        if k not in self._shifted:
            start = round(k * HOP / SHIFTS)
            self._shifted[k] = _landmarks(*_peaks(_spectrogram(self._x[start:])))
        return self._shifted[k]


@dataclass
class Match:
    """A stored fingerprint that a probe copies: how much of it, and how much of the probe
    the copied part covers."""

    key: int
    score: float  # landmarks matched at one offset / the smaller landmark count
    coverage: float  # share of the probe's half-second segments that hold a match


@dataclass
class _Run:
    hashes: np.ndarray
    keys: np.ndarray
    times: np.ndarray


@dataclass
class FingerprintIndex:
    """An inverted index of fingerprints under integer keys: add, remove, search."""

    runs: list[_Run] = field(default_factory=list)
    sizes: dict[int, int] = field(default_factory=dict)  # key -> landmark count
    dead: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.sizes)

    def __contains__(self, key: int) -> bool:
        return key in self.sizes

    def add(self, items: Iterable[tuple[int, Fingerprint]]) -> None:
        items = [(k, fp) for k, fp in items if k not in self.sizes]
        for k, fp in items:
            self.sizes[k] = len(fp)
        if not items:
            return
        run = _Run(
            np.concatenate([fp.hashes for _, fp in items]),
            np.concatenate([np.full(len(fp), k, np.int64) for k, fp in items]),
            np.concatenate([fp.times for _, fp in items]),
        )
        self.runs.append(_sort(run))
        # keep O(log n) runs: merge the newest into the one before while that is not much
        # bigger (merging two sorted runs is a linear timsort pass)
        while len(self.runs) > 1 and self.runs[-2].hashes.size <= 2 * self.runs[-1].hashes.size:
            b, a = self.runs.pop(), self.runs.pop()
            self.runs.append(_sort(_concat([a, b])))

    def remove(self, keys: Iterable[int]) -> None:
        for k in keys:
            if self.sizes.pop(k, None) is not None:
                self.dead.add(k)
        if len(self.dead) > max(64, len(self.sizes) // 4):
            self._merge()

    def _merge(self) -> None:
        run = _concat(self.runs)
        if self.dead:
            alive = ~np.isin(run.keys, np.fromiter(self.dead, np.int64))
            run = _Run(run.hashes[alive], run.keys[alive], run.times[alive])
            self.dead.clear()
        self.runs = [_sort(run)] if run.hashes.size else []

    def search(self, probe: Probe, exclude: set[int] | None = None) -> list[Match]:
        """Stored fingerprints that ``probe`` near-copies, best first."""
        best: dict[int, tuple[float, int, int, int]] = {}  # key -> score, votes, offset, shift
        for k in range(SHIFTS):
            if k and not any(s >= GREY and v >= MIN_VOTES for s, v, *_ in best.values()):
                break  # nothing that could be a copy: spare the other alignments
            fp = probe.shifted(k)
            for key, score, votes, offset in self._votes(fp, exclude):
                if key not in best or score > best[key][0]:
                    best[key] = (score, votes, offset, k)
        found = []
        for key, (score, votes, offset, k) in best.items():
            if score >= THRESHOLD and votes >= MIN_VOTES:
                coverage = self._coverage(probe.shifted(k), key, offset)
                found.append(Match(key, round(score, 3), round(coverage, 3)))
        return sorted(found, key=lambda m: -m.score)

    def _postings(self, fp: Fingerprint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each stored occurrence of one of the probe's hashes: the probe's landmark,
        the stored key, and the offset (stored frame - probe frame)."""
        qs, ks, offs = [], [], []
        for run in self.runs:
            lo = np.searchsorted(run.hashes, fp.hashes, "left")
            hi = np.searchsorted(run.hashes, fp.hashes, "right")
            count = hi - lo
            total = int(count.sum())
            if not total:
                continue
            q = np.repeat(np.arange(fp.hashes.size), count)
            pos = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(total)
            qs.append(q)
            ks.append(run.keys[pos])
            offs.append(run.times[pos].astype(np.int64) - fp.times[q].astype(np.int64))
        if not qs:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        q, keys, off = np.concatenate(qs), np.concatenate(ks), np.concatenate(offs)
        if self.dead:
            alive = ~np.isin(keys, np.fromiter(self.dead, np.int64))
            q, keys, off = q[alive], keys[alive], off[alive]
        return q, keys, off

    def _votes(
        self, fp: Fingerprint, exclude: set[int] | None, min_votes: int = MIN_VOTES
    ) -> list[tuple[int, float, int, int]]:
        """Per stored key with at least ``min_votes`` landmarks in common at one offset:
        (key, score, votes, offset) at its best offset."""
        if not len(fp) or not self.sizes:
            return []
        _, keys, off = self._postings(fp)
        if exclude:
            keep = ~np.isin(keys, np.fromiter(exclude, np.int64))
            keys, off = keys[keep], off[keep]
        pair, votes = np.unique(keys * (1 << 17) + (off + (1 << 16)), return_counts=True)
        strong = votes >= min_votes
        pair, votes = pair[strong], votes[strong]
        order = np.lexsort((-votes, pair >> 17))  # by key, most votes first
        pair, votes = pair[order], votes[order]
        first = np.r_[True, (pair[1:] >> 17) != (pair[:-1] >> 17)] if pair.size else []
        out = []
        for p, v in zip(pair[first], votes[first], strict=True):
            key, offset = int(p >> 17), int(p % (1 << 17)) - (1 << 16)
            out.append((key, v / max(1, min(len(fp), self.sizes[key])), int(v), offset))
        return out

    def _coverage(self, fp: Fingerprint, key: int, offset: int) -> float:
        q, keys, off = self._postings(fp)
        hit = fp.times[q[(keys == key) & (off == offset)]].astype(np.int64)
        segments = np.unique(fp.times.astype(np.int64) // SEGMENT_FRAMES)
        return np.unique(hit // SEGMENT_FRAMES).size / max(1, segments.size)


def _concat(runs: list[_Run]) -> _Run:
    return _Run(
        np.concatenate([r.hashes for r in runs]),
        np.concatenate([r.keys for r in runs]),
        np.concatenate([r.times for r in runs]),
    )


def _sort(run: _Run) -> _Run:
    order = np.argsort(run.hashes, kind="stable")
    return _Run(run.hashes[order], run.keys[order], run.times[order])


def similarity(probe: Probe, other: Fingerprint) -> float:
    """The share of landmarks that ``probe`` and ``other`` have at their best offset, over
    every sub-hop alignment of the probe: what ``THRESHOLD`` is compared with."""
    index = FingerprintIndex()
    index.add([(0, other)])
    scores = [index._votes(probe.shifted(k), None, 1) for k in range(SHIFTS)]
    return max((v[0][1] for v in scores if v), default=0.0)


def near_copies(probes: list[Probe]) -> list[dict[int, Match]]:
    """For each probe, the other probes it forms a near-copy pair with (by position).

    A pair counts when the shared landmarks pass ``THRESHOLD`` and the shared part covers
    most of either clip (one is, more or less, contained in the other)."""
    index = FingerprintIndex()
    index.add((i, p.fingerprint) for i, p in enumerate(probes))
    pairs: list[dict[int, Match]] = [{} for _ in probes]
    for i, probe in enumerate(probes):
        for m in index.search(probe, exclude={i}):
            if m.coverage >= COVERAGE:
                pairs[i].setdefault(m.key, m)
                pairs[m.key].setdefault(i, m)
    return pairs


def prompt_key(service: str, prompt: str) -> str:
    """A short digest naming one prompt of one service."""
    return hashlib.sha1(f"{service}\n{prompt}".encode()).hexdigest()[:16]


@dataclass
class Remembered:
    """One answer's fingerprint as the replay memory keeps it. ``id`` is given when it is
    kept (by the store, if there is one)."""

    id: int
    round: int
    uid: int
    hotkey: str
    prompt_key: str
    fingerprint: Fingerprint


class FingerprintStore(Protocol):
    """Where a replay memory persists (``ValidatorStore`` is one)."""

    def add_fingerprints(self, rows: list[Remembered], version: int, keep: int) -> list[int]: ...

    def fingerprints(self, limit: int, version: int) -> list[Remembered]: ...


@dataclass
class Replay:
    """An earlier answer that a new one near-copies."""

    earlier: Remembered
    match: Match


class ReplayMemory:
    """Fingerprints of earlier answers (every miner's), to spot one served again.

    With a ``store`` the memory is persisted there (bounded at ``capacity``, oldest
    dropped) and reloaded by the next ``ReplayMemory`` on the same store, so a restart
    does not give a replayer a clean slate."""

    def __init__(self, store: FingerprintStore | None = None, capacity: int = REPLAY_CAPACITY):
        self.store = store
        self.capacity = capacity
        self.index = FingerprintIndex()
        self.entries: dict[int, Remembered] = {}
        self._next_id = 1
        if store is not None:
            self._add(*store.fingerprints(capacity, VERSION))

    def __len__(self) -> int:
        return len(self.entries)

    def _add(self, *items: Remembered) -> None:
        for item in items:
            self.entries[item.id] = item
            self._next_id = max(self._next_id, item.id + 1)
        self.index.add((item.id, item.fingerprint) for item in items)
        if len(self.entries) > self.capacity:
            old = sorted(self.entries)[: len(self.entries) - self.capacity]
            for key in old:
                del self.entries[key]
            self.index.remove(old)

    def seen(self, probe: Probe, hotkey: str, key: str) -> Replay | None:
        """The earlier answer that ``probe`` replays, if any: a near-copy that covers most
        of the new answer. The one exception is the same miner's answer to the same
        prompt (a deterministic backend may rightly say the same thing again)."""
        for m in self.index.search(probe):
            earlier = self.entries[m.key]
            if m.coverage < COVERAGE or (earlier.hotkey == hotkey and earlier.prompt_key == key):
                continue
            return Replay(earlier, m)
        return None

    def remember(self, round_no: int, answers: list[tuple[int, str, str, Fingerprint]]) -> None:
        """Keep ``(uid, hotkey, prompt_key, fingerprint)`` of a round's answers."""
        if not answers:
            return
        rows = [Remembered(0, round_no, uid, hotkey, key, fp) for uid, hotkey, key, fp in answers]
        if self.store is not None:
            ids = self.store.add_fingerprints(rows, VERSION, self.capacity)
        else:
            ids = list(range(self._next_id, self._next_id + len(rows)))
        for row, i in zip(rows, ids, strict=True):
            row.id = i
        self._add(*rows)

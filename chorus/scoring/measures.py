"""Cheap signal measures of a spoken answer that DNSMOS and Whisper do not give: how much of
the spectrum carries speech (bandwidth), how much the voice's pitch moves (prosody), how
fast it speaks (pace) and whether its waveform is clipped flat (at any level).

Each is one pass of plain DSP over audio the scorer already has at 16 kHz (a short-time
spectrum; WORLD's DIO pitch tracker at 8 kHz), together about 50 ms of CPU for a 30 s
answer, and each maps onto a factor in [0, 1] that is exactly 1 for clean, natural speech
(Piper's and a real person's read speech), so honest answers lose nothing to them:

- bandwidth: the highest frequency where the speech frames' long-term spectrum stands
  above both a -50 dB floor under its peak and the quiet frames' level (noise does not
  count as bandwidth: it fills the quiet frames too), in the answer's narrowest stretch
  of ``BANDWIDTH_STRETCH_S`` of speech (below). Full credit for wideband speech
  (``FULL_BANDWIDTH_HZ``: ITU-T's wideband reaches 7 kHz, our edge reads a few hundred Hz
  low on steep filters), and each octave less costs ``BANDWIDTH_PER_OCTAVE``: the
  telephone band (3.4 kHz) keeps about three quarters, a 2 kHz low-pass about half.
- pitch range: the spread (10th to 90th percentile, in semitones) of F0 over the loud
  voiced frames, over the whole answer and in its flattest stretch of
  ``PITCH_STRETCH_S`` of voiced frames (below). Read speech moves over 5-12 semitones, a
  monotone vocoder under one. Full credit from ``FULL_PITCH_RANGE`` semitones over the
  whole answer and ``FULL_STRETCH_PITCH_RANGE`` in the flattest stretch, proportionally
  less below; the factor is the lower of the two.
- pace: the speech span (first to last frame within ``SPEECH_DB`` of the loud frames) over
  the duration the text needs (``chorus.prompts.expected_seconds``). Piper reads at
  0.67-0.93 of it, a person about 1.0; full credit from ``PACE_RANGE[0]`` to
  ``PACE_RANGE[1]``, falling linearly in log-ratio to zero at the duration gates' limits.
- clipped: the share of samples within ``CLIP_TOLERANCE`` of the waveform's own peak. A
  clean voice touches its peak on a handful of samples (under 0.01%); audio driven into
  the rails and scaled back down, so that the full-scale clipping gate misses it, sits
  there on 1-40%. The factor is 1 / (1 + share / ``CLIP_HALF``) beyond a free
  ``CLIP_FREE``: half at 2%, never zero, so harder clipping always costs more.

Every stretch is heard. Averaged over the whole answer, a few seconds of clean speech
hid damage to the rest: the long-term spectrum of an answer sent through an 8 kHz codec
after its first 2 s still reached 7.6 kHz (a few wideband frames keep the high bands
above the edge), and natural pitch over half an answer gave the whole a reader's spread
with the other half monotone. So bandwidth and pitch range are measured in stretches
that slide over the speech (voiced) frames, a quarter of a stretch at a time, and the
answer is judged by its worst one; an answer shorter than one stretch is one stretch.
On 40 honest answers (Piper, 3-44 s, and the WORLD cloner's) the narrowest 2 s stretch
reads 6.4-8.0 kHz and Piper's flattest stretch moves 3.8 semitones or more (a flat
cloned voice 1.1), where a monotone stretch moves 0.3-0.7 and a narrowband one reads
2.4 kHz (2 kHz low-pass) to 3.8 kHz (8 kHz codec).
Pace is left whole-answer: a time-stretch keeps the share of speech frames, so only a
syllable-rate proxy could judge it per stretch, and that is not reliable enough here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld as pw

from chorus.audio import SPEECH_RATE, resample

RATE = SPEECH_RATE  # the scorer's rate
N_FFT = 512
HOP = 256
SPEECH_DB = 35.0  # frames within this of the loud frames' level are speech
EDGE_DB = 50.0  # the bandwidth edge: this far under the long-term spectrum's peak ...
ABOVE_QUIET_DB = 10.0  # ... and this far above the quiet frames' level at that frequency
FULL_BANDWIDTH_HZ = 6500.0
BANDWIDTH_PER_OCTAVE = 0.3
BANDWIDTH_STRETCH_S = 2.0  # seconds of speech frames: a stretch must be wholly narrowband
STRETCH_STEP = 0.25  # stretches start every quarter stretch
PITCH_RATE = 8000  # F0 needs no more; DIO runs 4x faster here than at 16 kHz
PITCH_FRAME_MS = 20.0
PITCH_RANGE_HZ = (60.0, 500.0)
LOUD_PITCH_DB = 20.0  # F0 only over frames within this of the loud ones: no breathy edges
MIN_VOICED_FRAMES = 10
FULL_PITCH_RANGE = 3.0  # semitones, 10th to 90th percentile
PITCH_STRETCH_S = 0.75  # seconds of voiced frames (about 1.5 s of speech)
FULL_STRETCH_PITCH_RANGE = 1.25  # semitones in the flattest stretch
STRETCH_FRAMES = int(PITCH_STRETCH_S * 1000 / PITCH_FRAME_MS)
SHORT_SPEECH_S = 2.0  # a text needing less may show too few voiced frames to judge its pitch
PACE_RANGE = (0.6, 1.5)  # speech span / expected duration with full credit
PACE_LIMITS = (0.35, 3.0)  # where the credit reaches zero: the TTS scorer's duration gates
CLIP_TOLERANCE = 0.01  # within 1% (-40 dB) of the peak
CLIP_FREE = 0.001  # share of samples at the peak that costs nothing
CLIP_HALF = 0.02  # this share (beyond CLIP_FREE) halves the factor


@dataclass
class Measures:
    bandwidth_hz: float  # in the narrowest stretch
    pitch_range: float  # semitones, over the whole answer
    flattest_pitch_range: float  # semitones, in the flattest stretch
    voiced_frames: int  # loud voiced F0 frames, one every PITCH_FRAME_MS
    speech_s: float
    clipped: float  # share of samples at the peak


def _frames_db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(power + 1e-12)


def spectrogram(audio16k: np.ndarray) -> np.ndarray:
    """(frames, bins) power of Hann-windowed 32 ms frames every 16 ms."""
    x = np.asarray(audio16k, dtype=np.float32)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1)
    return spectrum.real**2 + spectrum.imag**2


def speech_frames(power: np.ndarray) -> np.ndarray:
    """Frames within ``SPEECH_DB`` of the loud ones (95th percentile of frame energy)."""
    energy = _frames_db(power.sum(axis=1))
    return energy > np.percentile(energy, 95) - SPEECH_DB


def stretches(count: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of windows of ``size`` items sliding over ``count`` items by
    ``STRETCH_STEP`` of a window, the last one ending with them; one window over all of
    them when they are fewer than ``size``."""
    if count <= size:
        return [(0, count)]
    starts = list(range(0, count - size + 1, max(1, int(size * STRETCH_STEP))))
    if starts[-1] != count - size:
        starts.append(count - size)
    return [(start, start + size) for start in starts]


def bandwidth_hz(power: np.ndarray, speech: np.ndarray) -> float:
    """The highest frequency that carries speech in the answer's narrowest stretch of
    ``BANDWIDTH_STRETCH_S`` of speech frames (see the module docstring)."""
    energy = power.sum(axis=1)
    quiet = energy <= np.percentile(energy, 10)
    floor = _frames_db(power[quiet].mean(axis=0))
    spoken = power[speech].astype(np.float64)
    if not spoken.size:
        return 0.0
    running = np.concatenate((np.zeros((1, spoken.shape[1])), np.cumsum(spoken, axis=0)))
    edges = []
    for start, end in stretches(len(spoken), int(BANDWIDTH_STRETCH_S * RATE / HOP)):
        ltas = _frames_db((running[end] - running[start]) / (end - start))
        carries = (ltas > ltas.max() - EDGE_DB) & (ltas > floor + ABOVE_QUIET_DB)
        edges.append(np.flatnonzero(carries)[-1] * RATE / N_FFT if carries.any() else 0.0)
    return float(min(edges))


def speech_seconds(speech: np.ndarray) -> float:
    """From the first speech frame to the last."""
    found = np.flatnonzero(speech)
    return float((found[-1] - found[0] + 1) * HOP / RATE) if found.size else 0.0


def voiced_f0(audio16k: np.ndarray) -> np.ndarray:
    """F0 (Hz) of the loud voiced frames, in order, one every ``PITCH_FRAME_MS``."""
    x = resample(audio16k, RATE, PITCH_RATE).astype(np.float64)
    if x.size < PITCH_RATE // 10:
        return np.zeros(0)
    f0, t = pw.dio(
        x, PITCH_RATE, *PITCH_RANGE_HZ, frame_period=PITCH_FRAME_MS, speed=2, allowed_range=0.1
    )
    f0 = pw.stonemask(x, f0, t, PITCH_RATE)
    hop = int(PITCH_RATE * PITCH_FRAME_MS / 1000)
    # Energy of the 2-hop window centred on each F0 frame, from a running sum.
    total = np.concatenate(([0.0], np.cumsum(np.pad(x, (hop, 2 * hop)) ** 2)))
    starts = np.arange(len(f0)) * hop
    energy = total[starts + 2 * hop] - total[starts]
    loud = energy > np.percentile(energy, 95) * 10 ** (-LOUD_PITCH_DB / 10)
    return f0[(f0 > 0) & loud]


def pitch_spread(voiced: np.ndarray) -> float:
    """10th-90th percentile spread of F0 (semitones, octave errors folded) over voiced
    frames; 0 when fewer than ``MIN_VOICED_FRAMES``."""
    if voiced.size < MIN_VOICED_FRAMES:
        return 0.0
    # Semitones from the median, folded into one octave around it: a tracker's octave
    # errors (a monotone vocoder read as its own octave on a frame in ten) must not pass
    # for intonation, and read speech stays well within half an octave of its median.
    semitones = 12 * np.log2(voiced)
    folded = (semitones - np.median(semitones) + 6.0) % 12.0 - 6.0
    low, high = np.percentile(folded, [10, 90])
    return float(high - low)


def pitch_ranges(audio16k: np.ndarray) -> tuple[float, float, int]:
    """The pitch spread over the whole answer, in its flattest stretch of
    ``PITCH_STRETCH_S`` of voiced frames (the whole answer's when it is shorter), and how
    many loud voiced frames there are."""
    voiced = voiced_f0(audio16k)
    flattest = min(pitch_spread(voiced[a:b]) for a, b in stretches(voiced.size, STRETCH_FRAMES))
    return pitch_spread(voiced), flattest, int(voiced.size)


def clipped_share(samples: np.ndarray) -> float:
    """Share of samples within ``CLIP_TOLERANCE`` of the waveform's own peak (at its own
    rate: resampling would ripple flat tops)."""
    magnitude = np.abs(samples)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    if peak == 0:
        return 0.0
    return float(np.count_nonzero(magnitude >= (1 - CLIP_TOLERANCE) * peak)) / magnitude.size


def measure(samples: np.ndarray, audio16k: np.ndarray) -> Measures:
    """All four measures: ``samples`` as the miner sent them, ``audio16k`` resampled."""
    power = spectrogram(audio16k)
    speech = speech_frames(power)
    whole, flattest, voiced = pitch_ranges(audio16k)
    return Measures(
        bandwidth_hz=bandwidth_hz(power, speech),
        pitch_range=whole,
        flattest_pitch_range=flattest,
        voiced_frames=voiced,
        speech_s=speech_seconds(speech),
        clipped=clipped_share(samples),
    )


# -- measures onto factors in [0, 1] ------------------------------------------------------


def bandwidth_factor(hz: float) -> float:
    if hz <= 0:
        return 0.0
    octaves_short = max(np.log2(FULL_BANDWIDTH_HZ / hz), 0.0)
    return float(np.clip(1.0 - BANDWIDTH_PER_OCTAVE * octaves_short, 0.0, 1.0))


def pitch_factor(m: Measures, expected_s: float) -> float:
    """The lower of the whole answer's credit and its flattest stretch's; the whole
    answer's counts in proportion to how much of a stretch of voiced frames it has (a
    spread over a handful of frames is noisy). A text that needs under SHORT_SPEECH_S
    (``expected_s``, from the prompt, so no answer can make itself short) is not judged by
    pitch: DIO finds 1 to 15 loud voiced frames in an honest "Hello from chorus." (1 s of
    speech), spread over 0.8 to 4.2 semitones as a monotone's may be, and that answer
    scored 0 to 0.9 by the reading."""
    if expected_s < SHORT_SPEECH_S:
        return 1.0
    stretch = float(np.clip(m.flattest_pitch_range / FULL_STRETCH_PITCH_RANGE, 0.0, 1.0))
    whole = float(np.clip(m.pitch_range / FULL_PITCH_RANGE, 0.0, 1.0))
    weight = min(1.0, m.voiced_frames / STRETCH_FRAMES)
    return min(stretch, 1.0 - weight * (1.0 - whole))


def pace_factor(ratio: float, limits: tuple[float, float] = PACE_LIMITS) -> float:
    """``ratio``: speech span over the expected duration; ``limits``: where it reaches 0."""
    (lo, hi), (lo0, hi0) = PACE_RANGE, limits
    if ratio <= 0:
        return 0.0
    if ratio < lo:
        return float(np.clip(1.0 - np.log(lo / ratio) / np.log(lo / lo0), 0.0, 1.0))
    if ratio > hi:
        return float(np.clip(1.0 - np.log(ratio / hi) / np.log(hi0 / hi), 0.0, 1.0))
    return 1.0


def clipping_factor(share: float) -> float:
    return float(1.0 / (1.0 + max(share - CLIP_FREE, 0.0) / CLIP_HALF))

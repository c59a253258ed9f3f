"""Signal degradations: what the red team does to honest speech to make worse answers.

Each is a small pure function ``(mono float32 samples, rate, ...) -> (samples, rate)``
built from library DSP (scipy.signal filters and convolution, soxr resampling, librosa's
mu-law, the WORLD vocoder from pyworld): additive white noise at a given
SNR, band limits (telephone band, low-pass), an 8 kHz mu-law codec, clipping, synthetic
reverberation, time-stretching (WORLD), a monotone (robotic) WORLD resynthesis, and a WORLD pitch
shift. Random ones take a ``seed``, so the same call gives the same audio. ``in_part`` applies
any of them to a part of an answer only: a few clean seconds must not pay for the rest.
``quiet_point`` and ``crossfade`` are where and how a cheat splices audio together.
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np
import pyworld as pw
from scipy import signal

from chorus.audio import SPEECH_RATE, WORLD_FRAME_MS, resample, to_mono_float

Audio = tuple[np.ndarray, int]
TELEPHONE_BAND = (300.0, 3400.0)  # ITU-T narrowband speech (G.711)
CODEC_RATE = 8000
WORLD_RATE = SPEECH_RATE  # WORLD analysis runs at 16 kHz: speech needs no more, and it is faster
FADE_S = 0.02  # crossfade where a damaged part meets the clean rest, so the join does not click
PAUSE_FRAME_S, PAUSE_HOP_S = 0.02, 0.005  # quiet_point's frames, and their step


def _out(samples: np.ndarray, rate: int) -> Audio:
    return np.asarray(samples, dtype=np.float32), rate


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _match_peak(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``x`` scaled to the peak level of ``like`` (processing changed the level)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    target = float(np.max(np.abs(like))) if like.size else 0.0
    return x * (target / peak) if peak > 0 else x


def white_noise(samples: np.ndarray, rate: int, snr_db: float, seed: int = 0) -> Audio:
    """Gaussian white noise at ``snr_db`` below the signal's mean power (the whole clip,
    pauses included), clipped to full scale."""
    x = to_mono_float(samples)
    noise_rms = _rms(x) / 10 ** (snr_db / 20)
    noise = np.random.default_rng(seed).normal(0.0, noise_rms, x.size)
    return _out(np.clip(x + noise, -1.0, 1.0), rate)


def band_pass(samples: np.ndarray, rate: int, low_hz: float | None, high_hz: float) -> Audio:
    """An 8th-order Butterworth band-pass (or low-pass, ``low_hz`` None), zero phase."""
    x = to_mono_float(samples)
    nyquist = rate / 2
    if high_hz >= nyquist:
        raise ValueError(f"cut-off {high_hz} Hz is above the Nyquist frequency {nyquist} Hz")
    if low_hz:
        sos = signal.butter(8, [low_hz, high_hz], btype="bandpass", fs=rate, output="sos")
    else:
        sos = signal.butter(8, high_hz, btype="lowpass", fs=rate, output="sos")
    return _out(signal.sosfiltfilt(sos, x), rate)


def telephone(samples: np.ndarray, rate: int) -> Audio:
    """The telephone band, 300-3400 Hz, at the original sample rate."""
    return band_pass(samples, rate, *TELEPHONE_BAND)


def low_pass(samples: np.ndarray, rate: int, cutoff_hz: float = 2000.0) -> Audio:
    return band_pass(samples, rate, None, cutoff_hz)


def mu_law(samples: np.ndarray, rate: int, bits: int = 8) -> Audio:
    """A G.711-style codec: resampled to 8 kHz, quantised to ``bits``-bit mu-law, decoded
    and resampled back to ``rate``."""
    x = np.clip(resample(to_mono_float(samples), rate, CODEC_RATE), -1.0, 1.0)
    mu = 2**bits - 1
    codes = librosa.mu_compress(x, mu=mu, quantize=True)
    decoded = librosa.mu_expand(codes, mu=mu, quantize=True).astype(np.float32)
    return _out(resample(decoded, CODEC_RATE, rate), rate)


def clip(samples: np.ndarray, rate: int, threshold: float) -> Audio:
    """Hard clipping at ``threshold`` times the peak, then gain back to the original peak:
    an overdriven recording normalised afterwards (so no sample sits at full scale and the
    clipping gate does not see it; the distortion must be heard)."""
    x = to_mono_float(samples)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0:
        return _out(x, rate)
    level = threshold * peak
    return _out(np.clip(x, -level, level) / threshold, rate)


def impulse_response(rate: int, rt60: float, seed: int = 0) -> np.ndarray:
    """A synthetic room: a direct path followed by exponentially decaying Gaussian noise
    that falls 60 dB in ``rt60`` seconds, with a 5 ms gap before the tail."""
    n = max(int(rt60 * rate), 1)
    t = np.arange(n) / rate
    tail = np.random.default_rng(seed).normal(0.0, 1.0, n) * 10 ** (-3.0 * t / rt60)
    tail[: int(0.005 * rate)] = 0.0
    # Reverberant energy equal to the direct sound's: a mid-sized room a few metres away.
    tail *= 1.0 / np.sqrt(np.sum(tail**2))
    ir = tail
    ir[0] = 1.0
    return ir


def reverb(samples: np.ndarray, rate: int, rt60: float, seed: int = 0) -> Audio:
    """The answer played in a synthetic room with reverberation time ``rt60`` (seconds)."""
    x = to_mono_float(samples)
    wet = signal.fftconvolve(x, impulse_response(rate, rt60, seed))[: x.size]
    return _out(_match_peak(wet, x), rate)


def time_stretch(samples: np.ndarray, rate: int, speed: float) -> Audio:
    """The same speech ``speed`` times faster (> 1) or slower (< 1) at the same pitch and
    timbre: WORLD's frames resampled in time and resynthesised (none of a phase vocoder's
    smearing, so only the pace is wrong). 16 kHz."""
    x = resample(to_mono_float(samples), rate, WORLD_RATE)
    f0, sp, ap = _world(x)
    frames = max(int(round(len(f0) / speed)), 1)
    # Nearest frames, not interpolation: voicing stays on/off and F0 never blends with 0.
    pick = np.minimum(np.round(np.arange(frames) * speed).astype(int), len(f0) - 1)
    y = pw.synthesize(
        f0[pick],
        np.ascontiguousarray(sp[pick]),
        np.ascontiguousarray(ap[pick]),
        WORLD_RATE,
        frame_period=WORLD_FRAME_MS,
    )
    return _out(_match_peak(y, x), WORLD_RATE)


def _world(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis at ``WORLD_RATE``: F0 (0 where unvoiced), envelope, aperiodicity."""
    x = x.astype(np.float64)
    f0, t = pw.dio(x, WORLD_RATE, frame_period=WORLD_FRAME_MS)
    f0 = pw.stonemask(x, f0, t, WORLD_RATE)
    return f0, pw.cheaptrick(x, f0, t, WORLD_RATE), pw.d4c(x, f0, t, WORLD_RATE)


def _resynthesise(samples: np.ndarray, rate: int, new_f0) -> Audio:
    x = resample(to_mono_float(samples), rate, WORLD_RATE)
    f0, sp, ap = _world(x)
    y = pw.synthesize(new_f0(f0), sp, ap, WORLD_RATE, frame_period=WORLD_FRAME_MS)
    return _out(_match_peak(y[: x.size], x), WORLD_RATE)


def monotone(samples: np.ndarray, rate: int, f0_hz: float | None = None) -> Audio:
    """The same words with no intonation: WORLD resynthesis with every voiced frame at one
    pitch (``f0_hz``, default the median voiced F0): a robotic, buzzy voice. 16 kHz."""

    def flat(f0: np.ndarray) -> np.ndarray:
        voiced = f0 > 0
        level = f0_hz or (float(np.median(f0[voiced])) if voiced.any() else 120.0)
        return np.where(voiced, level, 0.0)

    return _resynthesise(samples, rate, flat)


def pitch_shift(samples: np.ndarray, rate: int, factor: float) -> Audio:
    """The same speech with its F0 multiplied by ``factor`` (formants kept): WORLD. 16 kHz."""
    return _resynthesise(samples, rate, lambda f0: f0 * factor)


def median_f0(samples: np.ndarray, rate: int) -> float:
    """Median F0 of the voiced frames (Hz; 0 when nothing is voiced)."""
    x = resample(to_mono_float(samples), rate, WORLD_RATE).astype(np.float64)
    f0, _ = pw.dio(x, WORLD_RATE, frame_period=10.0)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0


def quiet_point(samples: np.ndarray, rate: int, at: int, within_s: float = 0.5) -> int:
    """The middle sample of the quietest 20 ms of ``samples`` within ``within_s`` seconds of
    sample ``at``: a pause between words, where a cheat cuts without cutting into a word."""
    frame, hop = int(PAUSE_FRAME_S * rate), int(PAUSE_HOP_S * rate)
    lo = max(at - int(within_s * rate), 0)
    hi = max(min(at + int(within_s * rate), samples.size - frame), lo + 1)
    starts = np.arange(lo, hi, hop)
    energy = [float(np.mean(np.square(samples[s : s + frame], dtype=np.float64))) for s in starts]
    return int(starts[int(np.argmin(energy))]) + frame // 2


def crossfade(first: np.ndarray, second: np.ndarray, fade: int) -> np.ndarray:
    """``first`` then ``second``, overlapping by ``fade`` samples (at most either's length)
    that fade linearly from one to the other, so the join does not click."""
    fade = max(min(fade, first.size, second.size), 0)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    head, tail = first[: first.size - fade], second[fade:]
    overlap = first[first.size - fade :] * (1 - ramp) + second[:fade] * ramp
    return np.concatenate((head, overlap, tail)).astype(np.float32)


def in_part(
    samples: np.ndarray,
    rate: int,
    damage: Callable[[np.ndarray, int], Audio],
    start_s: float,
    end_s: float | None = None,
) -> Audio:
    """``damage`` done to seconds [``start_s``, ``end_s``) of the answer only (to its end when
    ``end_s`` is None), joined to the untouched rest with ``FADE_S`` crossfades. The damaged
    part may come back at another rate (WORLD's 16 kHz: resampled back to ``rate``) or
    length (a time-stretch); each crossfade lies inside the part, at its own edge."""
    x = to_mono_float(samples)
    a = min(max(int(start_s * rate), 0), x.size)
    b = x.size if end_s is None else min(max(int(end_s * rate), a), x.size)
    part, part_rate = damage(x[a:b], rate)
    part = resample(to_mono_float(part), part_rate, rate)
    fade = min(int(FADE_S * rate), part.size // 2, (b - a) // 2)
    out = crossfade(x[: a + fade], part, fade) if a > 0 else part
    return _out(crossfade(out, x[b - fade :], fade) if b < x.size else out, rate)


def splice(
    samples: np.ndarray, rate: int, seconds: float, piece_s: float = 0.4, seed: int = 0
) -> Audio:
    """``seconds`` of pieces (about ``piece_s`` long) cut at random from ``samples`` and
    joined in random order, with 5 ms fades so the joins do not click."""
    x = to_mono_float(samples)
    rng = np.random.default_rng(seed)
    size = max(min(int(piece_s * rate), x.size), 1)
    fade = min(int(0.005 * rate), size // 2)
    ramp = np.ones(size, np.float32)
    if fade:
        ramp[:fade] = np.linspace(0, 1, fade)
        ramp[-fade:] = np.linspace(1, 0, fade)
    pieces, total = [], 0
    while total < seconds * rate:
        start = int(rng.integers(0, x.size - size + 1))
        pieces.append(x[start : start + size] * ramp)
        total += size
    return _out(np.concatenate(pieces), rate)

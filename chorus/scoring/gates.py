"""Signal gates shared by the TTS, voice-cloning and music scorers.

Each gate looks at mono float audio and returns a short reason when the answer is not worth
scoring (so the scorer can give it ~0 and say why), or None when it passes. They are cheap,
model-free checks run before the expensive models: a miner sending silence or noise should
not cost the validator an ASR pass, nor get lucky with a model that misjudges junk.
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np

Gate = Callable[[np.ndarray, int], str | None]


def _db(value: float) -> float:
    return 20.0 * float(np.log10(max(value, 1e-10)))


def non_finite(samples: np.ndarray, rate: int) -> str | None:
    """NaN or infinite samples would poison every model downstream."""
    if not np.isfinite(samples).all():
        return "audio contains NaN or infinite samples"
    return None


def empty(samples: np.ndarray, rate: int, min_seconds: float = 0.1) -> str | None:
    """Too little audio to hold even one word."""
    seconds = samples.size / rate
    if seconds < min_seconds:
        return f"audio is empty ({seconds:.2f} s)"
    return None


def silence(
    samples: np.ndarray, rate: int, min_rms_db: float = -50.0, min_peak_db: float = -40.0
) -> str | None:
    """Digital silence or a signal too quiet to be heard (levels in dB of full scale)."""
    if samples.size == 0:
        return "audio is silent (no samples)"
    rms = _db(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))
    peak = _db(float(np.max(np.abs(samples))))
    if rms < min_rms_db or peak < min_peak_db:
        return f"audio is silent (RMS {rms:.0f} dBFS, peak {peak:.0f} dBFS)"
    return None


def clipping(
    samples: np.ndarray, rate: int, full_scale: float = 0.99, max_fraction: float = 0.01
) -> str | None:
    """Heavy clipping: clean speech or music touches full scale on far fewer than 1% of
    samples, while audio driven into the rails sits there for long flat runs."""
    fraction = float(np.count_nonzero(np.abs(samples) >= full_scale)) / max(samples.size, 1)
    if fraction > max_fraction:
        return f"audio is heavily clipped ({fraction:.1%} of samples at full scale)"
    return None


def spectral_flatness(samples: np.ndarray, rate: int) -> float:
    """Median spectral flatness (0 = tonal, ~0.56 = white noise) over the louder frames,
    taken as the larger of the signal's and its first difference's. Differencing whitens
    pink and brown noise, whose power piles up at low frequencies and hides their
    flatness, while harmonic speech or music stays peaky either way."""

    def flatness(x: np.ndarray) -> float:
        power = np.abs(librosa.stft(x, n_fft=1024, hop_length=256)) ** 2
        energy = power.sum(axis=0)
        loud = energy >= 0.01 * energy.max()
        return float(np.median(librosa.feature.spectral_flatness(S=power[:, loud], power=1.0)))

    return max(flatness(samples), flatness(np.diff(samples)))


def noise_like(samples: np.ndarray, rate: int, max_flatness: float = 0.45) -> str | None:
    """Noise of any colour instead of speech or music: a flat spectrum with no harmonics.
    Speech is about 0.02, Piper under hiss at 10 dB SNR about 0.32 and at 5 dB 0.34-0.52,
    pink noise 0.46, white 0.56: noisier speech is left to WER and DNSMOS to judge."""
    if samples.size < 2048:  # under two analysis frames: nothing to judge (``empty`` decides)
        return None
    value = spectral_flatness(samples, rate)
    if value > max_flatness:
        return f"audio is noise-like (spectral flatness {value:.2f})"
    return None


SIGNAL_GATES: tuple[Gate, ...] = (non_finite, empty, silence, clipping, noise_like)


def first_failure(
    samples: np.ndarray, rate: int, gates: tuple[Gate, ...] = SIGNAL_GATES
) -> str | None:
    """The reason of the first gate that fails, in order, or None when all pass."""
    for gate in gates:
        reason = gate(samples, rate)
        if reason:
            return reason
    return None

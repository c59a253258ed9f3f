"""Text-to-music scoring: is it music worth hearing, and is it the music that was asked for?

``quality`` gates what no prompt can excuse (silence, noise, heavy clipping) and rewards a
sensible loudness and a clear signal over its noise floor. ``adherence`` measures what the
prompt asked for and a signal can show: tempo (onset autocorrelation with a harmonic comb,
so the estimate is precise to a fraction of a BPM; a clean double or half counts), key and
mode (Krumhansl–Schmuckler on a chroma summary), the duration, whether drums are
present when asked for or refused, whether a bass line is there when one was named, and
the energy. The prompt is read with
`parse_music_prompt`, so a validator's generated prompts and a person's free text both work.
Everything is numpy/librosa feature extraction: about a tenth of a second for 15 s of music.
"""

from __future__ import annotations

import time
import warnings

import librosa
import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.music_prompts import NOTE_NAMES, MusicPrompt, parse_music_prompt
from chorus.scoring import Score

RATE = 22050
HOP = 256  # 11.6 ms onset frames: fine enough for a comb search to resolve ±1 %
N_FFT = 2048

# Temperley's (Kostka-Payne) key profiles, tonic first: on our tests they find the key
# more often than Krumhansl-Kessler's, which over-reward the relative major/minor.
MAJOR_PROFILE = np.array(
    [0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400]
)
MINOR_PROFILE = np.array(
    [0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330]
)

WEIGHTS = {"tempo_bpm": 0.35, "key": 0.35, "drums": 0.1, "bass": 0.05, "energy": 0.15}
BASS_INSTRUMENTS = ("bass", "slap bass", "upright bass", "synth bass")
TEMPO_TOLERANCE = 0.04  # ±4 % is full credit; credit falls to zero at three times that


def _ramp(x: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear between (either direction), clipped."""
    return float(np.clip((x - zero) / (one - zero), 0.0, 1.0))


def estimate_tempo(onset_env: np.ndarray, fps: float) -> tuple[float, float]:
    """(BPM, strength) from the onset envelope's autocorrelation.

    A coarse peak-pick on an autocorrelation is only as fine as one frame (4 % at 120 BPM);
    summing the autocorrelation at the first four multiples of each candidate period, with
    interpolation, pins the tempo to a fraction of a BPM. A mild prior prefers 80-160 BPM.
    """
    env = onset_env - onset_env.mean()
    n = env.size
    spec = np.fft.rfft(env, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    if ac[0] <= 0:
        return 0.0, 0.0
    ac = ac / ac[0] / (1 - np.arange(n) / n).clip(0.25)  # unbias long lags
    bpms = np.arange(50.0, 220.0, 0.1)
    periods = 60.0 * fps / bpms
    lags = np.arange(n)
    comb = np.zeros_like(bpms)
    for k in (1, 2, 3, 4):
        comb += np.interp(k * periods, lags, ac, right=0.0)
    comb /= 4
    prior = np.exp(-0.5 * (np.log2(bpms / 115.0) / 0.9) ** 2)
    best = int(np.argmax(comb * (0.5 + 0.5 * prior)))
    return float(bpms[best]), float(comb[best])


def estimate_key(chroma: np.ndarray) -> tuple[int, str, float]:
    """(tonic pitch class, mode, correlation): the Krumhansl–Schmuckler method, correlating
    the mean chroma with each of the 24 rotated key profiles."""
    profile = chroma.mean(axis=1)
    best = (0, "major", -1.0)
    for tonic in range(12):
        rolled = np.roll(profile, -tonic)
        for mode, ref in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
            r = float(np.corrcoef(rolled, ref)[0, 1])
            if r > best[2]:
                best = (tonic, mode, r)
    return best


def tempo_match(estimated: float, prompt: MusicPrompt) -> float | None:
    """1 within ±4 % of the asked BPM (or its double/half), falling to 0 at ±12 %;
    for a tempo only named in words, 1 inside its range. None if no tempo was asked."""
    if estimated <= 0:
        return 0.0 if prompt.bpm or prompt.bpm_range else None
    if prompt.bpm:
        err = min(abs(np.log(estimated * f / prompt.bpm)) for f in (1.0, 2.0, 0.5))
        return _ramp(err, 3 * TEMPO_TOLERANCE, TEMPO_TOLERANCE)
    if prompt.bpm_range:
        lo, hi = prompt.bpm_range
        outside = max(np.log(lo / estimated), np.log(estimated / hi), 0.0)
        return _ramp(outside, 0.15, 0.0)
    return None


def key_match(tonic: int, mode: str, prompt: MusicPrompt) -> float | None:
    """1 for the asked key and mode; partial credit for its closest relatives (same notes,
    same tonic, a fifth away), which are the usual near-misses of any key finder."""
    want = prompt.tonic
    if want is None:
        return None if prompt.mode is None else float(mode == prompt.mode)
    if prompt.mode is None:
        return 1.0 if tonic == want else (0.3 if (tonic - want) % 12 in (5, 7) else 0.0)
    if tonic == want and mode == prompt.mode:
        return 1.0
    relative = (want + (9 if prompt.mode == "major" else 3)) % 12
    if mode != prompt.mode and tonic in (relative, want):
        return 0.3
    if mode == prompt.mode and (tonic - want) % 12 in (5, 7):
        return 0.3
    return 0.0


class MusicEvaluator:
    """Scores text-to-music answers. Holds nothing heavy: all features are computed per
    call from the audio, so one instance serves any number of threads."""

    rate = RATE

    def __init__(self) -> None:
        # librosa loads its filter banks and compiles on first use; pay that here, once,
        # so that the first answer scored is timed like every later one
        t = np.arange(RATE) / RATE
        self.evaluate(np.sin(2 * np.pi * 220 * t).astype(np.float32), RATE, "C major, 120 BPM")

    def evaluate(
        self, samples: np.ndarray, rate: int, prompt: str, duration: float | None = None
    ) -> Score:
        """Score ``samples`` (mono or channels-last) at ``rate`` against ``prompt``; the
        answer should last ``duration`` seconds when given."""
        t0 = time.perf_counter()
        asked = parse_music_prompt(prompt)
        raw = to_mono_float(samples)
        seconds = raw.size / rate if rate > 0 else 0.0
        if rate <= 0 or raw.size < rate * 0.5 or not np.isfinite(raw).all():
            metrics = {"quality": 0.0, "adherence": 0.0, "seconds_audio": round(seconds, 3)}
            return Score(0.0, metrics, time.perf_counter() - t0, "too short or not finite")
        x = resample(raw, rate, RATE)
        x = x - x.mean()  # a DC offset is inaudible: judge the music, not the offset

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # silence makes librosa warn about tuning
            quality, qparts = self._quality(raw, x)
            S = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP)) ** 2
            mel = librosa.feature.melspectrogram(S=S, sr=RATE, n_mels=64)
            adherence, aparts, found = self._adherence(x, S, mel, asked, seconds, duration)
        qparts["snr"] = self._snr(mel)
        quality *= 0.5 + 0.5 * (qparts["loudness"] + qparts["snr"]) / 2
        gates = {**qparts, "duration": aparts.get("duration", 1.0)}
        reason = next(
            (k for k in ("not_silent", "not_noise", "no_clipping", "duration") if gates[k] < 0.5),
            None,
        )
        metrics = {
            "quality": round(quality, 4),
            "adherence": round(adherence, 4),
            "quality_parts": {k: round(v, 4) for k, v in qparts.items()},
            "adherence_parts": {k: round(v, 4) for k, v in aparts.items()},
            **found,
            "seconds_audio": round(seconds, 3),
        }
        return Score(quality * adherence, metrics, time.perf_counter() - t0, reason)

    @staticmethod
    def _quality(raw: np.ndarray, x: np.ndarray) -> tuple[float, dict[str, float]]:
        """Gates (silence, noise, clipping) multiply; loudness and SNR are added later."""
        rms_db = 20 * np.log10(float(np.sqrt(np.mean(x**2))) + 1e-9)
        clipped = float(np.mean(np.abs(raw) >= 0.99))
        frames = np.abs(librosa.stft(x, n_fft=1024, hop_length=1024)) ** 2 + 1e-12
        loud = frames.sum(axis=0) > 1e-6 * frames.sum(axis=0).max()
        flat = np.exp(np.log(frames).mean(axis=0)) / frames.mean(axis=0)
        flatness = float(np.median(flat[loud])) if loud.any() else 1.0
        parts = {
            "not_silent": _ramp(rms_db, -60.0, -45.0),
            "not_noise": _ramp(flatness, 0.3, 0.1),
            "no_clipping": _ramp(np.log10(clipped + 1e-6), np.log10(0.02), np.log10(0.001)),
            "loudness": min(_ramp(rms_db, -40.0, -28.0), _ramp(rms_db, -3.0, -9.0)),
            "flatness": flatness,
            "rms_db": float(rms_db),
        }
        gate = parts["not_silent"] * parts["not_noise"] * parts["no_clipping"]
        return gate, parts

    @staticmethod
    def _snr(mel: np.ndarray) -> float:
        """How far the music stands above a steady floor: mean band power over each band's
        10th-percentile power (white noise or hum sits near 0 dB, music well above)."""
        floor = np.percentile(mel, 10, axis=1).sum() + 1e-12
        snr_db = 10 * np.log10(mel.mean(axis=1).sum() / floor + 1e-12)
        return _ramp(float(snr_db), 3.0, 12.0)

    def _adherence(
        self,
        x: np.ndarray,
        S: np.ndarray,
        mel: np.ndarray,
        asked: MusicPrompt,
        seconds: float,
        duration: float | None,
    ) -> tuple[float, dict[str, float], dict[str, object]]:
        """The weighted mean of the musical parts the prompt asked for, times the duration
        match; plus what was found."""
        onset = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=RATE, hop_length=HOP)
        bpm, strength = estimate_tempo(onset, RATE / HOP)
        tonic, mode, key_r = estimate_key(self._chroma(x))
        drums = self._percussive_share(S)
        energy = self._energy(onset, RATE / HOP, S, drums)
        low = float(
            S[librosa.fft_frequencies(sr=RATE, n_fft=N_FFT) < 180].sum() / (S.sum() + 1e-12)
        )
        found: dict[str, object] = {
            "tempo_bpm": round(bpm, 2),
            "tempo_strength": round(strength, 3),
            "key": f"{NOTE_NAMES[tonic]} {mode}",
            "key_strength": round(key_r, 3),
            "percussive_share": round(drums, 3),
            "energy_index": round(energy, 3),
            "low_share": round(low, 3),
        }
        parts: dict[str, float | None] = {
            "tempo_bpm": tempo_match(bpm, asked),
            "key": key_match(tonic, mode, asked),
            "duration": None
            if duration is None
            else _ramp(abs(seconds - duration), max(0.1, 0.25 * duration), 0.1),
            "drums": self._drums_match(drums, asked),
            # a bass line puts a fifth or more of the energy below 180 Hz; without one it
            # is near zero (a kick drum alone also passes: this is a coarse check)
            "bass": (
                _ramp(low, 0.05, 0.15)
                if any(i in BASS_INSTRUMENTS for i in asked.instruments)
                else None
            ),
            "energy": self._energy_match(energy, asked.energy),
        }
        present = {k: v for k, v in parts.items() if v is not None}
        musical = {k: v for k, v in present.items() if k != "duration"}
        total = sum(WEIGHTS[k] for k in musical)
        mean = sum(WEIGHTS[k] * v for k, v in musical.items()) / total if musical else 1.0
        # a truncated or overlong answer is not what was asked, however well it plays
        return mean * present.get("duration", 1.0), present, found

    @staticmethod
    def _chroma(x: np.ndarray) -> np.ndarray:
        """Chroma from a long-window magnitude STFT (5 Hz bins resolve bass notes), weighted
        towards octaves 2-5 where fundamentals are, so upper harmonics (a root's major
        third two octaves up) do not turn minor into major."""
        S = np.abs(librosa.stft(x, n_fft=4096, hop_length=1024))
        return librosa.feature.chroma_stft(S=S, sr=RATE, n_fft=4096, ctroct=4.0, octwidth=1.5)

    @staticmethod
    def _percussive_share(S: np.ndarray) -> float:
        """Share of spectral energy that is percussive (median-filter separation on a
        coarse copy of the spectrogram: fast, and drums are broadband so it suffices)."""
        coarse = S[:512:2, ::2]
        harm, perc = librosa.decompose.hpss(coarse, kernel_size=15, power=2.0, mask=True)
        return float((perc * coarse).sum() / ((coarse.sum()) + 1e-12))

    @staticmethod
    def _drums_match(share: float, asked: MusicPrompt) -> float | None:
        if asked.no_drums:
            return _ramp(share, 0.15, 0.05)
        if "drums" in asked.instruments:
            return _ramp(share, 0.02, 0.08)
        return None

    @staticmethod
    def _energy(onset: np.ndarray, fps: float, S: np.ndarray, percussive: float) -> float:
        """0..1 arousal from three classic correlates: onsets per second, brightness
        (spectral centroid) and the percussive share. Coarse: low vs high is reliable,
        medium less so, hence its small weight."""
        peaks = librosa.util.peak_pick(
            onset,
            pre_max=3,
            post_max=3,
            pre_avg=10,
            post_avg=10,
            delta=0.3 * float(onset.std()),
            wait=4,
        )
        rate = peaks.size / (onset.size / fps)
        centroid = float(librosa.feature.spectral_centroid(S=np.sqrt(S), sr=RATE).mean())
        return (
            _ramp(rate, 1.0, 8.0) + _ramp(centroid, 1200.0, 3200.0) + _ramp(percussive, 0.02, 0.3)
        ) / 3

    @staticmethod
    def _energy_match(energy: float, asked: str | None) -> float | None:
        if asked is None:
            return None
        center = {"low": 0.3, "medium": 0.45, "high": 0.6}[asked]
        return _ramp(abs(energy - center), 0.35, 0.1)

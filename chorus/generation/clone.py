"""Voice cloning on a CPU: speak with Piper, then move the voice toward the reference with the
WORLD vocoder (``pyworld``).

Three steps, each kept because it measurably raised speaker similarity on the built-in voice
bank without hurting intelligibility (numbers in docs/voice-cloning.md):

1. pitch: map log-F0 mean and spread onto the reference's;
2. vocal-tract length: warp the spectral envelope's frequency axis by a factor chosen by
   analysis-by-synthesis, i.e. the factor whose rendering of a fixed calibration sentence the
   speaker encoder finds closest to the reference (estimating it from spectra alone picked
   wrong factors for half the voices);
3. timbre: equalise the long-term envelope to the reference's (a smooth per-frequency gain).

What a reference implies (pitch statistics, envelope, warp) is computed once per reference
and cached, so a validator reusing a voice costs only the conversion.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyworld as pw

from chorus.audio import SPEECH_RATE, WORLD_FRAME_MS, resample, to_mono_float
from chorus.errors import CallerError
from chorus.piper import PiperTTS
from chorus.speaker import SpeakerEncoder

RATE = SPEECH_RATE  # the references and every scorer live at 16 kHz; WORLD is faster there too
COARSE_WARPS = (0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
FINE_STEP = 0.05
# Prefer the milder warp when similarity is this close: the curve is flat near its top (a
# male voice scored 0.69-0.71 from 1.1 to 1.5), and big warps cost intelligibility.
WARP_TOLERANCE = 0.02
# ~110 Hz at 16 kHz / 1024-point FFT: timbre, not harmonics (the long-term mean over voiced
# frames of every pitch has none left to copy); 15 bins (~230 Hz) paid 10 % less
EQ_SMOOTH_BINS = 7
EQ_LIMIT = np.log(10 ** (30 / 20))  # +-30 dB: never boost a band the source lacks into noise
MIN_VOICED_FRAMES = 40  # 0.2 s of voiced speech to learn a pitch range from
CALIBRATION_TEXT = "Seven bright flags were waving over the quiet harbour this morning."
PROFILE_CACHE = 32


class CloneError(CallerError):
    """A reference recording that cannot be cloned (no voiced speech in it)."""


@dataclass
class World:
    """WORLD analysis of one utterance: F0 (0 = unvoiced), envelope, aperiodicity."""

    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray

    @classmethod
    def analyse(cls, samples: np.ndarray) -> World:
        x = samples.astype(np.float64)
        f0, t = pw.dio(x, RATE, frame_period=WORLD_FRAME_MS)
        f0 = pw.stonemask(x, f0, t, RATE)
        return cls(f0, pw.cheaptrick(x, f0, t, RATE), pw.d4c(x, f0, t, RATE))

    @property
    def voiced(self) -> np.ndarray:
        return self.f0 > 0

    def log_f0_stats(self) -> tuple[float, float]:
        lf0 = np.log(self.f0[self.voiced])
        return float(lf0.mean()), float(max(lf0.std(), 1e-3))

    def mean_log_envelope(self) -> np.ndarray:
        return np.log(self.sp[self.voiced] + 1e-12).mean(axis=0)


@dataclass
class VoiceProfile:
    """What the converter needs to know about one reference voice."""

    log_f0_mean: float
    log_f0_std: float
    log_envelope: np.ndarray
    embedding: np.ndarray
    warp: float = 1.0
    warp_similarity: float = 0.0


def map_f0(f0: np.ndarray, src: tuple[float, float], profile: VoiceProfile) -> np.ndarray:
    """Shift and scale voiced log-F0 from the source's statistics to the reference's."""
    out = np.zeros_like(f0)
    v = f0 > 0
    z = (np.log(f0[v]) - src[0]) / src[1]
    out[v] = np.exp(z * profile.log_f0_std + profile.log_f0_mean)
    return out


def warp_envelope(sp: np.ndarray, alpha: float) -> np.ndarray:
    """Stretch the frequency axis by ``alpha`` (>1 moves formants up: a shorter vocal tract)."""
    n = sp.shape[1]
    idx = np.clip(np.arange(n) / alpha, 0, n - 1)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = idx - lo
    return sp[:, lo] * (1 - w) + sp[:, hi] * w


def _smooth(v: np.ndarray, k: int) -> np.ndarray:
    return np.convolve(np.pad(v, (k // 2, k // 2), mode="edge"), np.ones(k) / k, mode="valid")


class WorldClone:
    """Piper speech converted toward the reference voice with WORLD; CPU only."""

    name = "world"

    def __init__(self, tts: PiperTTS | None = None, speaker: SpeakerEncoder | None = None):
        self.tts = tts or PiperTTS()
        self.speaker = speaker or SpeakerEncoder()
        self.model = f"world-vc+{self.tts.model}"
        self._calibration: World | None = None
        self._profiles: OrderedDict[str, VoiceProfile] = OrderedDict()
        self._lock = threading.Lock()  # miners call backends from worker threads

    def clone(
        self, text: str, reference: np.ndarray, reference_rate: int
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the voice of ``reference``: (float32 mono at 16 kHz, 16000)."""
        profile = self.profile(reference, reference_rate)
        speech, rate = self.tts.synthesize(text)
        if speech.size == 0:
            return np.zeros(0, dtype=np.float32), RATE
        return self.convert(resample(speech, rate, RATE), profile), RATE

    def profile(self, reference: np.ndarray, rate: int) -> VoiceProfile:
        """The (cached) profile of a reference recording."""
        ref = resample(to_mono_float(reference), rate, RATE)
        key = hashlib.sha1(ref.tobytes()).hexdigest()
        with self._lock:
            if key in self._profiles:
                self._profiles.move_to_end(key)
                return self._profiles[key]
            world = World.analyse(ref)
            if world.voiced.sum() < MIN_VOICED_FRAMES:
                raise CloneError("the reference recording has no voiced speech to clone")
            mean, std = world.log_f0_stats()
            embedding = self.speaker.embed(ref, RATE)
            profile = VoiceProfile(mean, std, world.mean_log_envelope(), embedding)
            self._choose_warp(profile)
            self._profiles[key] = profile
            if len(self._profiles) > PROFILE_CACHE:
                self._profiles.popitem(last=False)
            return profile

    def _choose_warp(self, profile: VoiceProfile) -> None:
        """Analysis-by-synthesis: render the calibration sentence at each warp factor and
        keep the one the speaker encoder places closest to the reference."""
        if self._calibration is None:
            # Noiseless, so every process picks the same warp for the same reference.
            speech, rate = self.tts.synthesize(CALIBRATION_TEXT, noiseless=True)
            self._calibration = World.analyse(resample(speech, rate, RATE))
        scores = {a: self._warp_similarity(a, profile) for a in COARSE_WARPS}
        top = max(scores, key=scores.__getitem__)
        for a in (top - FINE_STEP, top + FINE_STEP):
            scores[round(a, 3)] = self._warp_similarity(round(a, 3), profile)
        best_sim = max(scores.values())
        mildest = min(
            (a for a, s in scores.items() if s >= best_sim - WARP_TOLERANCE),
            key=lambda a: abs(a - 1.0),
        )
        profile.warp, profile.warp_similarity = mildest, scores[mildest]

    def _warp_similarity(self, alpha: float, profile: VoiceProfile) -> float:
        assert self._calibration is not None
        profile.warp = alpha
        audio = self._render(self._calibration, profile)
        return float(np.dot(self.speaker.embed(audio, RATE), profile.embedding))

    def convert(self, speech: np.ndarray, profile: VoiceProfile) -> np.ndarray:
        """Convert 16 kHz speech toward ``profile``."""
        return self._render(World.analyse(speech), profile)

    def map_envelope(self, src: World, profile: VoiceProfile) -> np.ndarray:
        """Warp the envelope, then equalise its long-term shape to the reference's."""
        sp = warp_envelope(src.sp, profile.warp)
        gain = profile.log_envelope - np.log(sp[src.voiced] + 1e-12).mean(axis=0)
        gain = np.clip(_smooth(gain, EQ_SMOOTH_BINS), -EQ_LIMIT, EQ_LIMIT)
        return sp * np.exp(gain)[None, :]

    def _render(self, src: World, profile: VoiceProfile) -> np.ndarray:
        if not src.voiced.any():
            return np.zeros(0, dtype=np.float32)
        f0 = map_f0(src.f0, src.log_f0_stats(), profile)
        sp = np.ascontiguousarray(self.map_envelope(src, profile))
        y = pw.synthesize(f0, sp, src.ap, RATE, WORLD_FRAME_MS)
        peak = float(np.max(np.abs(y))) or 1.0
        return (0.9 * y / peak).astype(np.float32)

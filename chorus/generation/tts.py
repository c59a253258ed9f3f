"""Text-to-speech backends: the Piper voice (``chorus.piper``, shared with the voice-cloning
scorer), and a deliberately degraded variant that gives the local network a plainly worse
miner."""

from __future__ import annotations

import numpy as np

from chorus.piper import PIPER_VOICES, PiperTTS, UnknownVoiceError

__all__ = ["PIPER_VOICES", "DegradedTTS", "PiperTTS", "UnknownVoiceError"]


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
        from chorus import degrade

        clean, rate = super().synthesize(text, voice, noiseless)
        if clean.size == 0:
            return clean, rate
        narrow = degrade.telephone(clean, rate)
        return degrade.white_noise(*narrow, self.snr_db, seed=int(self.rng.integers(2**32)))

"""Speaker similarity with Resemblyzer's GE2E encoder (weights ship with the pip package).

Cosine similarity of two utterance embeddings: recordings of one speaker score about
0.85-0.95, different speakers about 0.4-0.7. The encoder is loaded once and reused. The
cloners steer by it and the voice-cloning scorer measures with it, so it belongs to neither
``chorus.generation`` nor ``chorus.scoring``.
"""

from __future__ import annotations

import numpy as np

from chorus.audio import SPEECH_RATE, resample, to_mono_float

SPEAKER_RATE = SPEECH_RATE
MIN_SPEECH_SECONDS = 0.3  # below this, after trimming silence, there is nothing to embed


class SpeakerEncoder:
    """Resemblyzer ``VoiceEncoder`` on the CPU (or ``device``): about 0.05 s per 5 s clip."""

    def __init__(self, device: str = "cpu"):
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device, verbose=False)

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """A unit-length 256-d speaker embedding; all zeros when there is no speech, so that
        silence is similar to nothing rather than crashing the encoder."""
        from resemblyzer import preprocess_wav

        audio = resample(to_mono_float(samples), rate, SPEAKER_RATE)
        if audio.size == 0 or not np.isfinite(audio).all() or np.max(np.abs(audio)) == 0:
            return np.zeros(256, dtype=np.float32)
        wav = preprocess_wav(audio, SPEAKER_RATE)
        if wav.size < MIN_SPEECH_SECONDS * SPEAKER_RATE:
            return np.zeros(256, dtype=np.float32)
        return self.encoder.embed_utterance(wav).astype(np.float32)

    def similarity(self, a: np.ndarray, rate_a: int, b: np.ndarray, rate_b: int) -> float:
        """Cosine similarity of the speakers of two recordings, in [-1, 1]."""
        return float(np.dot(self.embed(a, rate_a), self.embed(b, rate_b)))

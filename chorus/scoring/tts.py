"""TTS scoring: did the miner say the prompt (intelligibility), and does it sound good
(DNSMOS quality)? Cheap gates first, so junk never costs an ASR or DNSMOS pass.

score = intelligibility x (0.7 + 0.3 x quality), with intelligibility = 1 - min(WER, 1).
Saying the right words is the task, so it carries 70% and multiplies the rest: clean,
natural speech of the wrong text must not earn points, and DNSMOS cannot tell whether the
content is right. Quality then separates miners that are all intelligible (a hissy
telephone-band voice loses about a fifth of the 0.3 against clean Piper).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.scoring import Score
from chorus.scoring.asr import ASR_RATE, Transcriber
from chorus.scoring.cores import on_a_core
from chorus.scoring.gates import first_failure
from chorus.scoring.quality import DNSMOS
from chorus.text import normalize, word_error_rate

T = TypeVar("T")
INTELLIGIBILITY_WEIGHT = 0.7
CHARS_PER_SECOND = 15.0  # normalised prompt characters per second of natural speech
MIN_DURATION_RATIO = 0.35  # below this share of the expected duration: truncated
MAX_DURATION_RATIO = 3.0  # above this multiple: padded, looped or absurdly slow
# DNSMOS values mapped linearly onto [0, 1]: (MOS that scores 0, MOS that scores 1).
# Clean Piper speech is about P.808 4.2 and OVRL 3.3; few real clips exceed these tops.
MOS_RANGES = {"p808": (2.0, 4.5), "ovrl": (1.5, 3.5)}


def expected_seconds(text: str) -> float:
    """How long a natural reading of ``text`` takes, from its normalised length."""
    return max(len(normalize(text)), 1) / CHARS_PER_SECOND


def duration_gate(seconds: float, text: str) -> str | None:
    """Audio far shorter or longer than the prompt needs is truncated or padded."""
    expected = expected_seconds(text)
    ratio = seconds / expected
    if ratio < MIN_DURATION_RATIO:
        return f"audio is too short for the text ({seconds:.1f} s, expected ~{expected:.1f} s)"
    if ratio > MAX_DURATION_RATIO:
        return f"audio is too long for the text ({seconds:.1f} s, expected ~{expected:.1f} s)"
    return None


def mos_quality(mos: dict[str, float]) -> float:
    """Mean of P.808 and OVRL, each mapped onto [0, 1] by ``MOS_RANGES``."""
    parts = [np.clip((mos[k] - lo) / (hi - lo), 0.0, 1.0) for k, (lo, hi) in MOS_RANGES.items()]
    return float(np.mean(parts))


class TTSEvaluator:
    """Scores one TTS answer against its prompt; the models are loaded once and reused."""

    def __init__(self, transcriber: Transcriber | None = None, dnsmos: DNSMOS | None = None):
        self.transcriber = transcriber or Transcriber()
        self.dnsmos = dnsmos or DNSMOS()
        self._beside = ThreadPoolExecutor(2, thread_name_prefix="beside-whisper")
        # The gates' first call pays librosa's lazy set-up (0.8 s here): pay it now, so the
        # first answer scored is timed like every later one.
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(ASR_RATE) / ASR_RATE)
        first_failure(tone.astype(np.float32), ASR_RATE)

    def evaluate(self, samples: np.ndarray, rate: int, text: str) -> Score:
        """Score ``samples`` (any rate) as a reading of ``text``, in [0, 1]."""
        return self.evaluate_beside(samples, rate, text)[0]

    def evaluate_beside(
        self, samples: np.ndarray, rate: int, text: str, beside: Callable[[], T] | None = None
    ) -> tuple[Score, T | None]:
        """``evaluate``, also running ``beside()`` next to Whisper once the gates pass (the
        voice-cloning scorer's speaker checks): the score, and beside's result or None."""
        start = time.perf_counter()
        audio = to_mono_float(samples)
        seconds = audio.size / rate
        metrics: dict = {
            "duration_s": round(seconds, 3),
            "expected_s": round(expected_seconds(text), 3),
            "gate": None,
            "wer": None,
            "transcript": None,
            "mos": None,
        }
        reason = first_failure(audio, rate) or duration_gate(seconds, text)
        if reason:
            metrics["gate"] = reason
            return Score(0.0, metrics, time.perf_counter() - start, reason), None

        audio16k = resample(audio, rate, ASR_RATE)  # both models work at 16 kHz
        # DNSMOS runs beside Whisper, each model call on a core of its own (chorus.scoring.
        # cores): Whisper encodes on both cores, then decodes on one while DNSMOS takes the
        # other, and both once Whisper is done.
        jobs = []

        def start_beside() -> None:
            jobs.append(self._beside.submit(self.dnsmos.score, audio16k, ASR_RATE))
            jobs.append(self._beside.submit(on_a_core, beside) if beside else None)

        transcript = self.transcriber.transcribe(audio16k, ASR_RATE, encoded=start_beside)
        quality_job, beside_job = jobs
        wer = word_error_rate(text, transcript)
        mos = quality_job.result()
        intelligibility = 1.0 - min(wer, 1.0)
        quality = mos_quality(mos)
        score = intelligibility * (INTELLIGIBILITY_WEIGHT + (1 - INTELLIGIBILITY_WEIGHT) * quality)
        metrics.update(
            wer=round(wer, 4),
            transcript=transcript,
            mos={k: round(v, 3) for k, v in mos.items()},
            intelligibility=round(intelligibility, 4),
            quality=round(quality, 4),
        )
        extra = beside_job.result() if beside_job else None
        return Score(score, metrics, time.perf_counter() - start), extra

"""TTS scoring: did the miner say the prompt (intelligibility), and does it sound like clean,
natural speech (quality)? Cheap gates first, so junk never costs an ASR or DNSMOS pass.

score = intelligibility x quality, with intelligibility = 1 - min(WER, 1) and

quality = dnsmos x bandwidth x pitch x pace x clipping,

each factor in [0, 1] and exactly 1 for clean, natural read speech (Piper's, or a real
person's recording), so an honest answer loses nothing and every kind of damage costs its
own share. Saying the right words is the task, so intelligibility multiplies everything:
clean speech of the wrong text earns nothing. The quality factors:

- dnsmos: the mean of P.808, SIG (signal distortion) and BAK (background noise), each
  mapped linearly from "poor" (2.0) to full credit at ``MOS_KNEES``: the level of a clean
  studio recording of a real person (CMU ARCTIC awb scores P.808 3.78, SIG 3.46, BAK 3.90),
  a little under it. Above the knee DNSMOS ranks clean voices by taste (it prefers Piper
  to that person by 0.4 MOS, within its per-clip error), so it stops paying; below it,
  hiss, reverberation, codec and vocoder damage cost in proportion.
- bandwidth, pitch range, pace and clipping: measured from the signal
  (``chorus.scoring.measures``; bandwidth and pitch in the answer's worst stretch, so a
  few clean seconds do not pay for damage to the rest): the telephone band keeps about
  three quarters, a 2 kHz low-pass half, a monotone (robotic) voice a fraction, speech
  far too fast or slow loses credit towards the duration gates, and a waveform clipped
  flat below full scale keeps 1 / (1 + share / 2%) of its quality, for the share of its
  samples stuck at the peak.

The old rule, intelligibility x (0.7 + 0.3 x DNSMOS quality), paid any intelligible answer
70%: hiss at 10 dB SNR kept 79% of the honest score and the telephone band 97%.

A validator scores a round's answers together (``TTSEvaluator.evaluate_round``): every
answer is gated first, then the ones that pass share Whisper's batched decoding
(``Transcriber.transcribe_many``), with their DNSMOS passes and signal measures beside it.
Each answer gets the score it would get alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import TypeVar

import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.prompts import expected_seconds
from chorus.scoring import measures
from chorus.scoring.asr import ASR_RATE, Transcriber, Transcript
from chorus.scoring.gates import first_failure
from chorus.scoring.quality import DNSMOS, MOS
from chorus.scoring.runtime import ScoringRuntime, shared_runtime
from chorus.services.tts import SpeechChallenge, SpeechResult
from chorus.text import word_error_rate

T = TypeVar("T")
MIN_DURATION_RATIO = 0.35  # below this share of the expected duration: truncated
MAX_DURATION_RATIO = 3.0  # above this multiple: padded, looped or absurdly slow
# DNSMOS values mapped linearly onto [0, 1]: from "poor" on the ACR scale (2.0, scores 0) to
# a knee (scores 1) just under a clean studio recording of a person (CMU ARCTIC awb, from
# pysptk: P.808 3.78, SIG 3.46, BAK 3.90). Piper reads at P.808 3.9-4.3, SIG 3.5-3.7, BAK
# 4.2; white noise at 30 dB SNR brings BAK to 3.4-3.8, at 10 dB to 2.1.
MOS_FLOOR = 2.0
MOS_KNEES = {"p808": 3.7, "sig": 3.35, "bak": 3.8}


def duration_gate(seconds: float, text: str) -> str | None:
    """Audio far shorter or longer than the prompt needs is truncated or padded."""
    expected = expected_seconds(text)
    ratio = seconds / expected
    if ratio < MIN_DURATION_RATIO:
        return f"audio is too short for the text ({seconds:.1f} s, expected ~{expected:.1f} s)"
    if ratio > MAX_DURATION_RATIO:
        return f"audio is too long for the text ({seconds:.1f} s, expected ~{expected:.1f} s)"
    return None


def mos_quality(mos: MOS) -> float:
    """Mean of P.808, SIG and BAK, each mapped from ``MOS_FLOOR`` (0) to its knee (1)."""
    parts = [(getattr(mos, k) - MOS_FLOOR) / (knee - MOS_FLOOR) for k, knee in MOS_KNEES.items()]
    return float(np.mean(np.clip(parts, 0.0, 1.0)))


def quality_factors(mos: MOS, m: measures.Measures, expected: float) -> dict:
    """Every factor of ``quality`` by name, each in [0, 1]."""
    return {
        "dnsmos": mos_quality(mos),
        "bandwidth": measures.bandwidth_factor(m.bandwidth_hz),
        "pitch": measures.pitch_factor(m, expected),
        "pace": measures.pace_factor(
            m.speech_s / expected, (MIN_DURATION_RATIO, MAX_DURATION_RATIO)
        ),
        "clipping": measures.clipping_factor(m.clipped),
    }


class TTSEvaluator:
    """Scores one TTS answer against its prompt; the models are loaded once and reused."""

    def __init__(
        self,
        transcriber: Transcriber | None = None,
        dnsmos: DNSMOS | None = None,
        runtime: ScoringRuntime | None = None,
    ):
        self.runtime = shared_runtime(runtime, transcriber, dnsmos)
        self.transcriber = transcriber or Transcriber(self.runtime)
        self.dnsmos = dnsmos or DNSMOS(self.runtime)
        # The gates' first call pays librosa's lazy set-up (0.8 s here): pay it now, so the
        # first answer scored is timed like every later one.
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(ASR_RATE) / ASR_RATE)
        first_failure(tone.astype(np.float32), ASR_RATE)

    def evaluate(self, samples: np.ndarray, rate: int, challenge: SpeechChallenge) -> SpeechResult:
        """Score ``samples`` (any rate) as a reading of ``challenge.text``, in [0, 1]."""
        return self.evaluate_beside(samples, rate, challenge.text)[0]

    def evaluate_beside(
        self,
        samples: np.ndarray,
        rate: int,
        text: str,
        beside: Callable[[], T] | None = None,
        words: bool = False,
    ) -> tuple[SpeechResult, T | None]:
        """``evaluate``, also running ``beside()`` next to Whisper once the gates pass (the
        voice-cloning scorer's speaker checks): the result, and beside's result or None.
        ``words``: also place the words (the result's ``spoken_s``)."""
        start = time.perf_counter()
        audio, result = self._gate(samples, rate, text)
        if result.reason:
            result.seconds = time.perf_counter() - start
            return result, None

        audio16k = resample(audio, rate, ASR_RATE)  # both models work at 16 kHz
        # DNSMOS runs beside Whisper, each model call on a core of its own (the runtime's
        # slots): Whisper encodes on both cores, then decodes on one while DNSMOS takes the
        # other, and both once Whisper is done.
        quality: list[Future[dict[str, float]]] = []
        extra: list[Future[T]] = []

        def start_beside() -> None:
            quality.append(self.runtime.submit(self.dnsmos.score_whole, audio16k, ASR_RATE))
            if beside:
                extra.append(self.runtime.submit(self.runtime.on_a_core, beside))

        clip = [(audio16k, ASR_RATE)]
        heard = self.transcriber.transcripts(clip, encoded=start_beside, words=words)[0]
        # The signal measures (about 50 ms of CPU for 30 s) take a core while DNSMOS finishes.
        measured = self.runtime.on_a_core(partial(measures.measure, audio, audio16k))
        self._score(result, text, heard, quality[0].result(), measured, words)
        found = extra[0].result() if extra else None
        result.seconds = time.perf_counter() - start
        return result, found

    def evaluate_round(
        self, items: Sequence[tuple[np.ndarray, int, SpeechChallenge]]
    ) -> list[SpeechResult]:
        """``evaluate`` for each (samples, rate, challenge) of a round, the same scores, for
        less CPU: the answers share Whisper's decoding (``Transcriber.transcribe_many``)."""
        return [r for r, _ in self.evaluate_round_beside([(x, r, c.text) for x, r, c in items])]

    def evaluate_round_beside(
        self,
        items: Sequence[tuple[np.ndarray, int, str]],
        beside: Sequence[Callable[[], T] | None] | None = None,
        words: bool = False,
    ) -> list[tuple[SpeechResult, T | None]]:
        """``evaluate_beside`` for each (samples, rate, text) of a round, with ``beside[i]``
        run for item i if it passes the gates. Every answer is gated first, so junk never
        enters Whisper's batch nor costs a DNSMOS pass; the rest are transcribed together,
        and their DNSMOS passes, signal measures and beside work start once Whisper has
        encoded the first windows, on the cores decoding leaves.

        A result's ``seconds`` is its own gating plus an equal share of the models' time."""
        besides = list(beside) if beside is not None else [None] * len(items)
        if len(besides) != len(items):
            raise ValueError("one beside callable (or None) per item")

        def gate(samples: np.ndarray, rate: int, text: str) -> tuple:
            start = time.perf_counter()
            audio, result = self._gate(samples, rate, text)
            audio16k = None if result.reason else resample(audio, rate, ASR_RATE)
            result.seconds = time.perf_counter() - start
            return result, audio, audio16k

        # The gates (and resampling) of every answer, on the cores, before any model runs.
        gating = [self.runtime.submit(self.runtime.on_a_core, partial(gate, *it)) for it in items]
        out: list[tuple[SpeechResult, T | None]] = []
        scored = []  # (index, text, audio at 16 kHz, audio, beside) of those past the gates
        for i, (job, (_, _, text), extra) in enumerate(zip(gating, items, besides, strict=True)):
            result, audio, audio16k = job.result()
            out.append((result, None))
            if audio16k is not None:
                scored.append((i, text, audio16k, audio, extra))
        if not scored:
            return out

        start = time.perf_counter()
        jobs: list[tuple[Future[dict[str, float]], Future[measures.Measures], Future[T] | None]]
        jobs = []

        def start_beside() -> None:
            for _, _, audio16k, audio, extra in scored:
                jobs.append(
                    (
                        self.runtime.submit(self.dnsmos.score_whole, audio16k, ASR_RATE),
                        self.runtime.submit(
                            self.runtime.on_a_core, partial(measures.measure, audio, audio16k)
                        ),
                        self.runtime.submit(self.runtime.on_a_core, extra) if extra else None,
                    )
                )

        clips = [(audio16k, ASR_RATE) for _, _, audio16k, _, _ in scored]
        transcripts = self.transcriber.transcripts(clips, encoded=start_beside, words=words)
        for (i, text, *_), heard, (mos, measured, extra_job) in zip(
            scored, transcripts, jobs, strict=True
        ):
            result = out[i][0]
            self._score(result, text, heard, mos.result(), measured.result(), words)
            out[i] = (result, extra_job.result() if extra_job else None)
        share = (time.perf_counter() - start) / len(scored)
        for i, *_ in scored:
            out[i][0].seconds += share
        return out

    def _gate(self, samples: np.ndarray, rate: int, text: str) -> tuple[np.ndarray, SpeechResult]:
        """The answer as mono float, and its result: only the gate's verdict (``reason``)
        when a cheap check fails, else the durations, to be scored."""
        audio = to_mono_float(samples)
        seconds = audio.size / rate
        result = SpeechResult(duration_s=seconds, expected_s=expected_seconds(text))
        reason = first_failure(audio, rate) or duration_gate(seconds, text)
        if reason:
            result.gate = result.reason = reason
        return audio, result

    @staticmethod
    def _score(
        result: SpeechResult,
        text: str,
        heard: Transcript,
        mos: MOS,
        measured: measures.Measures,
        words: bool,
    ) -> None:
        """Fill in ``result`` from what the models heard and the signal measures (and where
        the words were spoken, if they were placed)."""
        wer = word_error_rate(text, heard.text)
        intelligibility = 1.0 - min(wer, 1.0)
        expected = expected_seconds(text)
        factors = quality_factors(mos, measured, expected)
        quality = float(np.prod(list(factors.values())))
        result.score = intelligibility * quality
        result.wer, result.transcript, result.mos = wer, heard.text, mos
        result.spoken_s = list(heard.spans) if words else None
        result.intelligibility, result.quality, result.factors = intelligibility, quality, factors
        result.bandwidth_hz, result.pitch_range = measured.bandwidth_hz, measured.pitch_range
        result.flattest_pitch_range = measured.flattest_pitch_range
        result.pace, result.clipped = measured.speech_s / expected, measured.clipped

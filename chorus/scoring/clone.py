"""Voice-cloning scoring: did the miner say the prompt (the TTS scorer), in the reference's
voice (speaker similarity), without cheating?

score = tts_score x speaker_score x stock_penalty x (1 - copied), where speaker_score maps
cosine similarity linearly from ``SIMILARITY_RANGE`` onto [0, 1], so different-speaker levels
(about 0.4-0.67) earn little.

An answer is as good as its worst part: the similarity scored is the whole answer's, but no
more than ``STRETCH_ALLOWANCE`` above its least similar stretch of ``STRETCH_PARTIALS``
consecutive partial embeddings (about 3.9 s of speech). The whole answer's embedding is a
mean, and a right clone for three quarters of an answer with another voice after it kept
all of its similarity. Honest clones' stretches vary too (their worst fell up to 0.073
below the whole under 8 s of speech, 0.115 on 30 s), so the allowance costs them nothing
under 14 s of speech and 0.7% of their speaker score above; numbers in
docs/voice-cloning.md.

The voice is judged where the words are too. Whisper places each word it reads
(faster-whisper's cross-attention alignment); an answer with more than ``MAX_WORDLESS_S``
of audible audio more than ``WORD_PAD_S`` away from every word gets its speaker checks
again on the audio near its words, and each measure counts at the worse of the two. Before,
anything besides the text paid: a scrambled copy of the reference (its voice, no words, in
40 ms pieces too short for the copy check) appended at -15 dB to an honest clone scored
100-129% of the clone alone. Most honest answers are silent away from their words and are
judged on the whole as before; where Whisper misplaces a read-out number at the end, the
worse of the two costs them a little.

Two cheats are caught on top of that:

- replaying or splicing the reference instead of speaking: the answer's log-mel frames are
  found in the reference in long runs of consecutive near-identical frames (``copied``);
  beyond ``MAX_COPIED`` the score is zero, below it the copied share is deducted. (Such an
  answer also has a high WER, but a splice of the right words would not.)
- returning the stock Piper voice: the evaluator embeds Piper itself reading a fixed
  paragraph and compares speakers; an answer that is nearer that stock voice than the
  reference by more than ``STOCK_MARGIN``, or one with a stretch of
  ``STOCK_STRETCH_PARTIALS`` partials (about 2.4 s of speech) nearer it by more than
  ``STOCK_STRETCH_MARGIN`` (a stock-voice tail), loses its score over the next
  ``STOCK_RAMP``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import librosa
import numpy as np

from chorus.audio import resample, to_mono_float
from chorus.piper import PiperTTS
from chorus.scoring.runtime import ScoringRuntime, shared_runtime
from chorus.scoring.tts import TTSEvaluator
from chorus.services.clone import CloneChallenge, CloneResult
from chorus.services.tts import SpeechResult
from chorus.speaker import SPEAKER_RATE, SpeakerEncoder
from chorus.voices import VoiceBank

SIMILARITY_RANGE = (0.6, 0.85)  # cosine scoring 0 and 1
MAX_COPIED = 0.25  # share of answer frames copied from the reference that zeroes the score
STOCK_MARGIN = 0.05  # how much nearer the stock voice than the reference an answer may be
STOCK_RAMP = 0.1  # beyond a stock margin, the score falls to zero over this much more
STRETCH_PARTIALS = 4  # partial embeddings (1.6 s, one every 0.77 s) in a stretch: ~3.9 s
STRETCH_ALLOWANCE = 0.10  # how far above its worst stretch an answer's similarity may count
STOCK_STRETCH_PARTIALS = 2  # the stock voice is far from any clone: shorter stretches, ~2.4 s
STOCK_STRETCH_MARGIN = 0.20  # how much nearer the stock voice than the reference a stretch may be
MAX_CACHED_REFERENCES = 32
COPY_DISTANCE = 2.0  # RMS dB difference per mel band under which two frames are the same audio
FLOOR_DB = 40.0
COPY_RUN = 10  # consecutive matching frames (100 ms) that make a copy, not a coincidence
HOP = 160  # 10 ms at 16 kHz
COPY_BLOCK = 2000
WORD_PAD_S = 0.3  # around each word Whisper placed: its alignment is coarse
MAX_WORDLESS_S = 0.5  # audible audio away from the words beyond this: judged without it
AUDIBLE_DB = -50.0  # a 10 ms frame above this (dB below the loudest) is audible


def _frames(samples: np.ndarray) -> np.ndarray:
    """(frames, 40) log-mel levels in dB relative to the loudest bin, floored ``FLOOR_DB``
    below it: a gain change does not hide a copy, and added hiss only touches the floor."""
    mel = librosa.feature.melspectrogram(
        y=samples, sr=SPEAKER_RATE, n_fft=512, hop_length=HOP, n_mels=40
    )
    db = librosa.power_to_db(mel, ref=np.max, top_db=FLOOR_DB)
    return db.T


def copied_fraction(answer: np.ndarray, reference: np.ndarray) -> float:
    """Share of the answer's audible frames that lie in runs of ``COPY_RUN`` or more
    consecutive frames matching consecutive reference frames (both 16 kHz).

    Replayed, cut or spliced reference audio matches along such diagonal runs; speech that
    merely sounds like the same person matches single frames at best.
    """
    a, r = _frames(answer), _frames(reference)
    if len(a) == 0 or len(r) == 0:
        return 0.0
    a, r = a.astype(np.float32), r.astype(np.float32)
    r2, limit = (r**2).sum(1), COPY_DISTANCE**2 * a.shape[1]
    run = np.zeros(len(r), dtype=np.int32)
    longest = np.zeros(len(a), dtype=np.int32)
    for start in range(0, len(a), COPY_BLOCK):  # blocks keep a 2-minute pair under 100 MB
        block = a[start : start + COPY_BLOCK]
        near = (block**2).sum(1)[:, None] + r2[None, :] - 2 * block @ r.T < limit
        for i, row in enumerate(near, start):
            run = np.where(row, np.concatenate(([0], run[:-1])) + 1, 0)
            longest[i] = run.max()
    copied = np.zeros(len(a), dtype=bool)
    for i in np.flatnonzero(longest >= COPY_RUN):
        copied[i - longest[i] + 1 : i + 1] = True
    rms = librosa.feature.rms(y=answer, hop_length=HOP, frame_length=512)[0][: len(a)]
    audible = rms > 0.05 * (rms.max() or 1.0)
    return float(copied[audible].mean()) if audible.any() else 0.0


def near_words(
    answer: np.ndarray, spoken: Sequence[tuple[float, float]]
) -> tuple[np.ndarray, float]:
    """Which samples of ``answer`` (16 kHz) lie within ``WORD_PAD_S`` of a word (``spoken``:
    (start, end) seconds), and the seconds of audible 10 ms frames away from every word.
    No words placed: every sample, and nothing away."""
    keep = np.zeros(answer.size, dtype=bool)
    for start, end in spoken:
        first = int(max(0.0, start - WORD_PAD_S) * SPEAKER_RATE)
        keep[first : int((end + WORD_PAD_S) * SPEAKER_RATE)] = True
    frames = answer.size // HOP
    if not keep.any() or frames == 0:
        return np.ones(answer.size, dtype=bool), 0.0
    rms = np.sqrt(np.mean(answer[: frames * HOP].reshape(frames, HOP) ** 2, axis=1))
    audible = rms > (rms.max() or 1.0) * 10 ** (AUDIBLE_DB / 20)
    away = ~keep[: frames * HOP].reshape(frames, HOP).any(axis=1)
    return keep, float((audible & away).sum() * HOP / SPEAKER_RATE)


def stretches(partials: np.ndarray, size: int) -> np.ndarray:
    """Unit embeddings of every run of ``size`` consecutive partial embeddings, sliding one
    partial at a time; fewer partials than ``size`` are one stretch (the whole answer)."""
    size = min(size, len(partials))
    if size == 0:
        return np.zeros((0, partials.shape[1]), dtype=np.float32)
    sums = np.cumsum(np.vstack([np.zeros((1, partials.shape[1])), partials]), axis=0)
    runs = sums[size:] - sums[:-size]
    return runs / np.linalg.norm(runs, axis=1, keepdims=True)


@dataclass(frozen=True)
class SpeakerChecks:
    """What the speaker checks found in one answer: its cosine to the reference (whole, and
    its least similar stretch), to the stock voice, how much nearer the stock voice than
    the reference its most stock-like short stretch is, and the share copied from the
    reference."""

    similarity: float
    worst_stretch_similarity: float
    stock_similarity: float
    stock_stretch_excess: float
    copied: float
    wordless_s: float | None = None  # audible seconds away from the words

    @classmethod
    def measure(
        cls,
        embedding: np.ndarray,
        partials: np.ndarray,
        reference: np.ndarray,
        stock: np.ndarray,
        copied: float,
    ) -> SpeakerChecks:
        """From the answer's embedding and partial embeddings (``embed_partials``) and the
        reference's and stock voice's embeddings. An answer without partials (no speech)
        is its whole."""
        similarity = float(embedding @ reference)
        stock_similarity = float(embedding @ stock)
        worst, excess = similarity, stock_similarity - similarity
        if len(partials):
            worst = float((stretches(partials, STRETCH_PARTIALS) @ reference).min())
            short = stretches(partials, STOCK_STRETCH_PARTIALS)
            excess = float((short @ stock - short @ reference).max())
        return cls(similarity, worst, stock_similarity, excess, copied)

    def worse(self, other: SpeakerChecks) -> SpeakerChecks:
        """Each measure at the worse of the two for the miner: judged near its words, an
        answer gains nothing from the voice away from them, and a wrong voice where the
        words were not placed (Whisper places a read-out number badly) still counts."""
        return SpeakerChecks(
            min(self.similarity, other.similarity),
            min(self.worst_stretch_similarity, other.worst_stretch_similarity),
            max(self.stock_similarity, other.stock_similarity),
            max(self.stock_stretch_excess, other.stock_stretch_excess),
            max(self.copied, other.copied),
        )

    def judged_similarity(self) -> float:
        """The similarity scored: the whole answer's, at most ``STRETCH_ALLOWANCE`` above its
        worst stretch."""
        return min(self.similarity, self.worst_stretch_similarity + STRETCH_ALLOWANCE)

    def stock_penalty(self) -> float:
        """1, falling to 0 over ``STOCK_RAMP`` once the answer is nearer the stock voice than
        the reference by ``STOCK_MARGIN``, or a short stretch is by ``STOCK_STRETCH_MARGIN``."""
        excess = max(
            self.stock_similarity - self.similarity - STOCK_MARGIN,
            self.stock_stretch_excess - STOCK_STRETCH_MARGIN,
        )
        return float(np.clip(1.0 - excess / STOCK_RAMP, 0.0, 1.0))


def speaker_score(similarity: float) -> float:
    lo, hi = SIMILARITY_RANGE
    return float(np.clip((similarity - lo) / (hi - lo), 0.0, 1.0))


class CloneEvaluator:
    """Scores one voice-cloning answer; models are loaded once and reused."""

    def __init__(
        self,
        tts_evaluator: TTSEvaluator | None = None,
        speaker: SpeakerEncoder | None = None,
        stock: PiperTTS | None = None,
        runtime: ScoringRuntime | None = None,
    ):
        self.runtime = shared_runtime(runtime, tts_evaluator)
        self.tts = tts_evaluator or TTSEvaluator(runtime=self.runtime)
        self.speaker = speaker or SpeakerEncoder()
        self.stock = stock or PiperTTS()
        self._stock_embedding: np.ndarray | None = None
        self._references: dict[bytes, np.ndarray] = {}  # every miner in a round shares one
        self._lock = threading.Lock()
        self.stock_embedding()  # at load, not in the first answer's evaluation time

    def stock_embedding(self) -> np.ndarray:
        """The stock Piper voice's embedding. A speaker embedding barely depends on the
        words, so one reading of a fixed paragraph stands for any text, and no answer pays
        for a fresh Piper synthesis."""
        with self._lock:
            if self._stock_embedding is None:
                audio, rate = self.stock.synthesize(" ".join(BENCH_TEXTS), noiseless=True)
                self._stock_embedding = self.speaker.embed(audio, rate)
            return self._stock_embedding

    def reference_embedding(self, ref: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(ref.tobytes()).digest()
        with self._lock:
            cached = self._references.get(key)
        if cached is None:
            cached = self.speaker.embed(ref, SPEAKER_RATE)
            with self._lock:
                if len(self._references) >= MAX_CACHED_REFERENCES:
                    self._references.pop(next(iter(self._references)))
                self._references[key] = cached
        return cached

    def evaluate(self, samples: np.ndarray, rate: int, challenge: CloneChallenge) -> CloneResult:
        """Score ``samples`` as the challenge's text spoken in the voice of its reference."""
        start = time.perf_counter()
        # The speaker checks run beside Whisper, once the answer has passed the gates.
        checks = self._speaker_checks(samples, rate, challenge)
        base, found = self.tts.evaluate_beside(samples, rate, challenge.text, checks, words=True)
        return self._result(base, self._near_words(challenge, base, found), start)

    def evaluate_round(
        self, items: Sequence[tuple[np.ndarray, int, CloneChallenge]]
    ) -> list[CloneResult]:
        """``evaluate`` for each (samples, rate, challenge) of a round, the same scores: the
        speech is scored as a round (``TTSEvaluator.evaluate_round_beside``), each answer's
        speaker checks beside it once the answer has passed the gates. ``seconds`` is the
        speech result's: its gating and a share of the round's models."""
        scored = self.tts.evaluate_round_beside(
            [(samples, rate, challenge.text) for samples, rate, challenge in items],
            [self._speaker_checks(*item) for item in items],
            words=True,
        )
        return [
            self._result(base, self._near_words(challenge, base, found), None)
            for (_, _, challenge), (base, found) in zip(items, scored, strict=True)
        ]

    def _speaker_checks(
        self, samples: np.ndarray, rate: int, challenge: CloneChallenge
    ) -> Callable[[], tuple[SpeakerChecks, np.ndarray]]:
        """The whole answer's speaker checks, to run beside Whisper once it has passed the
        gates, and the answer at 16 kHz they were made on (``_near_words`` may judge the
        voice again once Whisper has placed the words)."""

        def checks() -> tuple[SpeakerChecks, np.ndarray]:
            answer = resample(to_mono_float(samples), rate, SPEAKER_RATE)
            ref = _reference(challenge)
            return self._measure(answer, ref, copied_fraction(answer, ref)), answer

        return checks

    def _near_words(
        self,
        challenge: CloneChallenge,
        base: SpeechResult,
        found: tuple[SpeakerChecks, np.ndarray] | None,
    ) -> SpeakerChecks | None:
        """The whole answer's checks (None: gated), or, for an answer with more than
        ``MAX_WORDLESS_S`` of audible audio away from its words, each measure at the worse
        of those and the checks of the audio near the words (the copy check stays the
        whole answer's)."""
        if found is None or base.reason:
            return None
        checks, answer = found
        keep, away = near_words(answer, base.spoken_s or [])
        if away > MAX_WORDLESS_S:
            near = self._measure(answer[keep], _reference(challenge), checks.copied)
            checks = checks.worse(near)
        return replace(checks, wordless_s=away)

    def _measure(self, answer: np.ndarray, ref: np.ndarray, copied: float) -> SpeakerChecks:
        """The speaker checks of ``answer`` against ``ref`` (both 16 kHz): one encoder pass
        gives the whole answer's embedding and its stretches'."""
        embedding, partials = self.speaker.embed_partials(answer, SPEAKER_RATE)
        return SpeakerChecks.measure(
            embedding, partials, self.reference_embedding(ref), self.stock_embedding(), copied
        )

    @staticmethod
    def _result(
        base: SpeechResult, checks: SpeakerChecks | None, start: float | None
    ) -> CloneResult:
        """The clone result from the speech result and the speaker checks (None: gated);
        ``seconds`` since ``start``, or the speech result's when None."""
        result = CloneResult(**vars(base))
        result.score = 0.0
        if not base.reason and checks is not None:
            copied = checks.copied
            result.speaker_similarity = checks.similarity
            result.worst_stretch_similarity = checks.worst_stretch_similarity
            result.stock_similarity = checks.stock_similarity
            result.stock_stretch_excess = checks.stock_stretch_excess
            result.copied, result.tts_score = copied, base.score
            result.wordless_s = checks.wordless_s
            if copied > MAX_COPIED:
                result.reason = (
                    f"answer replays the reference recording ({copied:.0%} of it copied)"
                )
            else:
                result.stock_penalty = checks.stock_penalty()
                result.speaker_score = speaker_score(checks.judged_similarity())
                result.score = (
                    base.score * result.speaker_score * result.stock_penalty * (1 - copied)
                )
        if start is not None:
            result.seconds = time.perf_counter() - start
        return result


def _reference(challenge: CloneChallenge) -> np.ndarray:
    """The challenge's reference at 16 kHz."""
    return resample(to_mono_float(challenge.reference), challenge.reference_rate, SPEAKER_RATE)


BENCH_TEXTS = (
    "Our train leaves the station at half past seven every morning.",
    "She bought three green apples and a loaf of bread at the market.",
    "Could you please turn off the lights before you leave the office?",
)


@dataclass
class VoiceRow:
    """One voice of the bank, averaged over ``BENCH_TEXTS``."""

    voice: str
    description: str
    clone_similarity: float
    stock_similarity: float
    wer: float
    score: float


def voice_table(
    backend: Any, evaluator: CloneEvaluator, bank: VoiceBank, texts: Sequence[str] = BENCH_TEXTS
) -> list[VoiceRow]:
    """Clone every voice of ``bank`` with ``backend`` and score it: how close the clone is to
    the reference, how close unconverted Piper is, and the clone's WER and score."""
    rows = []
    for name in bank.voices:
        reference, ref_rate = bank.reference(name)
        stats = []
        for text in texts:
            audio, rate = backend.clone(text, reference, ref_rate)
            result = evaluator.evaluate(audio, rate, CloneChallenge(text, reference, ref_rate))
            stock, stock_rate = evaluator.stock.synthesize(text)
            stock_sim = evaluator.speaker.similarity(stock, stock_rate, reference, ref_rate)
            sim, wer = result.speaker_similarity, result.wer
            stats.append((sim or 0.0, stock_sim, 1.0 if wer is None else wer, result.score))
        mean = np.mean(stats, axis=0)
        rows.append(VoiceRow(name, bank.describe(name), *(round(float(v), 3) for v in mean)))
    return rows


def format_voice_table(rows: list[VoiceRow]) -> str:
    """A Markdown table of ``voice_table`` rows with a mean row at the bottom."""
    lines = [
        "| voice | speaker | similarity of clone | similarity of stock Piper | WER | score |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.voice} | {r.description} | {r.clone_similarity:.3f} | "
            f"{r.stock_similarity:.3f} | {r.wer:.3f} | {r.score:.3f} |"
        )
    means = np.mean([[r.clone_similarity, r.stock_similarity, r.wer, r.score] for r in rows], 0)
    lines.append("| **mean** | | " + " | ".join(f"**{v:.3f}**" for v in means) + " |")
    return "\n".join(lines)

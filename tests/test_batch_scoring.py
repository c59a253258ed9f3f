"""Scoring a round at once gives every answer the score it gets alone: Whisper's batched
decoding gives each answer the transcript it gets alone (also past one 30 s window), junk
in the round changes no honest answer's score, and junk is gated before any model sees
it."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.prompts import speech_text
from chorus.scoring.asr import Transcriber
from chorus.scoring.clone import CloneEvaluator
from chorus.scoring.quality import DNSMOS
from chorus.scoring.tts import TTSEvaluator
from chorus.services import RoundEvaluator, evaluate_round
from chorus.services.clone import CloneChallenge
from chorus.services.tts import SpeechChallenge, SpeechResult
from chorus.speaker import SpeakerEncoder

# Seconds of speech per honest answer: one to two Whisper windows (33 s needs a second one,
# which starts where the first window's last whole segment ended).
SECONDS = (3, 6, 10, 15, 22, 33)


@pytest.fixture(scope="module")
def honest(piper, degraded) -> list[tuple[np.ndarray, int, SpeechChallenge]]:
    """Piper reading texts of several lengths, and one degraded (telephone band, hiss)."""
    items = []
    for n, seconds in enumerate(SECONDS):
        text = speech_text(seconds, seed=40 + n)
        items.append((*piper.synthesize(text), SpeechChallenge(text)))
    text = speech_text(8, seed=60)
    items.append((*degraded.synthesize(text), SpeechChallenge(text)))
    return items


@pytest.fixture(scope="module")
def singles(tts_evaluator, honest) -> list[SpeechResult]:
    """Each honest answer scored alone."""
    return [tts_evaluator.evaluate(*item) for item in honest]


def _same(a: SpeechResult, b: SpeechResult) -> None:
    assert a.reason is None and b.reason is None
    assert a.score == pytest.approx(b.score, abs=1e-3), (a.transcript, b.transcript)
    assert a.wer == pytest.approx(b.wer, abs=1e-3), (a.transcript, b.transcript)
    assert a.mos and b.mos and a.mos.p808 == pytest.approx(b.mos.p808, abs=1e-4)


def test_round_scores_equal_single_scores(tts_evaluator, honest, singles) -> None:
    assert isinstance(tts_evaluator, RoundEvaluator)
    assert max(x.size / rate for x, rate, _ in honest) > 30  # one takes two windows
    batched = evaluate_round(tts_evaluator, honest)
    assert len(batched) == len(honest)
    for one, many in zip(singles, batched, strict=True):
        _same(one, many)
        assert many.transcript == one.transcript
        assert many.seconds > 0.0


def _junk(piper, honest) -> list[tuple[np.ndarray, int, SpeechChallenge]]:
    """Silence, noise, a truncated answer (gated) and speech of another text (not gated:
    Whisper hears it and WER zeroes it), each for the challenge of an honest answer."""
    x, rate, challenge = honest[2]
    other = speech_text(10, seed=99)
    return [
        (np.zeros(5 * rate, np.float32), rate, challenge),
        (np.random.default_rng(0).normal(0, 0.1, 5 * rate).astype(np.float32), rate, challenge),
        (x[: rate // 2], rate, challenge),
        (*piper.synthesize(other), challenge),
    ]


def test_junk_in_the_round_changes_no_honest_score(tts_evaluator, piper, honest, singles):
    junk = _junk(piper, honest)
    picked = [1, 2, 5]  # honest answers mixed in among the junk
    items = [junk[0], honest[1], junk[1], honest[2], junk[2], junk[3], honest[5]]
    results = tts_evaluator.evaluate_round(items)
    for i, result in zip(picked, (results[1], results[3], results[6]), strict=True):
        _same(singles[i], result)
    silent, noise, short, wrong = results[0], results[2], results[4], results[5]
    for gated, word in ((silent, "silent"), (noise, "noise"), (short, "too short")):
        assert gated.score == 0.0 and gated.gate == gated.reason and word in gated.reason
        assert gated.wer is None and gated.mos is None  # no model ran on it
    assert wrong.reason is None and wrong.wer >= 0.7 and wrong.score <= 0.2


class CountingTranscriber(Transcriber):
    """The session's transcriber (same loaded model), noting the clips Whisper is given."""

    def __init__(self, base: Transcriber, events: list):
        self.__dict__.update(vars(base))
        self.events = events

    def transcripts(self, clips, encoded=None, words=False):
        self.events.append(("whisper", [round(x.size / rate, 2) for x, rate in clips]))
        return super().transcripts(clips, encoded, words)


class CountingDNSMOS(DNSMOS):
    """The session's DNSMOS (same loaded models), noting each clip it scores."""

    def __init__(self, base: DNSMOS, events: list):
        self.__dict__.update(vars(base))
        self.events = events

    def score_whole(self, samples, rate):
        self.events.append(("dnsmos", round(samples.size / rate, 2)))
        return super().score_whole(samples, rate)


class GateOrder(TTSEvaluator):
    """Notes each answer it gates (the gates run on the cores, two at a time)."""

    def __init__(self, transcriber, dnsmos, events: list):
        super().__init__(transcriber, dnsmos)
        self.events = events

    def _gate(self, samples, rate, text):
        self.events.append(("gate", round(len(samples) / rate, 2)))
        return super()._gate(samples, rate, text)


def test_gates_run_before_any_batch_and_junk_reaches_no_model(
    transcriber, dnsmos, piper, honest
) -> None:
    events: list = []
    evaluator = GateOrder(
        CountingTranscriber(transcriber, events), CountingDNSMOS(dnsmos, events), events
    )
    junk = _junk(piper, honest)
    items = [junk[0], honest[0], junk[1], junk[2], honest[1]]
    results = evaluator.evaluate_round(items)
    gated = [r for r in results if r.gate]
    assert len(gated) == 3
    seconds = [x.size / rate for x, rate, _ in (honest[0], honest[1])]
    assert [e for e, _ in events[:6]] == ["gate"] * 5 + ["whisper"]  # every gate came first
    assert events[5][1] == pytest.approx(seconds, abs=0.01)  # only the honest answers
    assert sorted(d for e, d in events if e == "dnsmos") == pytest.approx(sorted(seconds), abs=0.01)
    assert len(events) == 8


def test_a_round_without_any_scorable_answer_runs_no_model(transcriber, dnsmos, piper, honest):
    events: list = []
    evaluator = GateOrder(
        CountingTranscriber(transcriber, events), CountingDNSMOS(dnsmos, events), events
    )
    results = evaluator.evaluate_round(_junk(piper, honest)[:3])
    assert all(r.score == 0.0 and r.gate for r in results)
    assert [e for e, _ in events] == ["gate"] * 3
    assert evaluate_round(evaluator, []) == []


def test_batched_transcripts_equal_single_ones_past_one_window(
    transcriber, piper, degraded
) -> None:
    """Longer answers, decoded together: each window continues where it would alone."""
    clips = [piper.synthesize(speech_text(47, seed=70)), degraded.synthesize(speech_text(36, 80))]
    assert min(x.size / rate for x, rate in clips) > 30
    assert transcriber.transcribe_many(clips) == [transcriber.transcribe(*c) for c in clips]
    assert transcriber.transcribe_many([]) == []


class OneByOne:
    """An evaluator without a round method: ``evaluate_round`` loops over ``evaluate``."""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, samples, rate, challenge) -> SpeechResult:
        self.calls += 1
        return SpeechResult(score=float(samples.mean()))


def test_evaluate_round_falls_back_to_one_answer_at_a_time() -> None:
    evaluator = OneByOne()
    assert not isinstance(evaluator, RoundEvaluator)
    items = [(np.full(4, v, np.float32), 8000, SpeechChallenge("hi")) for v in (0.1, 0.2)]
    results = evaluate_round(evaluator, items)
    assert [r.score for r in results] == pytest.approx([0.1, 0.2]) and evaluator.calls == 2


def test_clone_round_scores_equal_single_scores(tts_evaluator, piper) -> None:
    """Voice cloning shares the speech round; the speaker checks run per answer, beside it.
    A Piper reading stands for the reference: honest answers are Piper too, a replay of the
    reference is caught as copied, and silence is gated before any speaker check."""
    evaluator = CloneEvaluator(tts_evaluator, SpeakerEncoder(), piper)
    assert isinstance(evaluator, RoundEvaluator)
    reference, ref_rate = piper.synthesize(speech_text(12, seed=90))
    items = []
    for n, seconds in enumerate((4, 9)):
        text = speech_text(seconds, seed=91 + n)
        items.append((*piper.synthesize(text), CloneChallenge(text, reference, ref_rate)))
    replay = CloneChallenge(speech_text(12, seed=90), reference, ref_rate)
    items += [(reference, ref_rate, replay), (np.zeros(ref_rate * 3, np.float32), ref_rate, replay)]
    singles = [evaluator.evaluate(*item) for item in items]
    batched = evaluate_round(evaluator, items)
    for one, many in zip(singles, batched, strict=True):
        assert many.score == pytest.approx(one.score, abs=1e-3)
        assert many.reason == one.reason and many.speaker_similarity == one.speaker_similarity
    assert batched[0].score > 0.3 and batched[1].score > 0.3
    assert "replays" in (batched[2].reason or "") and batched[2].score == 0.0
    assert batched[3].gate and batched[3].speaker_similarity is None

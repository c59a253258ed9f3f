"""The signal measures judge an answer by its worst stretch: a few seconds of clean speech
must not pay for narrowband or monotone speech over the rest (real Piper, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from chorus import degrade
from chorus.audio import resample, to_mono_float
from chorus.piper import PiperTTS
from chorus.prompts import expected_seconds, speech_text
from chorus.scoring import measures

LONG_TEXT = speech_text(20, seed=101)
LONG_S = expected_seconds(LONG_TEXT)  # what the prompt needs: pitch is judged
SHORT_TEXTS = [
    "The children laughed as the kite climbed higher above the hills.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A gentle breeze carried the smell of fresh bread through the narrow street.",
]


@pytest.fixture(scope="module")
def voice() -> PiperTTS:
    """Its own seeded voice: the shared one's draws depend on which tests ran before."""
    return PiperTTS(seed=3)


@pytest.fixture(scope="module")
def long_reading(voice: PiperTTS) -> tuple[np.ndarray, int]:
    """About 20 s of Piper reading a seeded prompt, as mono float."""
    samples, rate = voice.synthesize(LONG_TEXT)
    return to_mono_float(samples), rate


def _measure(samples: np.ndarray, rate: int) -> measures.Measures:
    samples = to_mono_float(samples)
    return measures.measure(samples, resample(samples, rate, measures.RATE))


def _damaged_from(samples: np.ndarray, rate: int, seconds: float, damage) -> np.ndarray:
    """The honest head up to a pause near ``seconds``, then ``damage`` over the rest."""
    i = degrade.quiet_point(samples, rate, int(seconds * rate))
    tail, tail_rate = damage(samples[i:], rate)
    return np.concatenate([samples[:i], resample(to_mono_float(tail), tail_rate, rate)])


def _alternate(samples: np.ndarray, rate: int, every: float, damage) -> np.ndarray:
    """``damage`` over every other ``every``-second stretch (cut at pauses)."""
    length = samples.size / rate
    at = np.arange(every, length - 1.0, every)
    cuts = [0, *(degrade.quiet_point(samples, rate, int(t * rate)) for t in at)]
    cuts.append(samples.size)
    parts = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        part = samples[a:b]
        if k % 2:
            damaged, damaged_rate = damage(part, rate)
            part = resample(to_mono_float(damaged), damaged_rate, rate)[: b - a]
        parts.append(part)
    return np.concatenate(parts)


def test_honest_answers_keep_full_bandwidth_and_pitch_credit(voice, long_reading) -> None:
    readings = [(text, voice.synthesize(text)) for text in SHORT_TEXTS]
    for text, (samples, rate) in [*readings, (LONG_TEXT, long_reading)]:
        m = _measure(samples, rate)
        assert measures.bandwidth_factor(m.bandwidth_hz) == 1.0, m
        assert measures.pitch_factor(m, expected_seconds(text)) == 1.0, m


def test_a_second_of_honest_speech_keeps_its_pitch_credit() -> None:
    """DIO finds 1-15 loud voiced frames in Piper's "Hello from chorus." (1 s of speech),
    spread over 0.8-4.2 semitones, as a monotone's may be: the answer scored 0 to 0.9 from
    one reading to the next (pitch credit 0 under 10 frames, else spread / 3). So a text
    that short is not judged by pitch; a monotone reading of a sentence still is, and so
    is a monotone squeezed into a second, answering that sentence."""
    voice, short = PiperTTS(seed=1), "Hello from chorus."
    for _ in range(6):
        m = _measure(*voice.synthesize(short))
        assert measures.pitch_factor(m, expected_seconds(short)) == 1.0, m
    sentence = SHORT_TEXTS[0]
    robotic = degrade.monotone(*voice.synthesize(sentence))
    for cheat in (robotic, degrade.time_stretch(*robotic, 3.0)):
        m = _measure(*cheat)
        assert measures.pitch_factor(m, expected_seconds(sentence)) <= 0.6, m


def test_pitch_credit_moves_smoothly_with_the_voiced_frames() -> None:
    """The whole answer's spread counts in proportion to the voiced frames it rests on:
    no step where one more frame halves the credit."""
    spread = measures.FULL_PITCH_RANGE / 2  # half credit over a whole answer, full in a stretch

    def credit(frames: int) -> float:
        m = measures.Measures(7000.0, spread, spread, frames, 5.0, 0.0)
        return measures.pitch_factor(m, LONG_S)

    credits = [credit(n) for n in range(0, 2 * measures.STRETCH_FRAMES)]
    assert credits[0] == 1.0 and credits[-1] == 0.5
    steps = np.diff(credits)
    assert np.all(steps <= 0) and np.all(steps > -0.02), steps


@pytest.mark.parametrize(
    "damage, seconds",
    [
        (degrade.mu_law, 2.0),  # an 8 kHz codec after the first 2 s
        (degrade.telephone, 10.0),  # the telephone band over the second half
        (lambda x, rate: degrade.low_pass(x, rate, 2000.0), 5.0),
    ],
    ids=["mu-law after 2 s", "telephone second half", "2 kHz low-pass after 5 s"],
)
def test_narrowband_after_a_wideband_start_loses_bandwidth_credit(
    long_reading, damage, seconds
) -> None:
    """The long-term spectrum over the whole answer still reached 7.6 kHz, full credit."""
    samples, rate = long_reading
    cheat = _measure(_damaged_from(samples, rate, seconds, damage), rate)
    whole = _measure(damage(samples, rate)[0], rate)
    assert measures.bandwidth_factor(cheat.bandwidth_hz) <= 0.8, cheat
    # Judged like the whole answer damaged the same way, within a few hundred Hz.
    assert abs(cheat.bandwidth_hz - whole.bandwidth_hz) <= 300, (cheat, whole)


def test_narrowband_every_other_stretch_loses_bandwidth_credit(long_reading) -> None:
    samples, rate = long_reading
    cheat = _measure(_alternate(samples, rate, 4.0, degrade.telephone), rate)
    assert measures.bandwidth_factor(cheat.bandwidth_hz) <= 0.8, cheat


@pytest.mark.parametrize("seconds", [10.0, 8.0], ids=["second half", "all but the first 8 s"])
def test_monotone_over_the_rest_loses_pitch_credit(long_reading, seconds: float) -> None:
    """The natural head gave the whole answer a reader's pitch spread."""
    samples, rate = long_reading
    cheat = _measure(_damaged_from(samples, rate, seconds, degrade.monotone), rate)
    assert cheat.pitch_range >= measures.FULL_PITCH_RANGE, cheat  # the whole still spreads
    assert measures.pitch_factor(cheat, LONG_S) <= 0.6, cheat


def test_monotone_every_other_stretch_loses_pitch_credit(long_reading) -> None:
    samples, rate = long_reading
    cheat = _measure(_alternate(samples, rate, 4.0, degrade.monotone), rate)
    assert measures.pitch_factor(cheat, LONG_S) <= 0.7, cheat


def test_half_monotone_answer_is_paid_less_by_the_scorer(tts_evaluator, long_reading) -> None:
    """The flattest stretch reaches the score (``quality_factors``), not only the measure."""
    from chorus.services.tts import SpeechChallenge

    samples, rate = long_reading
    text = speech_text(20, seed=101)
    cheat = _damaged_from(samples, rate, samples.size / rate / 2, degrade.monotone)
    honest = tts_evaluator.evaluate(samples, rate, SpeechChallenge(text))
    robotic = tts_evaluator.evaluate(cheat, rate, SpeechChallenge(text))
    assert honest.factors["pitch"] == 1.0 and honest.factors["bandwidth"] == 1.0, honest
    assert robotic.factors["pitch"] <= 0.6, robotic
    assert robotic.score <= 0.6 * honest.score, (honest, robotic)
    # The result shows the miner why: its flattest stretch, not only the whole spread.
    assert robotic.flattest_pitch_range < measures.FULL_STRETCH_PITCH_RANGE < robotic.pitch_range

"""TTS scoring with the real models: Piper reading its prompts scores high; silence, noise,
the wrong text, clipping and truncated or padded audio score (near) zero."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.scoring import gates
from chorus.scoring.quality import MOS
from chorus.scoring.tts import TTSEvaluator
from chorus.services.tts import SpeechChallenge
from chorus.text import spell_out

# Written the way the prompt generator writes them; spelled out before synthesis.
TEXTS = [
    "The meeting starts at 3:30 p.m. on March 3rd, 2024.",
    "Tickets cost $12.50 each, or £40 for a family of four.",
    "Our revenue grew by 12.5% in 1999, the best year since 1987.",
    "She finished 2nd in the race and won €1,250 in prize money.",
    "Olivia bought 37 paintings for $104.75 at the market square.",
    "On 2023-07-14 the bridge reopened after 18 months of repairs.",
    "A gentle breeze carried the smell of fresh bread through the narrow street.",
    "We expect Victor at the museum at 10:45 on the 21st of June.",
]
PROMPT = spell_out(TEXTS[0])


@pytest.fixture(scope="module")
def readings(piper) -> list[tuple[np.ndarray, int, str]]:
    """Piper reading each spelled-out text: (samples, rate, text)."""
    return [(*piper.synthesize(spell_out(t)), spell_out(t)) for t in TEXTS]


@pytest.fixture(scope="module")
def speech(readings) -> tuple[np.ndarray, int]:
    """Piper reading ``PROMPT``."""
    return readings[0][0], readings[0][1]


def test_piper_reading_its_prompts_scores_high(tts_evaluator: TTSEvaluator, readings) -> None:
    results = [tts_evaluator.evaluate(x, rate, SpeechChallenge(text)) for x, rate, text in readings]
    wers = [r.wer for r in results]
    scores = [r.score for r in results]
    assert np.mean(wers) <= 0.10, [r.transcript for r in results]
    assert np.mean(scores) >= 0.7 and min(scores) >= 0.5, scores
    for r in results:
        assert r.reason is None and r.gate is None
        assert isinstance(r.mos, MOS) and 1.0 <= r.mos.p808 <= 5.0 and 1.0 <= r.mos.ovrl <= 5.0
        assert r.duration_s > 1
        assert 0.0 <= r.score <= 1.0 and r.transcript


def test_speech_of_another_text_scores_low(tts_evaluator, readings) -> None:
    other, rate, _ = readings[5]
    result = tts_evaluator.evaluate(other, rate, SpeechChallenge(PROMPT))
    assert result.score <= 0.2 and result.wer >= 0.7


def test_degraded_voice_ranks_below_clean(tts_evaluator, speech, degraded) -> None:
    hissy, rate = degraded.synthesize(PROMPT)
    clean = tts_evaluator.evaluate(*speech, SpeechChallenge(PROMPT))
    worse = tts_evaluator.evaluate(hissy, rate, SpeechChallenge(PROMPT))
    assert worse.reason is None  # still speech: judged, not gated
    assert clean.score > worse.score + 0.05
    assert clean.quality > worse.quality + 0.3


def _bad_inputs(speech: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "silent": np.zeros(4 * rate, np.float32),
        "noise-like": rng.normal(0, 0.1, 4 * rate).astype(np.float32),
        "clipped": np.clip(speech * 20, -1, 1),
        "too short": speech[: rate // 2],
        "too long": np.tile(speech, 5),
        "empty": np.zeros(0, np.float32),
        "NaN": np.where(np.arange(speech.size) == 100, np.nan, speech).astype(np.float32),
    }


@pytest.mark.parametrize(
    "kind", ["silent", "noise-like", "clipped", "too short", "too long", "empty", "NaN"]
)
def test_bad_audio_is_gated(tts_evaluator, speech, kind: str) -> None:
    samples, rate = speech
    result = tts_evaluator.evaluate(_bad_inputs(samples, rate)[kind], rate, SpeechChallenge(PROMPT))
    assert result.score == 0.0 and result.reason and result.gate == result.reason
    assert kind.split("-")[0].split()[-1] in result.reason or kind == "NaN"
    assert result.wer is None and result.mos is None  # no model ran on junk


def _noise(colour: float, rate: int, seconds: float = 3.0) -> np.ndarray:
    """Noise with power falling as 1/f**colour (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(np.random.default_rng(1).normal(size=int(rate * seconds)))
    spectrum /= np.maximum(np.arange(spectrum.size), 1) ** (colour / 2)
    x = np.fft.irfft(spectrum)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("colour", [0.0, 1.0, 1.5, 2.0])
def test_noise_of_any_colour_is_noise_like(colour: float) -> None:
    assert gates.noise_like(_noise(colour, 22050), 22050)


def test_speech_and_tones_pass_every_gate(speech, degraded) -> None:
    samples, rate = speech
    hissy, _ = degraded.synthesize(PROMPT)
    t = np.arange(3 * rate) / rate
    chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    for audio in (samples, hissy, chord.astype(np.float32)):
        assert gates.first_failure(audio, rate) is None


def test_beside_work_runs_only_for_answers_past_the_gates(tts_evaluator, speech) -> None:
    """The voice-cloning checks ride along with Whisper, but junk never pays for them."""
    calls = []
    samples, rate = speech
    score, extra = tts_evaluator.evaluate_beside(
        samples, rate, PROMPT, lambda: calls.append("ran") or 42
    )
    assert score.reason is None and extra == 42 and calls == ["ran"]
    silence = np.zeros(3 * rate, dtype=np.float32)
    score, extra = tts_evaluator.evaluate_beside(silence, rate, PROMPT, lambda: calls.append(1))
    assert score.score == 0.0 and score.reason and extra is None and calls == ["ran"]


def test_noise_over_the_second_half_of_a_long_answer_costs_it(tts_evaluator, piper) -> None:
    """A 28 s answer with noise (5 dB below the speech) from 16 s on: DNSMOS as speechmos
    runs it never heard that part, and the answer was paid as much as the clean one."""
    from chorus.audio import to_mono_float
    from chorus.prompts import speech_text

    text = speech_text(30, seed=5)
    samples, rate = piper.synthesize(text)
    clean = to_mono_float(samples)
    noise = np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    noisy = clean.copy()
    noisy[16 * rate :] += noise[16 * rate :] * 0.56 * float(np.sqrt(np.mean(clean**2)))
    honest = tts_evaluator.evaluate(clean, rate, SpeechChallenge(text))
    cheat = tts_evaluator.evaluate(noisy, rate, SpeechChallenge(text))
    assert honest.score > 0.6 and cheat.score < 0.7 * honest.score, (honest, cheat)

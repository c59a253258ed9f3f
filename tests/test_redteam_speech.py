"""The speech red team (issue 14) as `chorus redteam` runs it (cloning: a seeded subset),
with the real models: clean, natural speech clearly beats noisy, band-limited, codec-damaged,
clipped, reverberant, mis-paced and robotic speech of the same words, also when only part of
an answer is damaged (on long answers too), every degradation ladder falls strictly, the
cloning cheats earn (next to) nothing, and a real person reading a text earns no less than
Piper reading it.
"""

from __future__ import annotations

import importlib.util
from importlib import resources

import numpy as np
import pytest

from chorus import degrade
from chorus.audio import read, resample
from chorus.piper import PiperTTS
from chorus.prompts import expected_seconds
from chorus.redteam import DEFAULT_CASES, DEFAULT_SEED, Rung, ServiceReport, attack_service
from chorus.scoring import measures
from chorus.services import get
from chorus.services.tts import LONG_CASE_EVERY, SpeechChallenge
from chorus.voices import FESTIVAL_PACKAGES, VoiceBank

CASES = 2
# The speech claims are set for the mean of DEFAULT_CASES prompts (`chorus redteam` judges
# no fewer): two short ones decided it alone, and any change to Whisper's decoding moved
# those two answers' word errors by 0.2 either way.
TTS_CASES, TTS_SEED = DEFAULT_CASES, DEFAULT_SEED
# Seed 0 draws the voices mv and slt (a man and a woman, both unlike Piper: the pair
# tests/test_clone.py uses); on the bank's hardest voices (ona, lp) the WORLD cloner's
# similarity is near the scorer's zero and shares of a near-zero score say nothing.
CLONE_SEED = 0
# Damage to part of an answer, and the most of the honest score each may keep (the
# service's bounds, stated here too so that loosening one shows).
PARTIAL_BOUNDS = {
    "second half noise 10 dB SNR": 0.88,
    "second half reverb RT60 1.2 s": 0.7,
    "telephone band after 1 s": 0.85,
    "second half robotic": 0.7,
}
# On each long case (an answer over 16 s, judged by DNSMOS's worst 16 s part) noise or
# reverberation over its second half keeps at most this of its honest score: 19-68% over
# seeds 11-17; with DNSMOS as speechmos runs it (the first 15 s heard), 89-100%.
LONG_PART_SHARE = 0.8

# CMU ARCTIC awb reading arctic_a0007, shipped in pysptk's sdist and wheel (its example file).
HUMAN_TEXT = "And you always want to see it in the superlative degree."
READING_TEXT = "The children laughed as the kite climbed higher above the hills."


def _rung(report: ServiceReport, name: str) -> Rung:
    return next(r for r in report.rungs if r.name == name)


def _share(report: ServiceReport, name: str) -> float:
    return _rung(report, name).share


def _ladders(report: ServiceReport) -> dict[str, list[float]]:
    """Each ladder's means, honest first."""
    out: dict[str, list[float]] = {}
    for r in report.rungs:
        if r.ladder:
            out.setdefault(r.ladder, [report.honest.mean]).append(r.mean)
    return out


@pytest.fixture(scope="module")
def tts_report(runtime) -> ServiceReport:
    return attack_service(get("tts"), TTS_CASES, TTS_SEED, runtime)


@pytest.fixture(scope="module")
def clone_report(runtime) -> ServiceReport:
    bank = VoiceBank.builtin()
    if len(bank.voices) < 2:
        pytest.skip(f"Festival voices missing; apt-get install {' '.join(FESTIVAL_PACKAGES)}")
    return attack_service(get("clone"), CASES, CLONE_SEED, runtime)


def test_tts_red_team_claims_hold(tts_report: ServiceReport) -> None:
    assert tts_report.failures == [], tts_report.failures
    # The numbers, stated here too so that loosening a service bound shows.
    assert tts_report.honest.mean >= 0.85
    assert _share(tts_report, "noise 10 dB SNR") <= 0.6
    assert _share(tts_report, "telephone band 300-3400 Hz") <= 0.85
    assert _share(tts_report, "8 kHz mu-law codec") <= 0.85
    assert _share(tts_report, "robotic (monotone vocoder)") <= 0.6
    ladders = _ladders(tts_report)
    assert {"noise", "band", "codec", "clipping", "reverb", "too fast", "too slow"} <= set(ladders)
    for name, means in ladders.items():
        assert all(a > b for a, b in zip(means, means[1:], strict=False)), (name, means)
    assert _share(tts_report, "words shuffled") <= 0.3
    assert _share(tts_report, "another text") <= 0.1
    for name, bound in PARTIAL_BOUNDS.items():
        assert _share(tts_report, name) <= bound, (name, _share(tts_report, name))


def test_tts_red_team_hears_every_part_of_a_long_answer(tts_report: ServiceReport) -> None:
    """The long cases' own shares: the rungs' means mix in short answers, whose DNSMOS
    hears noise over half of them weakly, so they guard DNSMOS's parts loosely."""
    honest = tts_report.honest.scores
    long_cases = range(LONG_CASE_EVERY - 1, TTS_CASES, LONG_CASE_EVERY)
    assert len(long_cases) >= 2
    for name in ("second half noise 10 dB SNR", "second half reverb RT60 1.2 s"):
        scores = _rung(tts_report, name).scores
        for i in long_cases:
            assert scores[i] <= LONG_PART_SHARE * honest[i], (name, i, scores[i], honest[i])


def test_clone_red_team_claims_hold(clone_report: ServiceReport) -> None:
    assert clone_report.failures == [], clone_report.failures
    assert clone_report.honest.mean >= 0.2
    assert _share(clone_report, "reference replayed") <= 0.05
    assert _share(clone_report, "reference spliced") <= 0.05
    assert _share(clone_report, "stock Piper voice") <= 0.1
    assert _share(clone_report, "stock voice pitched to the reference") <= 0.5
    assert _share(clone_report, "another bank voice's clone") <= 0.5
    assert _share(clone_report, "right clone, noise 10 dB SNR") <= 0.6
    assert _share(clone_report, "right clone, its voice without words after it") <= 1.0


def _human_recording() -> tuple[np.ndarray, int]:
    if importlib.util.find_spec("pysptk") is None:
        pytest.skip("needs pysptk==1.0.1 (the dev extra): it ships the CMU ARCTIC recording")
    path = resources.files("pysptk") / "example_audio_data" / "arctic_a0007.wav"
    if not path.is_file():
        pytest.skip("this pysptk build does not ship example_audio_data/arctic_a0007.wav")
    with resources.as_file(path) as file:
        return read(file)


def test_real_read_speech_scores_no_lower_than_piper(tts_evaluator, piper) -> None:
    """DNSMOS prefers Piper's studio-clean synthesis to a real recording (P.808 4.3 against
    3.8); above the knee that must not cost the person anything."""
    human, rate = _human_recording()
    challenge = SpeechChallenge(HUMAN_TEXT)
    person = tts_evaluator.evaluate(human, rate, challenge)
    synthetic = tts_evaluator.evaluate(*piper.synthesize(HUMAN_TEXT), challenge)
    assert person.reason is None and person.wer <= 0.1, person
    assert person.score >= synthetic.score, (person, synthetic)
    assert person.score >= 0.9 and person.factors and min(person.factors.values()) == 1.0, person


# -- the measures and degradations, without the models -------------------------------------


@pytest.fixture(scope="module")
def reading() -> tuple[np.ndarray, int]:
    """Its own seeded voice: the shared one's draws depend on which tests ran before."""
    return PiperTTS(seed=5).synthesize(READING_TEXT)


def _measure(audio: tuple[np.ndarray, int]) -> measures.Measures:
    samples, rate = audio
    return measures.measure(samples, resample(samples, rate, measures.RATE))


def test_bandwidth_reads_the_band_that_carries_speech(reading) -> None:
    full = _measure(reading).bandwidth_hz
    telephone = _measure(degrade.telephone(*reading)).bandwidth_hz
    low = _measure(degrade.low_pass(*reading, 2000.0)).bandwidth_hz
    codec = _measure(degrade.mu_law(*reading)).bandwidth_hz
    assert full >= measures.FULL_BANDWIDTH_HZ, full
    assert 3400 <= telephone <= 4200 and 3400 <= codec <= 4100, (telephone, codec)
    assert 2000 <= low <= 2700, low
    # Hiss is not bandwidth: it masks the speech above a few kHz.
    assert _measure(degrade.white_noise(*reading, 10.0)).bandwidth_hz < 3000
    assert measures.bandwidth_factor(full) == 1.0
    assert 0.7 <= measures.bandwidth_factor(telephone) <= 0.8


def test_pitch_range_tells_a_monotone_from_a_reading(reading) -> None:
    natural, robotic = _measure(reading), _measure(degrade.monotone(*reading))
    assert natural.pitch_range >= 5.0 and robotic.pitch_range <= 1.5, (natural, robotic)
    expected = expected_seconds(READING_TEXT)
    assert measures.pitch_factor(natural, expected) == 1.0
    assert measures.pitch_factor(robotic, expected) <= 0.5


def test_pace_and_clipping_measures(reading) -> None:
    samples, rate = reading
    span = _measure(reading).speech_s
    fast = _measure(degrade.time_stretch(samples, rate, 2.0)).speech_s
    assert 0.4 <= fast / span <= 0.6, (fast, span)
    assert measures.pace_factor(1.0) == 1.0 > measures.pace_factor(0.45) > measures.pace_factor(0.4)
    assert measures.pace_factor(2.0) > measures.pace_factor(2.5) > 0.0
    assert _measure(reading).clipped < measures.CLIP_FREE
    clipped = _measure(degrade.clip(samples, rate, 0.3)).clipped
    assert clipped > 0.005 and measures.clipping_factor(clipped) < 0.9
    assert np.max(np.abs(degrade.clip(samples, rate, 0.3)[0])) < 0.99  # past the gate


def test_white_noise_has_the_snr_asked_for(reading) -> None:
    samples, rate = reading
    noisy, _ = degrade.white_noise(samples, rate, 10.0, seed=3)
    noise = noisy - samples
    snr = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 0.3, snr
    assert np.array_equal(noisy, degrade.white_noise(samples, rate, 10.0, seed=3)[0])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_in_part_damages_only_its_part(reading) -> None:
    samples, rate = reading
    a, b, fade = rate, 2 * rate, int(degrade.FADE_S * rate)
    noisy, noisy_rate = degrade.in_part(
        samples, rate, lambda x, r: degrade.white_noise(x, r, 0.0, seed=1), 1.0, 2.0
    )
    assert noisy_rate == rate and noisy.size == samples.size
    assert np.array_equal(noisy[:a], samples[:a]) and np.array_equal(noisy[b:], samples[b:])
    added = noisy[a:b] - samples[a:b]
    core = added[fade:-fade]
    snr = 20 * np.log10(_rms(samples[a:b]) / _rms(core))
    assert abs(snr) < 1.0, snr
    # The crossfades rise from the clean signal and fall back to it.
    edge = fade // 8
    assert _rms(added[:edge]) < 0.2 * _rms(core) and _rms(added[-edge:]) < 0.2 * _rms(core)
    # A part that comes back shorter and at WORLD's rate: the head is kept, the rest halved.
    fast, fast_rate = degrade.in_part(
        samples, rate, lambda x, r: degrade.time_stretch(x, r, 2.0), 1.0
    )
    assert fast_rate == rate and np.array_equal(fast[:a], samples[:a])
    assert abs(fast.size - (a + (samples.size - a) / 2)) < 0.01 * rate, fast.size

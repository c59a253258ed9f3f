"""Voice cloning end to end with the real models: the WORLD miner backend, the neural path
from local weights, and the validator's CloneEvaluator against honest and cheating answers."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.audio import resample
from chorus.generation.clone import RATE, CloneError, World, WorldClone
from chorus.generation.neural_clone import (
    EnvelopeNet,
    EnvelopeNetConfig,
    WeightsError,
    save_envelope_net,
)
from chorus.piper import PiperTTS
from chorus.scoring.clone import CloneEvaluator
from chorus.scoring.tts import TTSEvaluator
from chorus.services import get
from chorus.services.clone import CloneChallenge
from chorus.speaker import SpeakerEncoder
from chorus.voices import FESTIVAL_PACKAGES, VoiceBank

TEXT = "Our train leaves the station at half past seven every morning."
SECOND_TEXT = "Please bring three green apples and a loaf of bread home tonight."
# A male and a female speaker, both unlike the Piper voice. (kal, US male, is the bank's
# nearest voice to Piper: its clone gains only ~0.1 similarity over stock, too close to
# test a margin on.)
VOICES = ("mv", "slt")


@pytest.fixture(scope="module")
def speaker() -> SpeakerEncoder:
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def world(piper: PiperTTS, speaker: SpeakerEncoder) -> WorldClone:
    return get("clone").load_backend("world", tts=piper, speaker=speaker)


@pytest.fixture(scope="module")
def evaluator(tts_evaluator: TTSEvaluator, speaker: SpeakerEncoder, piper: PiperTTS):
    return CloneEvaluator(tts_evaluator, speaker, piper)


@pytest.fixture(scope="module")
def references() -> dict[str, tuple[np.ndarray, int]]:
    bank = VoiceBank.builtin()
    if not set(VOICES) <= set(bank.voices):
        pytest.skip(f"Festival voices missing; apt-get install {' '.join(FESTIVAL_PACKAGES)}")
    return {name: bank.reference(name) for name in VOICES}


def _splice(reference: np.ndarray, rate: int, pieces: int = 6) -> tuple[np.ndarray, int]:
    """The reference cut into pieces and shuffled, resampled to 16 kHz like a sly miner."""
    audio = resample(reference, rate, RATE)
    parts = np.array_split(audio[37:], pieces)
    order = np.random.default_rng(1).permutation(pieces)
    return np.concatenate([parts[i] for i in order]), RATE


@pytest.mark.parametrize("voice", VOICES)
def test_honest_clone_beats_every_cheat(voice, world, evaluator, references, piper):
    reference, ref_rate = references[voice]
    clone, rate = world.clone(TEXT, reference, ref_rate)
    assert rate == RATE and np.isfinite(clone).all() and clone.size > 2 * RATE
    challenge = CloneChallenge(TEXT, reference, ref_rate)
    honest = evaluator.evaluate(clone, rate, challenge)
    assert honest.reason is None, honest
    # Piper samples noise, so one sentence in eight loses a word or two after conversion
    # (docs/voice-cloning.md); intelligibility is judged over two sentences. Over 12 Piper
    # seeds per voice their mean WER was 0.04 (worst 0.136); the warp bug this guards
    # against gave 0.64 on one sentence.
    second = evaluator.evaluate(
        *world.clone(SECOND_TEXT, reference, ref_rate),
        CloneChallenge(SECOND_TEXT, reference, ref_rate),
    )
    transcripts = honest.transcript, second.transcript
    assert (honest.wer + second.wer) / 2 <= 0.2, transcripts
    stock = piper.synthesize(TEXT)
    noise = np.random.default_rng(0).normal(0, 0.1, 4 * RATE).astype(np.float32)
    cheats = {
        "replayed reference": (reference, ref_rate),
        "spliced reference": _splice(reference, ref_rate),
        "stock piper voice": stock,
        "silence": (np.zeros(4 * RATE, dtype=np.float32), RATE),
        "noise": (noise, RATE),
    }
    scores = {k: evaluator.evaluate(a, r, challenge) for k, (a, r) in cheats.items()}
    # The clone sounds like the reference, and more so than the voice it was made from.
    stock_similarity = scores["stock piper voice"].speaker_similarity
    assert honest.speaker_similarity >= stock_similarity + 0.1
    assert honest.score >= 0.2, honest
    for name, score in scores.items():
        assert score.score <= 0.05 and score.score < honest.score - 0.15, (name, score)
    assert "replays the reference" in (scores["spliced reference"].reason or "")


def test_speaker_similarity_separates_speakers(speaker, references, piper):
    (male, male_rate), (slt, slt_rate) = references["mv"], references["slt"]
    half = male.size // 2
    same = speaker.similarity(male[:half], male_rate, male[half:], male_rate)
    different = speaker.similarity(male, male_rate, slt, slt_rate)
    assert same > 0.8 > different + 0.1, (same, different)
    assert speaker.similarity(np.zeros(RATE, dtype=np.float32), RATE, male, male_rate) == 0.0


def test_reference_without_speech_is_refused(world):
    hiss = np.random.default_rng(0).normal(0, 0.01, 3 * RATE).astype(np.float32)
    with pytest.raises(CloneError, match="no voiced speech"):
        world.clone(TEXT, hiss, RATE)


def test_neural_clone_loads_local_weights(tmp_path, piper, speaker, references, world):
    """A tiny randomly initialised EnvelopeNet, saved and loaded back through the registry."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    save_envelope_net(EnvelopeNet(EnvelopeNetConfig(hidden=16, layers=1)), tmp_path)
    clone = get("clone")
    neural = clone.load_backend("neural", weights=str(tmp_path), tts=piper, speaker=speaker)
    reference, ref_rate = references["slt"]
    out, rate = neural.clone(TEXT, reference, ref_rate)
    assert rate == RATE and np.isfinite(out).all() and 2.0 < out.size / RATE < 8.0
    # Same analysis, same profile: only the network's correction can make the envelopes differ.
    profile = world.profile(reference, ref_rate)
    analysis = World.analyse(resample(*piper.synthesize(TEXT), RATE))
    corrected = neural.map_envelope(analysis, profile)
    assert corrected.shape == analysis.sp.shape and np.isfinite(corrected).all()
    assert not np.allclose(corrected, world.map_envelope(analysis, profile), rtol=0.05)
    assert "neural-vc" in neural.model

    with pytest.raises(WeightsError, match="no EnvelopeNet weights"):
        clone.load_backend("neural", weights=str(tmp_path / "nope"), tts=piper, speaker=speaker)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load"):
        clone.load_backend("neural", weights=str(tmp_path / "junk.pt"), tts=piper)

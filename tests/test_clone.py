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
from chorus.scoring.clone import (
    MAX_WORDLESS_S,
    STOCK_MARGIN,
    STOCK_RAMP,
    STOCK_STRETCH_MARGIN,
    STRETCH_ALLOWANCE,
    WORD_PAD_S,
    CloneEvaluator,
    near_words,
    speaker_score,
    stretches,
)
from chorus.scoring.tts import TTSEvaluator
from chorus.services import RedTeamCase, get
from chorus.services.clone import CloneChallenge, CloneResult, CloneTools, clone_attacks
from chorus.speaker import SpeakerEncoder
from chorus.voices import FESTIVAL_PACKAGES, VoiceBank

TEXT = "Our train leaves the station at half past seven every morning."
SECOND_TEXT = "Please bring three green apples and a loaf of bread home tonight."
TWO_SENTENCES = f"{TEXT} {SECOND_TEXT}"  # about 7 s
SIX_SENTENCES = (  # about 22 s
    f"{TWO_SENTENCES} The children laughed as the kite climbed higher above the green hills."
    " Every evening the old clock in the hall chimes softly before dinner. She opened the"
    " window and watched the city wake up under a pale blue sky. Good science depends on"
    " careful measurement and honest reporting of results."
)
STOCK_TAIL = "right clone, last third in stock voice"
WORDLESS = "right clone, its voice without words after it"
OTHER_TAIL = "right clone, last third another voice"
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


# -- an answer is as good as its worst stretch ----------------------------------------------


def _old_score(result: CloneResult) -> float:
    """The score under the rule before stretches: the whole answer's similarity alone."""
    excess = result.stock_similarity - result.speaker_similarity - STOCK_MARGIN
    penalty = float(np.clip(1.0 - excess / STOCK_RAMP, 0.0, 1.0))
    similarity = speaker_score(result.speaker_similarity)
    return result.tts_score * similarity * penalty * (1 - result.copied)


@pytest.fixture(scope="module")
def tails(world, evaluator, references, piper) -> dict[tuple[str, str], CloneResult]:
    """Scored (voice, answer) pairs: honest clones and the red team's tail cheats (the same
    Piper reading converted up to a word gap two thirds in, something else after it). The
    stock tail on two sentences for each voice; the other voice's tail (mv's, a man's, in
    slt's, a woman's, answer) on six, where a third of the answer is several stretches. On
    two sentences, also the reference's voice without words after the clone."""
    attacks = {a.name: a.make for a in clone_attacks()}
    out = {}
    for voice, text, made in (
        ("mv", TWO_SENTENCES, (STOCK_TAIL, WORDLESS)),
        ("slt", TWO_SENTENCES, (STOCK_TAIL, WORDLESS)),
        ("slt", SIX_SENTENCES, (OTHER_TAIL,)),
    ):
        other = "slt" if voice == "mv" else "mv"
        challenge = CloneChallenge(text, *references[voice])
        tools = CloneTools(world, piper, voice, other, references[other])
        case = RedTeamCase(challenge, world.clone(text, *references[voice]), tools=tools)
        out[voice, text] = evaluator.evaluate(*case.honest, challenge)
        for attack in made:
            out[voice, attack] = evaluator.evaluate(*attacks[attack](case), challenge)
    return out


def test_honest_clones_lose_nothing_to_their_stretches(tails):
    """Their worst stretch sits within the allowance of the whole (measured: up to 0.084
    below it on answers of up to 13 s, 0.115 on 30 s ones), and no stretch comes near the
    stock voice."""
    honest = [r for (_, key), r in tails.items() if key in (TWO_SENTENCES, SIX_SENTENCES)]
    assert len(honest) == 3
    for result in honest:
        assert result.score >= 0.2, result
        assert result.worst_stretch_similarity + STRETCH_ALLOWANCE >= result.speaker_similarity
        assert result.speaker_score == speaker_score(result.speaker_similarity), result
        assert result.stock_stretch_excess < STOCK_STRETCH_MARGIN and result.stock_penalty == 1
        assert result.score == pytest.approx(_old_score(result)), result


@pytest.mark.parametrize("voice", VOICES)
def test_a_stock_voice_tail_earns_next_to_nothing(voice, tails):
    """The whole answer's similarity hardly notices the last third in Piper's own voice (it
    kept 61-137% of the honest score over three Piper seeds); its stretches are nearer the
    stock voice than the reference by 0.32-0.44 (honest clones: at most 0.17)."""
    honest, tail = tails[voice, TWO_SENTENCES], tails[voice, STOCK_TAIL]
    assert _old_score(tail) >= 0.5 * honest.score, (tail, honest)
    assert tail.score <= 0.2 * honest.score, (tail, honest)
    assert tail.stock_stretch_excess > STOCK_STRETCH_MARGIN + 0.5 * STOCK_RAMP, tail


def test_another_voice_tail_loses_most_of_its_score(tails):
    """Over 22 s, a last third in another bank voice (a man's in a woman's clone) kept
    76-91% of the honest speaker score by the whole answer's similarity, 35-47% by its
    worst stretch (four Piper seeds). The speech score is left out: Piper's sampled noise
    moves it by more than the voice does."""
    honest, tail = tails["slt", SIX_SENTENCES], tails["slt", OTHER_TAIL]
    assert speaker_score(tail.speaker_similarity) >= 0.65 * honest.speaker_score, tail
    assert tail.speaker_score <= 0.6 * honest.speaker_score, (tail, honest)
    assert tail.worst_stretch_similarity + STRETCH_ALLOWANCE < tail.speaker_similarity, tail


@pytest.mark.parametrize("voice", VOICES)
def test_the_voice_without_words_beside_a_clone_does_not_pay(voice, tails):
    """The reference cut into 40 ms pieces, shuffled and put after a right clone at -15 dB:
    its voice, no words (too short a piece for the copy check). Judged on the whole answer
    it scored 100-129% of the clone alone on 5 red-team cases; Whisper places no word in
    it, so the voice is judged near the words too. (Near them is a little of it, within
    the words' margin: the similarity judged moved by -0.01 to +0.03 over runs, where the
    whole answer's had risen by 0.07, a quarter of the speaker score's range.)"""
    honest, padded = tails[voice, TWO_SENTENCES], tails[voice, WORDLESS]
    assert honest.wordless_s <= MAX_WORDLESS_S < padded.wordless_s, (honest, padded)
    assert padded.speaker_score <= honest.speaker_score + 0.15, (padded, honest)
    assert padded.score <= honest.score + 0.01, (padded, honest)


def test_audio_away_from_the_words_is_counted_only_where_audible():
    """Seconds of audible 10 ms frames more than WORD_PAD_S from every word; silence is
    not counted, and an answer with no word placed is kept whole."""
    rng = np.random.default_rng(0)
    speech = 0.3 * rng.standard_normal(3 * RATE).astype(np.float32)
    after = {"silence": np.zeros(2 * RATE), "quiet noise": 0.003 * rng.standard_normal(2 * RATE)}
    words = [(0.2, 1.4), (1.5, 2.9)]
    keep, away = near_words(np.concatenate([speech, after["silence"]]), words)
    assert away == 0.0 and keep[: int((2.9 + WORD_PAD_S) * RATE)].all() and not keep[-1]
    keep, away = near_words(np.concatenate([speech, after["quiet noise"]]), words)
    assert away == pytest.approx(2.0 + 0.1 - WORD_PAD_S, abs=0.02)  # 0.1 s of speech too
    keep, away = near_words(speech, [])
    assert keep.all() and away == 0.0


def test_stretches_slide_one_partial_at_a_time():
    partials = np.abs(np.random.default_rng(0).normal(size=(6, 256))).astype(np.float32)
    partials /= np.linalg.norm(partials, axis=1, keepdims=True)
    four = stretches(partials, 4)
    assert four.shape == (3, 256)
    assert np.allclose(np.linalg.norm(four, axis=1), 1.0)
    mean = partials[2:6].mean(axis=0)
    assert np.allclose(four[2], mean / np.linalg.norm(mean))
    # An answer shorter than a stretch is one stretch: the whole answer's embedding.
    whole = partials.mean(axis=0)
    assert np.allclose(stretches(partials, 8), whole / np.linalg.norm(whole))
    assert stretches(partials[:0], 4).shape == (0, 256)

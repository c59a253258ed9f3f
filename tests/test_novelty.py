"""Novelty: near-copies of another miner's answer and replays of earlier answers earn nothing.

Real audio from the project's backends (Piper, the symbolic composer), transformed the way
a copier would hide a copy; honest answers are independent renditions of the same prompts.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from chorus import fingerprint
from chorus.audio import resample
from chorus.auth import create_wallet
from chorus.fingerprint import Probe, ReplayMemory, near_copies, prompt_key, similarity
from chorus.generation.music import SymbolicMusic
from chorus.music_prompts import music_prompts, render_music_prompt
from chorus.piper import PiperTTS
from chorus.prompts import SpeechPrompts
from chorus.store import Answer, ValidatorStore
from chorus.validator import Validator, ValidatorSettings

Clip = tuple[np.ndarray, int]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    prompts = SpeechPrompts(seed=21)
    return [prompts.next().text for _ in range(4)]


@pytest.fixture(scope="module")
def speech(piper, texts) -> list[Clip]:
    return [piper.synthesize(t) for t in texts]


@pytest.fixture(scope="module")
def tunes() -> list[str]:
    rng, stream = random.Random(5), music_prompts(seed=5)
    return [render_music_prompt(next(stream), rng) for _ in range(3)]


@pytest.fixture(scope="module")
def music(tunes) -> list[Clip]:
    composer = SymbolicMusic(seed=1)
    return [composer.compose(p, 8.0) for p in tunes]


# -- what a copier does --------------------------------------------------------------------


def encoded(clip: Clip, fmt: str, subtype: str, rate: int | None = None, **options) -> Clip:
    x, r = clip
    if rate:
        x, r = resample(x, r, rate), rate
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), r, format=fmt, subtype=subtype, **options)
    buf.seek(0)
    return sf.read(buf, dtype="float32")


def low_passed(clip: Clip, hz: float) -> Clip:
    """An MP3-like low-pass, then 16-bit."""
    x, r = clip
    y = sosfiltfilt(butter(8, hz, fs=r, output="sos"), x).astype(np.float32)
    return encoded((y, r), "WAV", "PCM_16")


def gained(clip: Clip, db: float) -> Clip:
    x, r = clip  # the copy travels as 16-bit audio, so +12 dB clips
    return encoded((x * 10 ** (db / 20), r), "WAV", "PCM_16")


def noisy(clip: Clip, snr_db: float) -> Clip:
    x, r = clip
    power = float(np.mean(x**2))
    noise = np.random.default_rng(0).normal(0, np.sqrt(power / 10 ** (snr_db / 10)), x.size)
    return (x + noise).astype(np.float32), r


def trimmed(clip: Clip, start: float, end: float) -> Clip:
    x, r = clip
    return x[int(start * x.size) : int((1 - end) * x.size)], r


def delayed(clip: Clip, seconds: float) -> Clip:
    x, r = clip
    return np.r_[np.zeros(int(seconds * r), np.float32), x], r


COPIES = {
    "wav 16-bit": lambda c: encoded(c, "WAV", "PCM_16"),
    "flac 16-bit": lambda c: encoded(c, "FLAC", "PCM_16"),
    "8-bit mu-law": lambda c: encoded(c, "WAV", "ULAW"),
    "8-bit mu-law at 8 kHz": lambda c: encoded(c, "WAV", "ULAW", 8000),
    "mp3 at about 80 kbit/s": lambda c: encoded(
        c, "MP3", "MPEG_LAYER_III", compression_level=0.5, bitrate_mode="CONSTANT"
    ),
    "mp3-like 4 kHz low-pass": lambda c: low_passed(c, 4000),
    "resampled to 16 kHz": lambda c: (resample(c[0], c[1], 16000), 16000),
    "resampled to 37.8 kHz": lambda c: (resample(c[0], c[1], 37800), 37800),
    "resampled to 48 kHz": lambda c: (resample(c[0], c[1], 48000), 48000),
    "gain +12 dB (clipped)": lambda c: gained(c, 12),
    "gain -12 dB": lambda c: gained(c, -12),
    "first 20% cut": lambda c: trimmed(c, 0.2, 0.0),
    "last 20% cut": lambda c: trimmed(c, 0.0, 0.2),
    "10% cut at each end": lambda c: trimmed(c, 0.1, 0.1),
    "37 ms of silence first": lambda c: delayed(c, 0.037),
    "first 123 ms cut": lambda c: trimmed(c, 0.123 / (c[0].size / c[1]), 0.0),
    "noise at 20 dB SNR": lambda c: noisy(c, 20),
    "noise at 15 dB SNR": lambda c: noisy(c, 15),
    "44.1 kHz, 10% cut, mu-law, -6 dB, noise at 15 dB": lambda c: noisy(
        gained(encoded(trimmed(c, 0.1, 0.1), "WAV", "ULAW", 44100), -6), 15
    ),
}


@pytest.mark.parametrize("how", list(COPIES))
def test_every_copier_transformation_is_caught(how, speech, music):
    for original in (speech[0], speech[1], music[0]):
        copy = COPIES[how](original)
        # in the same round: the pair is found, whichever answered first
        assert near_copies([Probe(*original), Probe(*copy)]) != [{}, {}], how
        assert near_copies([Probe(*copy), Probe(*original)]) != [{}, {}], how
        # in a later round, for another prompt: a replay
        memory = ReplayMemory()
        memory.remember(1, [(1, "hk1", prompt_key("tts", "a"), Probe(*original).fingerprint)])
        replay = memory.seen(Probe(*copy), "hk1", prompt_key("tts", "b"))
        assert replay is not None and replay.earlier.round == 1, how
        assert replay.match.score >= fingerprint.THRESHOLD


def test_honest_independent_answers_are_not_flagged(piper, texts, speech, tunes, music):
    """Two Piper voices with other seeds (stochastic VITS) read the same texts, another
    composer seed plays the same music prompts, and one miner answers different prompts:
    none of them is a near-copy. Scores stay well under the threshold."""
    other_voice = PiperTTS(seed=1)
    other_composer = SymbolicMusic(seed=2)
    pairs = [(clip, other_voice.synthesize(t)) for clip, t in zip(speech, texts, strict=True)]
    pairs += [(clip, piper.synthesize(t)) for clip, t in zip(speech, texts, strict=True)]
    pairs += [(c, other_composer.compose(p, 8.0)) for c, p in zip(music, tunes, strict=True)]
    pairs += [(speech[i], speech[j]) for i in range(4) for j in range(4) if i != j]
    pairs += [(music[i], music[j]) for i in range(3) for j in range(3) if i != j]
    scores = [similarity(Probe(*a), fingerprint.fingerprint(*b)) for a, b in pairs]
    print(f"honest pairs: {len(scores)}, max {max(scores):.3f}, mean {np.mean(scores):.3f}")
    assert max(scores) < fingerprint.THRESHOLD
    for a, b in pairs:
        assert near_copies([Probe(*a), Probe(*b)]) == [{}, {}]

    # nor a replay of any earlier answer: every first answer remembered, every second checked
    memory = ReplayMemory()
    originals = [*zip(texts, speech, strict=True), *zip(tunes, music, strict=True)]
    for n, (prompt, clip) in enumerate(originals):
        memory.remember(n, [(1, "hk1", prompt_key("tts", prompt), Probe(*clip).fingerprint)])
    for n, (_, b) in enumerate(pairs[:11]):
        assert memory.seen(Probe(*b), "hk2", prompt_key("tts", f"new {n}")) is None


class NeverEvaluates:
    """Copies are rejected before scoring: nothing here may be evaluated."""

    def evaluate(self, samples, rate, challenge):
        raise AssertionError("reject_copies must not evaluate anything")


def validator_on(path, tmp_path) -> Validator:
    wallet = create_wallet("validator", path=str(tmp_path / "wallets"))
    settings = ValidatorSettings(services=("tts",), seed=1)
    return Validator(wallet, None, ValidatorStore(path), {"tts": NeverEvaluates()}, settings)


def answer(uid: int, prompt: str, service: str = "tts") -> Answer:
    return Answer(uid=uid, hotkey=f"hk{uid}", service=service, prompt=prompt, score=0.0)


def test_replay_is_caught_after_a_restart(speech, texts, music, tunes, tmp_path):
    path = tmp_path / "state.sqlite"
    first = validator_on(path, tmp_path)
    round1 = [
        (answer(1, texts[0]), speech[0]),
        (answer(2, texts[0]), speech[1]),  # not a copy of uid 1: another text
        (answer(3, tunes[0], "music"), music[0]),
    ]
    first.reject_copies(1, round1)
    assert all(a.error is None for a, _ in round1)
    del first

    again = validator_on(path, tmp_path)  # a new process: new Validator and ValidatorStore
    assert len(again.replays) == 3
    round2 = [
        # uid 1 replays its own answer, re-encoded with noise, for a new prompt
        (answer(1, texts[2]), noisy(encoded(speech[0], "FLAC", "PCM_16", 24000), 15)),
        # uid 4 serves uid 2's earlier answer, trimmed and quieter
        (answer(4, texts[2]), gained(trimmed(speech[1], 0.1, 0.1), -9)),
        # uid 3 replays its music for another prompt, resampled
        (answer(3, tunes[1], "music"), (resample(music[0][0], 44100, 32000), 32000)),
        # uid 2 answers honestly
        (answer(2, texts[2]), speech[2]),
    ]
    again.reject_copies(2, round2)
    errors = [a.error or "" for a, _ in round2]
    assert "replay of an answer from round 1 (its own answer" in errors[0]
    assert "replay of an answer from round 1 (uid 2's answer" in errors[1]
    assert "replay of an answer from round 1" in errors[2]
    assert errors[3] == ""

    # the same miner saying the same prompt the same way again is no replay
    third = validator_on(path, tmp_path)
    same = [(answer(3, tunes[0], "music"), music[0])]
    third.reject_copies(3, same)
    assert same[0][0].error is None


def test_replay_memory_is_bounded_oldest_first(speech, tmp_path):
    store = ValidatorStore(tmp_path / "state.sqlite")
    memory = ReplayMemory(store, capacity=3)
    for n, clip in enumerate(speech):  # four answers into room for three
        memory.remember(n + 1, [(1, "hk1", prompt_key("tts", str(n)), Probe(*clip).fingerprint)])
    reloaded = ReplayMemory(ValidatorStore(tmp_path / "state.sqlite"), capacity=3)
    for m in (memory, reloaded):
        assert len(m) == 3
        assert m.seen(Probe(*speech[0]), "hk2", "other") is None  # the oldest is gone
        assert m.seen(Probe(*speech[3]), "hk2", "other").earlier.round == 4
    assert len(store.fingerprints(100, fingerprint.VERSION)) == 3


def test_within_round_near_copy_group_earns_nothing(piper, speech, texts, tmp_path):
    validator = validator_on(tmp_path / "state.sqlite", tmp_path)
    original = speech[3]
    received = [
        (answer(1, texts[3]), original),
        (answer(2, texts[3]), noisy(encoded(original, "WAV", "PCM_16", 48000), 15)),
        (answer(3, texts[3]), trimmed(original, 0.2, 0.0)),
        (answer(4, texts[3]), piper.synthesize(texts[3])),  # honest: another rendition
        (answer(5, texts[3]), None),  # undecodable answers play no part
    ]
    received[4][0].error = "bad audio"
    validator.reject_copies(1, received)
    errors = {a.uid: a.error or "" for a, _ in received}
    assert "identical to uid 2, 3's answer" in errors[1]
    assert "identical to uid 1" in errors[2] and "identical to uid 1" in errors[3]
    assert errors[4] == "" and errors[5] == "bad audio"
    # the whole group is remembered, so serving any of it later is a replay
    later = [(answer(6, texts[0]), gained(original, -3))]
    validator.reject_copies(2, later)
    assert "replay of an answer from round 1" in later[0][0].error

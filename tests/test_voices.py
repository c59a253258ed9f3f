"""The voice bank: enough distinct real voices, and operators' own recordings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chorus.audio import read, write
from chorus.speaker import SpeakerEncoder
from chorus.voices import FESTIVAL_PACKAGES, VoiceBank, VoiceBankError


@pytest.fixture(scope="module")
def bank() -> VoiceBank:
    bank = VoiceBank.builtin()
    if len(bank.voices) < 6:
        pytest.skip(f"Festival voices missing; apt-get install {' '.join(FESTIVAL_PACKAGES)}")
    return bank


def test_builtin_bank_has_six_distinct_speakers(bank: VoiceBank):
    """Two clips of one speaker are more alike than clips of any two different speakers."""
    encoder = SpeakerEncoder()
    embeddings = {}
    for name in bank.voices:
        clips = [read(path) for path in bank.recordings(name)[:2]]
        assert all(3.0 <= samples.size / rate <= 10.0 for samples, rate in clips)
        embeddings[name] = [encoder.embed(samples, rate) for samples, rate in clips]
    same = [float(a @ b) for a, b in embeddings.values()]
    different = [
        float(embeddings[x][0] @ embeddings[y][1]) for x, y in itertools.permutations(embeddings, 2)
    ]
    assert len(embeddings) >= 6
    assert min(same) > 0.8, same
    assert max(different) < min(same), (max(different), min(same))


def test_reference_is_drawn_from_a_voices_clips(bank: VoiceBank):
    name = bank.voices[0]
    drawn = {bank.reference(name, np.random.default_rng(seed))[0].size for seed in range(12)}
    assert len(drawn) > 1  # several clips, not one recording replayed every round
    with pytest.raises(VoiceBankError, match="unknown voice"):
        bank.reference("nobody")


def test_operator_folder(tmp_path):
    tone = np.sin(np.linspace(0, 2000, 48000)).astype(np.float32) * 0.5
    write(tmp_path / "alice" / "one.wav", tone, 16000)
    write(tmp_path / "alice" / "two.flac", tone[:32000], 16000)
    write(tmp_path / "bob.wav", tone, 22050)
    (tmp_path / "notes.txt").write_text("not audio")
    bank = VoiceBank.from_folder(tmp_path)
    assert bank.voices == ["alice", "bob"]
    assert len(bank.recordings("alice")) == 2
    samples, rate = bank.reference("bob")
    assert rate == 22050 and samples.size == 48000


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(VoiceBankError, match="does not exist"):
        VoiceBank.from_folder(tmp_path / "missing")
    with pytest.raises(VoiceBankError, match="no .wav or .flac"):
        VoiceBank.from_folder(tmp_path)


def test_missing_festival_degrades_with_clear_message(monkeypatch, tmp_path):
    """Without Festival the bank is empty and says which apt packages would fill it."""
    monkeypatch.setattr("chorus.voices.FESTIVAL_DIRS", (tmp_path,))
    bank = VoiceBank.builtin(tmp_path / "cache")
    assert bank.voices == [] and "kal" in bank.missing
    with pytest.raises(VoiceBankError, match="apt-get install festival festvox-kallpc16k"):
        bank.reference("kal")

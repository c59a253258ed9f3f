"""Transcripts of multi-sentence answers must cover every sentence, not stop at a pause, and
are the same whichever encoder instance ran."""

from __future__ import annotations

import os

import pytest

from chorus.scoring.asr import Transcriber
from chorus.text import word_error_rate

TEXT = (
    "Every evening the old clock in the hall chimes softly before dinner. "
    "She opened the window and watched the city wake up under a pale blue sky."
)


def test_two_sentence_answers_are_transcribed_to_the_end(piper, transcriber):
    # Piper's pause between sentences made greedy decoding without timestamps stop at the
    # first sentence in about a third of samples; eight samples catch that with ~96% odds.
    for _ in range(8):
        samples, rate = piper.synthesize(TEXT)
        transcript = transcriber.transcribe(samples, rate)
        # A transcript that stops at the first sentence misses half the words (WER ~0.5);
        # tiny.en's ordinary slips on a full one stay well under 0.35.
        assert "sky" in transcript.lower() and word_error_rate(TEXT, transcript) < 0.35, transcript


def test_encoder_on_every_core_gives_the_same_transcript(piper, transcriber, runtime):
    """The wide encoder (a thread per core, used when the cores are free) is the same model:
    the transcript must not change, and the ``encoded`` hook runs once per call, also when
    there is nothing to encode."""
    if (os.cpu_count() or 1) == 1:
        pytest.skip("one core: there is no wide encoder")
    narrow = Transcriber(runtime, encoder_threads=1)
    assert narrow.model.wide is None
    samples, rate = piper.synthesize(TEXT)
    calls = []
    wide, transcriber.model.wide = transcriber.model.wide, _Counting(transcriber.model.wide)
    try:
        wide_text = transcriber.transcribe(samples, rate, encoded=lambda: calls.append("wide"))
        assert transcriber.model.wide.calls == 1  # the cores were free: the wide one ran
    finally:
        transcriber.model.wide = wide
    assert wide_text == narrow.transcribe(samples, rate, encoded=lambda: calls.append("narrow"))
    assert transcriber.transcribe(samples[:0], rate, encoded=lambda: calls.append("empty")) == ""
    assert calls == ["wide", "narrow", "empty"]


class _Counting:
    """A CTranslate2 model that counts its encoder calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def encode(self, *args, **kwargs):
        self.calls += 1
        return self.model.encode(*args, **kwargs)

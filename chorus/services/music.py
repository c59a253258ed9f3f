"""Text-to-music: compose music that follows a prompt for a given duration. Scored by
quality and adherence (tempo, key, drums, bass, energy); the evaluator is
``chorus.scoring.music.MusicEvaluator``, the backends ``chorus.generation.music``."""

from __future__ import annotations

import argparse
import random
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import Field, field_validator

from chorus.errors import CallerError
from chorus.protocol import (
    MAX_MUSIC_PROMPT_CHARS,
    MAX_MUSIC_SECONDS,
    MIN_MUSIC_SECONDS,
    AudioFormat,
    GatewayBody,
    Strict,
    not_blank,
)
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

REDTEAM_SECONDS = 12.0


class MusicRequest(Strict):
    """Compose ``duration`` seconds of music that follows ``prompt``."""

    prompt: str = Field(min_length=1, max_length=MAX_MUSIC_PROMPT_CHARS)
    duration: float = Field(ge=MIN_MUSIC_SECONDS, le=MAX_MUSIC_SECONDS)
    sample_rate: int | None = Field(default=None, ge=32000, le=48000)
    format: AudioFormat = "wav"

    _prompt = field_validator("prompt")(not_blank)

    @field_validator("duration", mode="before")
    @classmethod
    def _int_is_fine(cls, value: object) -> object:
        # Strict mode would refuse 15 for a float field; a whole number of seconds is fine.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class MusicChallenge:
    """The prompt, and how long the answer should last (None: any length)."""

    prompt: str
    duration: float | None = None


@dataclass
class MusicResult(Result):
    """A scored piece (``score = quality x adherence x musicality``): the three factors with
    their parts, and what was found in the signal: tempo, key, percussive share, energy,
    low-frequency share, and the musicality measurements (how much the sound changes from
    beat to beat, how far it is from an exact loop, harmonic change from bar to bar, how
    much keeps sounding between attacks (``sustain_db``), the tune's distinct pitches and
    notes per second, how different its attacks are, and how organized it is; see
    `chorus.scoring.music`)."""

    quality: float = 0.0
    adherence: float = 0.0
    musicality: float = 0.0
    quality_parts: dict[str, float] = field(default_factory=dict)
    adherence_parts: dict[str, float] = field(default_factory=dict)
    musicality_parts: dict[str, float] = field(default_factory=dict)
    tempo_bpm: float | None = None
    tempo_strength: float | None = None
    key: str | None = None
    key_strength: float | None = None
    percussive_share: float | None = None
    energy_index: float | None = None
    low_share: float | None = None
    high_share: float | None = None
    beat_variation: float | None = None
    loop_distance: float | None = None
    harmonic_change: float | None = None
    sustain_db: float | None = None
    static_share: float | None = None
    melody_pitches: int | None = None
    melody_rate: float | None = None
    onset_variety: float | None = None
    organization: float | None = None
    persistence: float | None = None
    persistence_two_apart: float | None = None
    groove: float | None = None
    seconds_audio: float | None = None

    def summary(self) -> str:
        if self.tempo_bpm is None:
            return self.reason or ""
        found = f"{self.tempo_bpm:.0f} BPM, {self.key}"
        return f"{self.reason}: {found}" if self.reason else found


class MusicBackend(Protocol):
    """What a miner's music backend implements (``chorus.generation.music.SymbolicMusic``)."""

    model: str

    def compose(self, prompt: str, duration: float) -> Audio: ...


class MusicBody(GatewayBody):
    """Compose ``duration`` seconds of music following ``prompt``."""

    prompt: str
    duration: float = Field(default=10.0, ge=MIN_MUSIC_SECONDS, le=MAX_MUSIC_SECONDS)

    def to_miner(self) -> MusicRequest:
        return MusicRequest(
            prompt=self.prompt, duration=float(self.duration), format=self.miner_format
        )


class MusicService(Service[MusicRequest, MusicChallenge, MusicResult]):
    name = "music"
    label = "Music"
    title = "Music Generation"
    route = "/v1/music"
    request = MusicRequest
    result = MusicResult
    backends = {
        "symbolic": "chorus.generation.music:SymbolicMusic",
        "musicgen": "chorus.generation.musicgen:MusicGen",
    }
    weights_backends = frozenset({"musicgen"})
    default_backend = "symbolic"
    bench_seconds = 15.0
    columns = (Column("adherence", lambda r: r.adherence),)
    gateway_route = "/v1/audio/music"
    gateway_body = MusicBody

    def challenge(self, request: MusicRequest) -> MusicChallenge:
        return MusicChallenge(request.prompt, request.duration)

    def generate(self, backend: MusicBackend, challenge: MusicChallenge) -> Audio:
        duration = challenge.duration if challenge.duration is not None else self.bench_seconds
        return backend.compose(challenge.prompt, duration)

    def tasks(self, ctx: TaskContext) -> Iterator[Task[MusicChallenge]]:
        from chorus.music_prompts import music_prompts

        prompts = music_prompts(ctx.seed)
        lo, hi = ctx.music_seconds
        while True:
            asked = next(prompts)
            duration = round(ctx.rng.uniform(lo, hi), 1)
            yield Task(
                self.name,
                f"{asked.text} ({duration:g} s)",
                MusicRequest(prompt=asked.text, duration=duration),
                MusicChallenge(asked.text, duration),
            )

    def load_evaluator(
        self, runtime: ScoringRuntime, loaded: Mapping[str, Evaluator]
    ) -> Evaluator[MusicChallenge, MusicResult]:
        from chorus.scoring.music import MusicEvaluator

        return MusicEvaluator()

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        if command == "generate":
            parser.add_argument("prompt", help="what the music should be")
            parser.add_argument(
                "--duration", type=float, default=self.bench_seconds, help="seconds (default 15)"
            )
            self._add_renderer_arguments(parser, "--")
        else:
            parser.add_argument("--prompt", required=True, help="what the music should be")
            parser.add_argument("--duration", type=float, default=None, help="asked duration (s)")

    def add_miner_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_miner_arguments(parser)
        self._add_renderer_arguments(parser, "--music-")

    @staticmethod
    def _add_renderer_arguments(parser: argparse.ArgumentParser, prefix: str) -> None:
        parser.add_argument(
            f"{prefix}renderer",
            dest="music_renderer",
            metavar="NAME",
            default=None,
            help="symbolic backend: the synthesizer, fluidsynth, tinysoundfont or numpy "
            "(default: the best found)",
        )
        parser.add_argument(
            f"{prefix}soundfont",
            dest="music_soundfont",
            metavar="PATH",
            default=None,
            help="symbolic backend: a General MIDI .sf2 file (default: the first installed)",
        )

    def flag_options(self, args: argparse.Namespace, backend: str) -> dict:
        renderer = getattr(args, "music_renderer", None)
        soundfont = getattr(args, "music_soundfont", None)
        if renderer is None and soundfont is None:
            return {}
        if backend != "symbolic":
            raise CallerError(
                f"a renderer or SoundFont is for the symbolic music backend, not {backend!r}"
            )
        from chorus.generation.music import check_renderer

        check_renderer(renderer, soundfont)
        return {"renderer": renderer, "soundfont": soundfont}

    def challenge_from_args(self, args: argparse.Namespace) -> MusicChallenge:
        if not args.prompt.strip():
            raise CallerError("the prompt is empty: describe the music to make")
        try:
            not_blank(args.prompt)
        except ValueError as e:
            raise CallerError(f"the prompt {e} (what a miner accepts)") from None
        if len(args.prompt) > MAX_MUSIC_PROMPT_CHARS:
            raise CallerError(
                f"the prompt is {len(args.prompt)} characters long: at most "
                f"{MAX_MUSIC_PROMPT_CHARS} (what a miner accepts)"
            )
        duration = args.duration
        if duration is not None and not MIN_MUSIC_SECONDS <= duration <= MAX_MUSIC_SECONDS:
            raise CallerError(
                f"--duration {duration:g} is out of range: {MIN_MUSIC_SECONDS:g} to "
                f"{MAX_MUSIC_SECONDS:g} seconds (what a miner accepts)"
            )
        return MusicChallenge(args.prompt, duration)

    # -- the red team

    min_honest_score = 0.85

    def redteam_cases(self, count: int, seed: int) -> list[RedTeamCase[MusicChallenge]]:
        """``count`` validator prompts (they state BPM and key) that name drums, so that
        "the right piece without its drums" is a fault on every case; honest answers by
        the symbolic composer seeded with ``seed``, which is also the cases' ``tools``.
        Each case's ``other`` is the next one (a second prompt when there is one case)."""
        import itertools

        from chorus.music_prompts import music_prompts

        backend = self.load_backend(self.default_backend, seed=seed)
        drums = (p for p in music_prompts(seed) if "drums" in p.instruments)
        made = []
        for asked in itertools.islice(drums, max(count, 2) if count > 0 else 0):
            challenge = MusicChallenge(asked.text, REDTEAM_SECONDS)
            made.append(RedTeamCase(challenge, self.generate(backend, challenge), tools=backend))
        for i, case in enumerate(made):
            case.other = made[(i + 1) % len(made)]
        return made[:count]

    def attacks(self) -> list[Attack]:
        """Cheap cheats (each at most 30 % of the honest score), the right piece with white
        noise under it (less the more noise: 10 dB under it at most 95 %), honest music
        for another prompt (at most half), and the right piece without the drums it was
        asked for (at most 80 %: it is the right music, short of one named instrument
        family)."""
        from chorus import degrade
        from chorus import music_cheats as cheats

        def text(case: RedTeamCase) -> str:
            return case.challenge.prompt

        def seconds(case: RedTeamCase) -> float:
            return case.challenge.duration or REDTEAM_SECONDS

        def seed(case: RedTeamCase) -> int:  # a different draw for every prompt
            return zlib.crc32(text(case).encode())

        def loop(case: RedTeamCase) -> Audio:
            from chorus.music_prompts import parse_music_prompt

            samples, rate = case.honest
            bpm = parse_music_prompt(text(case)).bpm or 120.0
            return cheats.static_loop(samples, rate, bpm, seconds(case)), rate

        def fragment(
            filler: Literal["chord", "repeat"], db: float, middle: bool = False
        ) -> Callable[[RedTeamCase], Audio]:
            def make(case: RedTeamCase) -> Audio:  # 3 s of the honest piece, in the names
                samples, rate = case.honest
                at = (seconds(case) - 3.0) / 2 if middle else 0.0
                x = cheats.fragment_in_filler(
                    samples, rate, text(case), seconds(case), filler, db, 3.0, at
                )
                return x, rate

            return make

        def other(case: RedTeamCase) -> Audio:
            return case.other.honest if case.other is not None else case.honest

        def noisy(snr_db: float) -> Callable[[RedTeamCase], Audio]:
            return lambda case: degrade.white_noise(*case.honest, snr_db, seed=seed(case))

        def without(*parts: str):
            def make(case: RedTeamCase) -> Audio:
                return case.tools.compose(text(case), seconds(case), omit=parts)

            return make

        rate = cheats.RATE
        return [
            Attack(
                "clicks + drone + bass in key and tempo",
                lambda c: (cheats.clicks_drone(text(c), seconds(c)), rate),
                max_share=0.3,
            ),
            Attack(
                "static loop of one bar",
                loop,
                max_share=0.3,
            ),
            Attack(
                "single held chord",
                lambda c: (cheats.held_chord(text(c), seconds(c)), rate),
                max_share=0.3,
            ),
            Attack(
                "random notes in key",
                lambda c: (cheats.random_notes(text(c), seconds(c), seed(c)), rate),
                max_share=0.3,
            ),
            Attack(
                "noise pulsed on the beat",
                lambda c: (cheats.pulsed_noise(text(c), seconds(c), seed(c)), rate),
                max_share=0.3,
            ),
            Attack(
                "scale blips on the beat + drum kit",
                lambda c: (cheats.scale_walk_kit(text(c), seconds(c), seed=seed(c)), rate),
                max_share=0.3,
            ),
            Attack(
                "scale walk, one held note a beat + drum kit",
                lambda c: (
                    cheats.scale_walk_kit(text(c), seconds(c), held=True, seed=seed(c)),
                    rate,
                ),
                max_share=0.3,
            ),
            Attack(
                "3 s of the piece, then a held chord 15 dB down",
                fragment("chord", -15.0),
                max_share=0.3,
            ),
            Attack(
                "3 s of the piece, then it repeated 20 dB down",
                fragment("repeat", -20.0),
                max_share=0.3,
            ),
            Attack(
                "3 s of the piece amid a held chord 19 dB down",
                fragment("chord", -19.0, middle=True),
                max_share=0.3,
            ),
            Attack("right piece, white noise 20 dB under it", noisy(20.0), "noise"),
            Attack("right piece, white noise 10 dB under it", noisy(10.0), "noise", 0.95),
            Attack("honest music for another prompt", other, max_share=0.5),
            Attack("right piece, drums missing", without("drums"), max_share=0.8),
        ]

    def bench_challenge(self, seconds: float) -> MusicChallenge:
        from chorus.music_prompts import music_prompts, render_music_prompt

        prompt = render_music_prompt(next(music_prompts(seed=0)), random.Random(0))
        return MusicChallenge(prompt, seconds)


register(MusicService())


if TYPE_CHECKING:  # `make lint` checks that the shipped backend keeps the protocol
    from chorus.generation.music import SymbolicMusic
    from chorus.scoring.runtime import ScoringRuntime

    _backend: MusicBackend = SymbolicMusic()

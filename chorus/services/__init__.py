"""Services: everything about one kind of work a miner sells, in one descriptor.

A service (tts, clone, music, or a plug-in) is a ``Service`` subclass in a module of its
own that declares its request model and route, the backends miners can load, how a
backend is called, the typed challenge a validator sets and the typed ``Result`` its
evaluator returns, the leaderboard columns, the gateway body, and the bench case. The
miner, validator, gateway, CLI, bench and local network iterate over ``registry()`` and
never name a service. A new service registers itself::

    class ToneService(Service[ToneRequest, ToneChallenge, ToneResult]):
        name, route, request, result = "tone", "/v1/tone", ToneRequest, ToneResult
        ...
    register(ToneService())

and is found by other processes (miners, validators, the bench's workers) through
``CHORUS_SERVICES=package.module[:NAME]`` or the ``chorus.services`` entry-point group.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, TypeAdapter

from chorus.errors import CallerError

if TYPE_CHECKING:
    import argparse

    from chorus.prompts import SpeechPrompts
    from chorus.protocol import GatewayBody
    from chorus.scoring.runtime import ScoringRuntime

BUILTIN = ("chorus.services.tts", "chorus.services.clone", "chorus.services.music")
PLUGINS_ENV = "CHORUS_SERVICES"  # comma-separated modules that register more services
ENTRY_POINTS = "chorus.services"
NO_BACKEND = "none"
# The range of lengths validators ask music for. Under 10 s (2-3 bars at slow tempos) a
# piece is too short to tell music from a cheat, either way: docs/scoring.md, "How long a
# piece must be to be judged", has the survey.
MUSIC_TASK_SECONDS = (10.0, 15.0)


# -- what crosses module boundaries ------------------------------------------------------


@dataclass
class Result:
    """One evaluated answer: ``score`` in [0, 1], how long scoring took, and ``reason``
    naming the gate that zeroed it, if any. Services subclass it with their metrics;
    ``to_json``/``from_json`` are the one serialisation (the store, dashboard, gateway and
    CLI all go through them)."""

    score: float = 0.0
    seconds: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _rounded(_adapter(type(self)).dump_python(self, mode="json"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The result stored by ``to_json``; keys it does not know (an older schema) are
        ignored, keys it misses take their defaults."""
        return _adapter(cls).validate_python(dict(data))

    def summary(self) -> str:
        """A few words for a progress line: why it failed, or its headline metric."""
        return self.reason or ""


_ADAPTERS: dict[type, TypeAdapter] = {}


def _adapter(cls: type) -> TypeAdapter:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def _rounded(value: Any) -> Any:
    """Floats to 4 decimals: metrics are stored and shown, not computed with, afterwards."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


ChallengeT = TypeVar("ChallengeT")
ResultT = TypeVar("ResultT", bound=Result)
RequestT = TypeVar("RequestT", bound=BaseModel)
Audio = tuple[np.ndarray, int]


ChallengeIn = TypeVar("ChallengeIn", contravariant=True)
ResultOut = TypeVar("ResultOut", bound=Result, covariant=True)


class Evaluator(Protocol[ChallengeIn, ResultOut]):
    """Scores one answer to one challenge. Loaded once, called for every answer, from
    several threads at once. An evaluator may also score a whole round at once
    (``RoundEvaluator``); callers go through ``evaluate_round``, which falls back to
    ``evaluate`` per answer."""

    def evaluate(self, samples: np.ndarray, rate: int, challenge: ChallengeIn) -> ResultOut: ...


@runtime_checkable
class RoundEvaluator(Evaluator[ChallengeIn, ResultOut], Protocol):
    """An evaluator that scores a round's answers together (sharing batched model calls),
    giving each the score ``evaluate`` would give it."""

    def evaluate_round(
        self, items: Sequence[tuple[np.ndarray, int, ChallengeIn]]
    ) -> Sequence[ResultOut]: ...


def evaluate_round(
    evaluator: Evaluator[ChallengeT, ResultT],
    items: Sequence[tuple[np.ndarray, int, ChallengeT]],
) -> list[ResultT]:
    """Score a round's answers, (samples, rate, challenge) each, with ``evaluator``: in one
    call where it scores rounds, else answer by answer. One result per item, in order."""
    if not items:
        return []
    if isinstance(evaluator, RoundEvaluator):
        results = list(evaluator.evaluate_round(items))
        if len(results) != len(items):
            raise RuntimeError(
                f"{type(evaluator).__name__}.evaluate_round gave {len(results)} results"
                f" for {len(items)} answers"
            )
        return results
    return [evaluator.evaluate(samples, rate, challenge) for samples, rate, challenge in items]


@dataclass
class Task(Generic[ChallengeT]):
    """One round's challenge: the request every miner gets, the typed challenge its
    evaluator scores against, and the prompt as the store and logs show it."""

    service: str
    prompt: str
    request: BaseModel
    challenge: ChallengeT


@dataclass
class TaskContext:
    """What a validator lends its services to make tasks: settings, a seeded random
    source, and the speech prompts that several services share."""

    rng: random.Random
    seed: int | None = None
    corpus: str | None = None
    voices: str | None = None
    music_seconds: tuple[float, float] = MUSIC_TASK_SECONDS

    @cached_property
    def speech(self) -> SpeechPrompts:
        from chorus.prompts import SpeechPrompts

        return SpeechPrompts(seed=self.seed, corpus=self.corpus)


@dataclass(frozen=True)
class Column:
    """A leaderboard column: a title and how to read it from a service's results. Columns
    with the same title in several services (WER for tts and clone) are averaged."""

    title: str
    value: Callable[[Any], float | None]
    fmt: str = ".3f"


@dataclass(frozen=True)
class BenchCase:
    """What ``chorus bench`` times for a service: a backend call and an evaluation."""

    generate: Callable[[], Audio]
    evaluate: Callable[[np.ndarray, int], Result]


@dataclass
class RedTeamCase(Generic[ChallengeT]):
    """One challenge with an honest answer, for the red team to degrade or cheat on.
    ``other`` is another case of the same run (for "the right audio for another prompt");
    ``tools`` is whatever the service's attacks need (a loaded backend, a voice bank)."""

    challenge: ChallengeT
    honest: Audio
    other: RedTeamCase[ChallengeT] | None = None
    tools: Any = None


@dataclass(frozen=True)
class Attack:
    """One rung of the red team: an answer made from a case that should earn less than the
    honest one. Rungs sharing a ``ladder`` are listed mildest first and must score strictly
    lower one after the other; ``max_share`` bounds the share of the honest score a rung may
    earn (None: only the ordering is checked)."""

    name: str
    make: Callable[[RedTeamCase], Audio]
    ladder: str | None = None
    max_share: float | None = None


# -- the descriptor ----------------------------------------------------------------------


class Service(Generic[RequestT, ChallengeT, ResultT]):
    """One service. Subclasses set the class attributes and implement the methods marked
    'required'; the rest have defaults that suit most services."""

    name: ClassVar[str]
    label: ClassVar[str]  # short, for tables: "TTS"
    title: ClassVar[str]  # long: "Text To Speech"
    route: ClassVar[str]  # the miner's POST route
    request: ClassVar[type[BaseModel]]
    result: ClassVar[type[Result]]
    backends: ClassVar[dict[str, str]]  # name -> "module:Class", imported only when loaded
    # Backends that load a model from a local path (their ``weights`` option): chorus
    # ships none, so the CLI refuses them without `--NAME-weights` / `--weights`.
    weights_backends: ClassVar[frozenset[str]] = frozenset()
    default_backend: ClassVar[str]  # what `chorus generate` and `chorus bench` use
    miner_backend: ClassVar[str] = NO_BACKEND  # what `chorus miner` serves unless told
    bench_seconds: ClassVar[float] = 30.0
    columns: ClassVar[tuple[Column, ...]] = ()
    gateway_route: ClassVar[str | None] = None
    gateway_body: ClassVar[type[GatewayBody] | None] = None

    # -- miners

    def challenge(self, request: RequestT) -> ChallengeT:
        """required: the typed challenge in a validated request (decoding any audio in it);
        raises ``CallerError`` for content the schema could not refuse."""
        raise NotImplementedError

    def generate(self, backend: Any, challenge: ChallengeT) -> Audio:
        """required: call ``backend`` to answer ``challenge``: (mono float32, rate)."""
        raise NotImplementedError

    def load_backend(self, name: str, **options: Any) -> Any:
        """Instantiate the backend ``name`` (its model loads here, once)."""
        if name not in self.backends:
            choices = ", ".join(sorted(self.backends)) or "none yet"
            raise CallerError(f"unknown {self.name} backend {name!r}; choose from {choices}")
        from chorus.numba_cache import compile_lock

        module, _, cls = self.backends[name].partition(":")
        with compile_lock():  # loading may compile numba kernels into the shared cache
            return getattr(importlib.import_module(module), cls)(**options)

    def backend_options(self, args: argparse.Namespace, loaded: Mapping[str, Any]) -> dict:
        """Constructor options for the miner's backend from its flags and the backends
        loaded before it (a cloner may reuse the TTS model)."""
        weights = getattr(args, f"{self.name}_weights", None)
        return {"weights": weights} if weights else {}

    def flag_options(self, args: argparse.Namespace, backend: str) -> dict:
        """Constructor options ``backend`` takes from this service's own flags (those of
        `add_miner_arguments` and `add_arguments`), for `chorus miner` and `chorus generate`
        alike, checked before anything loads: a flag the backend would not take (``backend``
        may be "none") or a bad value is a ``CallerError``. None by default."""
        return {}

    def add_miner_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Extra `chorus miner` flags of this service (``--NAME-backend`` is added for all;
        ``--NAME-weights`` here when some backend needs weights)."""
        if self.weights_backends:
            names = ", ".join(sorted(self.weights_backends))
            parser.add_argument(
                f"--{self.name}-weights", default=None, help=f"local model for the {names} backend"
            )

    # -- validators

    def available(self) -> str | None:
        """None if a validator can test this service here, else what is missing."""
        return None

    def tasks(self, ctx: TaskContext) -> Iterator[Task[ChallengeT]]:
        """required: an endless stream of fresh tasks."""
        raise NotImplementedError

    def load_evaluator(
        self, runtime: ScoringRuntime, loaded: Mapping[str, Evaluator]
    ) -> Evaluator[ChallengeT, ResultT]:
        """required: the evaluator, sharing models with those already ``loaded``."""
        raise NotImplementedError

    # -- the CLI and the bench

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """required: the arguments of `chorus generate NAME` or `chorus evaluate NAME`
        (``command``) that ``challenge_from_args`` reads."""
        raise NotImplementedError

    def challenge_from_args(self, args: argparse.Namespace) -> ChallengeT:
        """required: the challenge the command line describes."""
        raise NotImplementedError

    def bench_challenge(self, seconds: float) -> ChallengeT:
        """required: a fixed challenge whose answer lasts about ``seconds``."""
        raise NotImplementedError

    # -- the red team (``chorus redteam``)

    min_honest_score: ClassVar[float | None] = None  # what an honest answer must earn

    def redteam_cases(self, count: int, seed: int) -> list[RedTeamCase[ChallengeT]]:
        """``count`` seeded challenges with honest answers (by the default backend)."""
        return []

    def attacks(self) -> list[Attack]:
        """The degraded and cheating answers every scoring rule must rank below honest."""
        return []

    def bench_case(self, seconds: float, runtime: ScoringRuntime) -> BenchCase:
        backend = self.load_backend(self.default_backend)
        evaluator = self.load_evaluator(runtime, {})
        challenge = self.bench_challenge(seconds)
        return BenchCase(
            generate=lambda: self.generate(backend, challenge),
            evaluate=lambda samples, rate: evaluator.evaluate(samples, rate, challenge),
        )


# -- the registry ------------------------------------------------------------------------


@dataclass
class _Registry:
    services: dict[str, Service] = field(default_factory=dict)
    loaded: bool = False


_REGISTRY = _Registry()


def register(service: Service) -> Service:
    """Add (or replace) a service; returns it, so a module can keep a reference."""
    _REGISTRY.services[service.name] = service
    return service


def unregister(name: str) -> None:
    _REGISTRY.services.pop(name, None)


def registry() -> dict[str, Service]:
    """Every service by name: the built-ins, then plug-ins from ``$CHORUS_SERVICES`` and
    the ``chorus.services`` entry points (loaded on the first call)."""
    if not _REGISTRY.loaded:
        _REGISTRY.loaded = True
        for module in BUILTIN:
            importlib.import_module(module)
        for spec in os.environ.get(PLUGINS_ENV, "").split(","):
            if spec.strip():
                _load_plugin(spec.strip(), PLUGINS_ENV)
        for entry in entry_points(group=ENTRY_POINTS):
            _load_plugin(entry.value, f"entry point {entry.name!r}")
    return dict(_REGISTRY.services)


def _load_plugin(spec: str, where: str) -> None:
    """``package.module`` (which registers its services when imported) or
    ``package.module:NAME``, a ``Service`` instance or class to register."""
    module, _, attr = spec.partition(":")
    try:
        found = importlib.import_module(module)
        if attr:
            found = getattr(found, attr)
    except (ImportError, AttributeError) as e:
        raise CallerError(f"{where} names {spec!r}, which does not load: {e}") from None
    if isinstance(found, type) and issubclass(found, Service):
        found = found()
    if attr and not isinstance(found, Service):
        raise CallerError(f"{where} names {spec!r}, which is not a chorus Service")
    if isinstance(found, Service):
        register(found)


def get(name: str) -> Service:
    """The service ``name``; a ``CallerError`` listing the others if there is none."""
    services = registry()
    if name not in services:
        raise CallerError(f"unknown service {name!r}; choose from {', '.join(services)}")
    return services[name]


def load_scoring(names: list[str] | tuple[str, ...]) -> dict:
    """The evaluators of a scoring process (a validator, ``chorus evaluate``), sharing one
    new runtime, with its thread policy applied once they are loaded: the policy only
    reaches libraries already loaded."""
    from chorus.scoring.runtime import ScoringRuntime

    runtime = ScoringRuntime()
    evaluators = load_evaluators(names, runtime)
    runtime.limit_threads()
    return evaluators


def load_evaluators(names: list[str] | tuple[str, ...], runtime: ScoringRuntime) -> dict:
    """One evaluator per named service, in registry order so that later ones (clone) can
    share the models of earlier ones (tts)."""
    from chorus.numba_cache import compile_lock

    wanted = [get(n).name for n in names]
    loaded: dict[str, Evaluator] = {}
    with compile_lock():  # their warm-up compiles numba kernels into the shared cache
        for name, service in registry().items():
            if name in wanted:
                loaded[name] = service.load_evaluator(runtime, loaded)
    return loaded

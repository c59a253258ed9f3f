"""A fourth service, defined entirely in this file, runs through every part of chorus.

"tone": the prompt names a frequency, the miner sings a pure tone at it, the validator
finds the spectral peak. Registered here (in-process) or through ``CHORUS_SERVICES``
(the bench's worker processes), it goes through a real miner over signed HTTP, real
validator rounds (scored, stored with its typed result, weighted on the local chain),
the dashboard, the gateway, ``chorus generate``/``evaluate`` and ``chorus bench``, with
no change to any module of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from pydantic import Field

from chorus import audio
from chorus.cli import main
from chorus.dashboard import collect, render
from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys
from chorus.miner import Miner, create_app
from chorus.protocol import AudioFormat, GatewayBody, Strict
from chorus.scoring.runtime import ScoringRuntime
from chorus.services import (
    Column,
    Result,
    Service,
    Task,
    TaskContext,
    load_evaluators,
    register,
    registry,
    unregister,
)
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.cli import run_chorus
from tests.servers import ThreadServer, make_net

RATE = 16000
KEY = "tone-user:sk-tone-0123456789"


class ToneRequest(Strict):
    frequency: float = Field(ge=50.0, le=4000.0)
    duration: float = Field(ge=0.5, le=10.0)
    sample_rate: int | None = None
    format: AudioFormat = "wav"


@dataclass(frozen=True)
class ToneChallenge:
    frequency: float
    duration: float


@dataclass
class ToneResult(Result):
    found_hz: float | None = None
    cents_off: float | None = None

    def summary(self) -> str:
        return self.reason or f"{self.found_hz:.1f} Hz"


class ToneBackend:
    """An honest miner: the asked pitch."""

    model = "numpy-sine"
    detune = 1.0

    def sing(self, frequency: float, duration: float) -> tuple[np.ndarray, int]:
        t = np.arange(int(duration * RATE)) / RATE
        return (0.5 * np.sin(2 * np.pi * frequency * self.detune * t)).astype(np.float32), RATE


class SharpBackend(ToneBackend):
    """A careless miner: a fifth too high."""

    model = "numpy-sine-sharp"
    detune = 1.5


class ToneEvaluator:
    def evaluate(self, samples: np.ndarray, rate: int, challenge: ToneChallenge) -> ToneResult:
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        found = float(np.argmax(spectrum)) * rate / samples.size
        cents = 1200 * abs(np.log2(max(found, 1.0) / challenge.frequency))
        score = float(np.clip(1 - cents / 100, 0.0, 1.0))  # zero a semitone off
        return ToneResult(score=score, found_hz=found, cents_off=cents)


class ToneBody(GatewayBody):
    frequency: float
    duration: float = 1.0

    def to_miner(self) -> ToneRequest:
        return ToneRequest(
            frequency=self.frequency, duration=self.duration, format=self.response_format
        )


class ToneService(Service[ToneRequest, ToneChallenge, ToneResult]):
    name = "tone"
    label = "Tone"
    title = "Pure Tone"
    route = "/v1/tone"
    request = ToneRequest
    result = ToneResult
    backends = {
        "sine": "tests.test_service_plugin:ToneBackend",
        "sharp": "tests.test_service_plugin:SharpBackend",
    }
    default_backend = "sine"
    bench_seconds = 2.0
    columns = (Column("cents off", lambda r: r.cents_off, ".1f"),)
    gateway_route = "/v1/audio/tone"
    gateway_body = ToneBody

    def challenge(self, request: ToneRequest) -> ToneChallenge:
        return ToneChallenge(request.frequency, request.duration)

    def generate(self, backend: ToneBackend, challenge: ToneChallenge) -> tuple[np.ndarray, int]:
        return backend.sing(challenge.frequency, challenge.duration)

    def tasks(self, ctx: TaskContext) -> Iterator[Task[ToneChallenge]]:
        while True:
            hz = round(ctx.rng.uniform(200.0, 1000.0), 1)
            request = ToneRequest(frequency=hz, duration=1.0)
            yield Task(self.name, f"a pure tone at {hz} Hz", request, ToneChallenge(hz, 1.0))

    def load_evaluator(self, runtime: ScoringRuntime, loaded: Mapping) -> ToneEvaluator:
        return ToneEvaluator()

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--frequency", type=float, required=True)
        parser.add_argument("--duration", type=float, default=1.0)

    def challenge_from_args(self, args: argparse.Namespace) -> ToneChallenge:
        return ToneChallenge(args.frequency, args.duration)

    def bench_challenge(self, seconds: float) -> ToneChallenge:
        return ToneChallenge(440.0, seconds)


TONE = ToneService()


@pytest.fixture
def tone() -> Iterator[ToneService]:
    """The service registered in this process for one test, and gone after it."""
    register(TONE)
    yield TONE
    unregister(TONE.name)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    return ToneEvaluator().evaluate(samples, rate, ToneChallenge(440.0, 1.0)).found_hz


def test_tone_through_miner_validator_dashboard_and_gateway(tmp_path, tone):
    net = make_net(tmp_path, miners=2)
    honest, sharp = (w.hotkey.ss58_address for w in net.miners)
    with ExitStack() as stack:
        for hotkey, backend in ((honest, "sine"), (sharp, "sharp")):
            miner = Miner(hotkey, net.chain, {"tone": tone.load_backend(backend)})
            server = stack.enter_context(ThreadServer(create_app(miner)))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        honest_uid, sharp_uid = (net.chain.neuron(h).uid for h in (honest, sharp))

        store = ValidatorStore(tmp_path / "state" / "state.sqlite")
        settings = ValidatorSettings(
            services=("tone",), timeout_s=10, alpha=0.5, weights_interval_blocks=1, seed=5
        )
        evaluators = load_evaluators(["tone"], ScoringRuntime())
        validator = Validator(net.validator, net.chain, store, evaluators, settings)
        asyncio.run(validator.run(rounds=2))

        scores = store.scores()
        assert scores[honest_uid].score > 0.5 > scores[sharp_uid].score
        stored = store.answers(uid=honest_uid)[0]
        assert stored.service == "tone" and isinstance(stored.result, ToneResult)
        asked = float(stored.prompt.split(" at ")[1].split(" Hz")[0])
        assert stored.result.found_hz == pytest.approx(asked, rel=0.01)
        weights = net.chain.weights()[net.chain.neuron(validator.hotkey).uid]
        assert max(weights, key=weights.get) == honest_uid

        page = render(collect(store, net.chain))
        assert "cents off" in page and "a pure tone at" in page

        gateway = Gateway(
            net.validator,
            net.chain,
            store,
            load_keys(keys=[KEY]),
            GatewaySettings(timeout_s=10),
            RequestLog(open(os.devnull, "w")),  # noqa: SIM115 - lives as long as the app
        )
        public = stack.enter_context(ThreadServer(create_gateway_app(gateway)))
        reply = httpx.post(
            public.url + "/v1/audio/tone",
            json={"frequency": 330.0, "duration": 1.0},
            headers={"Authorization": f"Bearer {KEY.split(':', 1)[1]}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-chorus-miner-uid"] == str(honest_uid)
        samples, rate = audio.decode_bytes(reply.content)
        assert peak_hz(samples, rate) == pytest.approx(330.0, rel=0.01)


def test_tone_from_the_command_line(tmp_path, tone, capsys):
    out = tmp_path / "tone.wav"
    assert main(["generate", "tone", "--frequency", "523.3", "-o", str(out)]) == 0
    assert peak_hz(*audio.read(out)) == pytest.approx(523.3, rel=0.01)
    assert main(["evaluate", "tone", str(out), "--frequency", "523.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["score"] > 0.9 and result["found_hz"] == pytest.approx(523.3, rel=0.01)


def test_tone_in_chorus_bench():
    """The bench measures in fresh worker processes, which find the service through
    ``CHORUS_SERVICES`` as an operator's plug-in would be found."""
    assert "tone" not in registry()  # nothing registered it in this process
    done = run_chorus(
        *("bench", "--service", "tone", "--runs", "1", "--json"),
        env={"CHORUS_SERVICES": "tests.test_service_plugin:TONE"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout[done.stdout.index("[") :])
    assert {(r["service"], r["task"]) for r in rows} == {
        ("tone", "generation"),
        ("tone", "evaluation"),
    }
    assert all(r["duration_s"] == pytest.approx(2.0) for r in rows)

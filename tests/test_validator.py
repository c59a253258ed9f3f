"""The validator against real miners on 127.0.0.1: ranking, punishment, weights, restart."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from chorus.chain.local import LocalChain
from chorus.generation.tts import DegradedTTS
from chorus.miner import Miner, create_app
from chorus.piper import PiperTTS
from chorus.services.tts import SpeechResult
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, free_port, make_net


@dataclass
class ValidatorNet:
    """The local chain, the validator's wallet, and the uids of the honest, degraded and
    dead miners."""

    chain: LocalChain
    validator: object  # wallet
    uids: list[int]


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Three miners: honest Piper, degraded Piper, and one whose axon is dead."""
    tmp = tmp_path_factory.mktemp("valnet")
    net = make_net(tmp, miners=3)
    honest, degraded, dead = (w.hotkey.ss58_address for w in net.miners)
    with ExitStack() as stack:
        for hotkey, backend in ((honest, PiperTTS()), (degraded, DegradedTTS())):
            app = create_app(Miner(hotkey, net.chain, {"tts": backend}))
            server = stack.enter_context(ThreadServer(app))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        net.chain.serve_axon(dead, "127.0.0.1", free_port())  # nothing listens there
        uids = [net.chain.neuron(h).uid for h in (honest, degraded, dead)]
        yield ValidatorNet(net.chain, net.validator, uids)


def make_validator(net: ValidatorNet, state: Path, evaluator) -> Validator:
    store = ValidatorStore(state / "state.sqlite", state / "samples", max_samples=4)
    settings = ValidatorSettings(timeout_s=20, alpha=0.5, weights_interval_blocks=1, seed=3)
    return Validator(net.validator, net.chain, store, {"tts": evaluator}, settings)


def test_rounds_rank_honest_first_punish_dead_and_set_weights(network, tts_evaluator, tmp_path):
    validator = make_validator(network, tmp_path / "state", tts_evaluator)
    asyncio.run(validator.run(rounds=2))
    honest, degraded, dead = network.uids
    scores = validator.store.scores()
    assert scores[honest].score > scores[degraded].score > scores[dead].score == 0.0
    assert scores[dead].failed == 2 and scores[honest].answered == 2
    answers = validator.store.answers(uid=honest)
    assert isinstance(answers[0].result, SpeechResult)
    assert answers[0].result.wer <= 0.2 and answers[0].sample
    weights = network.chain.weights()[network.chain.neuron(validator.hotkey).uid]
    assert max(weights, key=weights.get) == honest
    assert sum(weights.values()) == pytest.approx(1.0) and dead not in weights


@pytest.fixture
def saved_state(network, tts_evaluator, tmp_path) -> Path:
    """A validator's state folder after two rounds, the validator gone."""
    state = tmp_path / "state"
    asyncio.run(make_validator(network, state, tts_evaluator).run(rounds=2))
    return state


def test_restart_resumes_from_saved_scores(network, tts_evaluator, saved_state):
    before = ValidatorStore(saved_state / "state.sqlite")
    saved, last = before.scores(), before.last_round()
    assert last == 2
    restarted = make_validator(network, saved_state, tts_evaluator)
    assert restarted.store.scores() == saved
    asyncio.run(restarted.run(rounds=1))
    assert restarted.store.last_round() == last + 1
    honest = network.uids[0]
    assert restarted.store.scores()[honest].answered == saved[honest].answered + 1

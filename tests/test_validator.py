"""The validator against real miners on 127.0.0.1: ranking, punishment, weights, restart."""

from __future__ import annotations

import asyncio

import pytest

from chorus.generation.tts import DegradedTTS, PiperTTS
from chorus.miner import Miner, create_app
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, free_port, make_net


@pytest.fixture(scope="module")
def network(tmp_path_factory, tts_evaluator):
    """Three miners: honest Piper, degraded Piper, and one whose axon is dead."""
    tmp = tmp_path_factory.mktemp("valnet")
    net = make_net(tmp, miners=3)
    honest, degraded, dead = (w.hotkey.ss58_address for w in net.miners)
    servers = [
        ThreadServer(create_app(Miner(honest, net.chain, {"tts": PiperTTS()}))),
        ThreadServer(create_app(Miner(degraded, net.chain, {"tts": DegradedTTS()}))),
    ]
    for hotkey, server in zip((honest, degraded), servers, strict=True):
        server.__enter__()
        net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
    net.chain.serve_axon(dead, "127.0.0.1", free_port())  # nothing listens there
    net.uids = [net.chain.neuron(h).uid for h in (honest, degraded, dead)]
    net.state = tmp / "state"
    yield net
    for server in servers:
        server.__exit__()


def make_validator(net, evaluator) -> Validator:
    store = ValidatorStore(net.state / "state.sqlite", net.state / "samples", max_samples=4)
    settings = ValidatorSettings(timeout_s=20, alpha=0.5, weights_interval_blocks=1, seed=3)
    return Validator(net.validator, net.chain, store, {"tts": evaluator}, settings)


def test_rounds_rank_honest_first_punish_dead_and_set_weights(network, tts_evaluator):
    validator = make_validator(network, tts_evaluator)
    asyncio.run(validator.run(rounds=2))
    honest, degraded, dead = network.uids
    scores = validator.store.scores()
    assert scores[honest].score > scores[degraded].score > scores[dead].score == 0.0
    assert scores[dead].failed == 2 and scores[honest].answered == 2
    answers = validator.store.answers(uid=honest)
    assert answers[0]["metrics"]["wer"] <= 0.2 and answers[0]["sample"]
    weights = network.chain.weights()[network.chain.neuron(validator.hotkey).uid]
    assert max(weights, key=weights.get) == honest
    assert sum(weights.values()) == pytest.approx(1.0) and dead not in weights


def test_restart_resumes_from_saved_scores(network, tts_evaluator):
    before = make_validator(network, tts_evaluator).store
    saved, last = before.scores(), before.last_round()
    assert last >= 2  # the previous test's rounds are on disk
    restarted = make_validator(network, tts_evaluator)
    assert restarted.store.scores() == saved
    asyncio.run(restarted.run(rounds=1))
    assert restarted.store.last_round() == last + 1
    honest = network.uids[0]
    assert restarted.store.scores()[honest].answered == saved[honest].answered + 1

"""The validator scores a round's answers together where the evaluator can (one batched
call), and falls back to one answer at a time when that call fails. Three real miners
serve noise over signed HTTP on 127.0.0.1; the evaluators are stand-ins defined here."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import numpy as np

from chorus.miner import Miner, create_app
from chorus.services import Result
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, make_net


class NoiseTTS:
    """1.5 s of fresh noise per answer (never a copy of another miner's)."""

    model = "noise"
    voices = ["noise"]

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def synthesize(self, text: str, voice: str | None = None):
        return (0.2 * self.rng.standard_normal(24000)).astype(np.float32), 16000


class RoundScorer:
    """Scores by the answer's RMS level, in rounds; ``broken`` makes the round call fail."""

    def __init__(self, broken: bool = False):
        self.broken = broken
        self.rounds: list[int] = []  # items per evaluate_round call
        self.singles = 0

    def evaluate(self, samples, rate, challenge) -> Result:
        self.singles += 1
        return Result(score=float(np.sqrt(np.mean(samples**2))), seconds=0.0)

    def evaluate_round(self, items) -> list[Result]:
        self.rounds.append(len(items))
        if self.broken:
            raise RuntimeError("batch failed")
        return [Result(score=float(np.sqrt(np.mean(s**2))), seconds=0.0) for s, _, _ in items]


def run_one_round(tmp_path, scorer: RoundScorer) -> Validator:
    net = make_net(tmp_path, miners=3)
    with ExitStack() as stack:
        for i, wallet in enumerate(net.miners):
            hotkey = wallet.hotkey.ss58_address
            app = create_app(Miner(hotkey, net.chain, {"tts": NoiseTTS(i)}))
            server = stack.enter_context(ThreadServer(app))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        store = ValidatorStore(tmp_path / "state.sqlite", tmp_path / "samples")
        settings = ValidatorSettings(timeout_s=20, seed=1, weights_interval_blocks=10**6)
        validator = Validator(net.validator, net.chain, store, {"tts": scorer}, settings)
        asyncio.run(validator.run(rounds=1))
    return validator


def test_a_round_is_scored_in_one_call(tmp_path):
    scorer = RoundScorer()
    validator = run_one_round(tmp_path, scorer)
    assert scorer.rounds == [3] and scorer.singles == 0
    answers = validator.store.answers(limit=10)
    assert len(answers) == 3 and all(0.15 < a.score < 0.25 for a in answers)


def test_a_failed_round_call_falls_back_to_one_answer_at_a_time(tmp_path):
    scorer = RoundScorer(broken=True)
    validator = run_one_round(tmp_path, scorer)
    assert scorer.rounds == [3] and scorer.singles == 3
    assert validator.faults["scoring"] == 1
    assert len([a for a in validator.store.answers(limit=10) if a.score > 0.15]) == 3

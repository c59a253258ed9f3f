"""No chain or scoring fault ends the validator loop, and chain calls stay off its event loop.

A real miner serves noise over signed HTTP on 127.0.0.1 and a real local chain holds the
registrations. The faults come from a ``Chain`` defined here that passes every call to the
local chain unless it has been told to raise (any exception, as an SDK might) or to block
in ``set_weights`` until the test lets it go, and from an evaluator that raises. Cheap
stand-ins (noise, a constant score) keep the rounds fast; they do not change the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

import numpy as np
import pytest

from chorus.chain import ChainError, Epoch, Neuron, WeightCommit
from chorus.chain.local import LocalChain
from chorus.miner import Miner, create_app
from chorus.services import Result
from chorus.store import ValidatorStore
from chorus.validator import RoundReport, Validator, ValidatorSettings
from tests.servers import Net, ThreadServer, make_net


class Events:
    """What happened, in order, across the test's threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[str] = []

    def add(self, what: str) -> None:
        with self.lock:
            self.items.append(what)

    def index(self, what: str) -> int:
        with self.lock:
            return self.items.index(what)

    def matching(self, prefix: str) -> list[int]:
        with self.lock:
            return [i for i, item in enumerate(self.items) if item.startswith(prefix)]


class NoiseTTS:
    """A miner backend answering 1.5 s of fresh noise (never a replay), noting each call."""

    model = "noise"
    voices = ["noise"]

    def __init__(self, events: Events):
        self.events = events
        self.calls = 0
        self.rng = np.random.default_rng(0)

    def synthesize(self, text: str, voice: str | None = None):
        self.calls += 1
        self.events.add(f"miner call {self.calls}")
        return (0.2 * self.rng.standard_normal(24000)).astype(np.float32), 16000


class FlakyChain:
    """The chain protocol over a real ``LocalChain``. ``fail[method]`` holds exceptions to
    raise, one per call, before the call goes through again; ``hold`` makes
    ``set_weights`` wait until it is set; every call is noted in ``events``."""

    def __init__(self, chain: LocalChain, events: Events):
        self.chain = chain
        self.events = events
        self.fail: dict[str, deque[BaseException]] = {
            "neurons": deque(),
            "block": deque(),
            "set_weights": deque(),
        }
        self.hold: threading.Event | None = None
        self.lock = threading.Lock()
        self.active = 0  # set_weights calls running now
        self.most_active = 0
        self.weight_sets = 0
        self.on_neurons = None  # called before each neurons() call outside the weights thread

    def inject(self, method: str, errors: Iterable[BaseException]) -> None:
        self.fail[method].extend(errors)

    def _maybe_fail(self, method: str) -> None:
        with self.lock:
            error = self.fail[method].popleft() if self.fail[method] else None
        if error is not None:
            self.events.add(f"{method} raised {type(error).__name__}")
            raise error

    def neurons(self) -> list[Neuron]:
        if self.on_neurons and not threading.current_thread().name.startswith("chorus-weights"):
            self.on_neurons()
        self._maybe_fail("neurons")
        return self.chain.neurons()

    def neuron(self, hotkey: str) -> Neuron | None:
        return self.chain.neuron(hotkey)

    def block(self) -> int:
        self._maybe_fail("block")
        return self.chain.block()

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        self.chain.serve_axon(hotkey, host, port)

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self._maybe_fail("set_weights")
            n = self.weight_sets + 1
            self.events.add(f"set_weights {n} started")
            if self.hold is not None:
                # Released by the test once the next round's miner call came; an event
                # loop blocked by this call never gets there, and the ordering shows it.
                self.hold.wait(timeout=8)
            self.chain.set_weights(hotkey, weights)
            self.weight_sets = n
            self.events.add(f"set_weights {n} finished")
        finally:
            with self.lock:
                self.active -= 1

    def weights(self) -> dict[int, dict[int, float]]:
        return self.chain.weights()

    def weight_commits(self) -> list[WeightCommit]:
        return self.chain.weight_commits()

    def last_epoch(self) -> Epoch | None:
        return self.chain.last_epoch()


class ConstantEvaluator:
    """Scores every answer 0.8, after raising each exception in ``fail`` once."""

    def __init__(self, fail: Iterable[BaseException] = ()):
        self.fail = deque(fail)
        self.calls = 0

    def evaluate(self, samples, rate, challenge) -> Result:
        self.calls += 1
        if self.fail:
            raise self.fail.popleft()
        return Result(score=0.8, seconds=0.0)


@pytest.fixture
def net(tmp_path) -> Net:
    return make_net(tmp_path, miners=1)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def miner(net, events):
    """The one miner, serving noise; yields its backend."""
    backend = NoiseTTS(events)
    hotkey = net.miners[0].hotkey.ss58_address
    with ThreadServer(create_app(Miner(hotkey, net.chain, {"tts": backend}))) as server:
        net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        yield backend


def make_validator(net: Net, chain, evaluator, **settings) -> Validator:
    store = ValidatorStore(net.root / "state" / "state.sqlite", net.root / "state" / "samples")
    options = dict(timeout_s=20, alpha=0.5, weights_interval_blocks=0, seed=1)
    options |= dict(retry_first_s=0.01, retry_max_s=0.04) | settings
    return Validator(net.validator, chain, store, {"tts": evaluator}, ValidatorSettings(**options))


def my_weights(net: Net, validator: Validator) -> dict[int, float]:
    return net.chain.weights().get(net.chain.neuron(validator.hotkey).uid, {})


# -- faults never end the loop ----------------------------------------------------------


def test_sdk_exceptions_from_every_chain_call_are_counted_and_the_loop_recovers(
    net, events, miner, caplog
):
    chain = FlakyChain(net.chain, events)
    chain.inject("neurons", [TypeError("'NoneType' object is not subscriptable")] * 3)
    chain.inject("neurons", [RuntimeError("websocket closed"), ChainError("unreachable")])
    chain.inject("block", [ValueError("bad block header")])
    chain.inject("set_weights", [RuntimeError("extrinsic dropped")])
    validator = make_validator(net, chain, ConstantEvaluator())
    backoffs = []  # the pause the loop took before each read of the chain for a round
    chain.on_neurons = lambda: backoffs.append(validator.backoff_s)
    reports: list[RoundReport] = []
    with caplog.at_level(logging.WARNING, logger="chorus.validator"):
        # One round a run: each run ends once its weight set is done, so the weights
        # faults meet the rounds in a known order (a set per round, the first two fail).
        for _ in range(4):
            asyncio.run(validator.run(rounds=1, on_round=reports.append))

    # Five failed reads, then four good rounds: the loop went on and recovered.
    assert [r.round for r in reports] == [1, 2, 3, 4]
    assert validator.store.last_round() == 4 and miner.calls == 4
    # Bounded exponential backoff (0.01 doubling up to 0.04), reset by a clean round.
    assert backoffs == [0.0, 0.01, 0.02, 0.04, 0.04, 0.04, 0.0, 0.0, 0.0]
    # Counted by stage, in the validator, each report and the store's meta.
    assert validator.faults == {"chain": 5, "scoring": 0, "weights": 2, "round": 0}
    assert reports[0].faults["chain"] == 5 and reports[-1].faults == validator.faults
    assert json.loads(validator.store.get_meta("faults")) == validator.faults
    assert "weights RuntimeError: extrinsic dropped" in validator.store.get_meta("last_fault")
    # A traceback the first time each kind is seen in a stage, one line after that.
    kinds = sorted(r.exc_info[0].__name__ for r in caplog.records if r.exc_info)
    assert kinds == ["ChainError", "RuntimeError", "RuntimeError", "TypeError", "ValueError"]
    again = [r for r in caplog.records if r.getMessage().startswith("chain fault #3 (TypeError)")]
    assert len(again) == 1 and not again[0].exc_info
    # Weights were set once the chain answered again, and the next report says so.
    assert chain.weight_sets == 2 and my_weights(net, validator)
    assert [r.weights_set for r in reports] == [False, False, False, True]


def test_fault_counts_survive_a_restart(net, events, miner):
    chain = FlakyChain(net.chain, events)
    chain.inject("neurons", [OSError("connection reset")] * 2)
    validator = make_validator(net, chain, ConstantEvaluator())
    asyncio.run(validator.run(rounds=1))
    assert validator.faults["chain"] == 2
    again = make_validator(net, chain, ConstantEvaluator())
    assert again.faults["chain"] == 2  # the dashboard reads the same counts from the store


def test_an_evaluator_that_raises_leaves_answers_unscored_and_the_loop_goes_on(net, events, miner):
    evaluator = ConstantEvaluator([RuntimeError("CUDA error: out of memory"), MemoryError()])
    validator = make_validator(net, FlakyChain(net.chain, events), evaluator)
    reports: list[RoundReport] = []
    asyncio.run(validator.run(rounds=3, on_round=reports.append))

    uid = net.chain.neuron(net.miners[0].hotkey.ss58_address).uid
    assert [r.unscored for r in reports] == [[uid], [uid], []]
    assert validator.faults["scoring"] == 2 and evaluator.calls == 3
    # Our evaluator's failure is not the miner's: those answers are left out, not zeroed.
    answers = validator.store.answers(uid=uid)
    assert len(answers) == 1 and answers[0].score == pytest.approx(0.8)
    score = validator.store.scores()[uid]
    assert score.answered == 1 and score.failed == 0
    assert validator.backoff_s == 0.0  # the clean round reset the pause


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("neurons", KeyboardInterrupt()),
        ("neurons", SystemExit(3)),
        ("set_weights", KeyboardInterrupt()),
        ("evaluator", SystemExit(4)),
    ],
)
def test_keyboard_interrupt_and_system_exit_still_stop_the_loop(net, events, miner, where, error):
    chain = FlakyChain(net.chain, events)
    evaluator = ConstantEvaluator()
    if where == "evaluator":
        evaluator.fail.append(error)
    else:
        chain.inject(where, [error])
    validator = make_validator(net, chain, evaluator)
    started = time.monotonic()
    with pytest.raises(type(error)):
        asyncio.run(validator.run(rounds=None))  # forever, but for the interrupt
    assert time.monotonic() - started < 30
    assert not any(validator.faults.values())  # an interrupt is not a fault


# -- chain calls off the event loop -----------------------------------------------------


def test_a_slow_weight_set_does_not_delay_the_next_rounds(net, events, miner):
    chain = FlakyChain(net.chain, events)
    chain.hold = threading.Event()
    validator = make_validator(net, chain, ConstantEvaluator())
    rounds_done = threading.Event()
    beats_while_held = []  # the event loop's heartbeat while the weight set waits

    def on_round(report: RoundReport) -> None:
        if report.round == 3:  # two more rounds ran while the first set was held
            rounds_done.set()

    async def main():
        async def heartbeat():
            # Only a free loop beats; the beats, not a timer, let the held set go once
            # round 3 is done, so a slow machine cannot make the window too short. A set
            # that blocked the loop would stop the beats, wait out its 8 s hold
            # and finish unreleased.
            while True:
                held = "set_weights 1 started" in events.items and not chain.hold.is_set()
                if held and "set_weights 1 finished" not in events.items:
                    beats_while_held.append(time.monotonic())
                    if rounds_done.is_set() and len(beats_while_held) >= 3:
                        chain.hold.set()
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        await validator.run(rounds=4, on_round=on_round)
        beat.cancel()

    asyncio.run(main())

    held = events.index("set_weights 1 started")
    released = events.index("set_weights 1 finished")
    calls_while_held = [i for i in events.matching("miner call") if held < i < released]
    # Rounds 2 and 3 called the miner while the first weight set was still waiting.
    assert len(calls_while_held) >= 2, events.items
    # The loop kept beating while the set was held, and its beats let the set go.
    assert len(beats_while_held) >= 3
    # Never two sets at once; the rounds in between queued no sets behind it.
    assert chain.most_active == 1
    for n in range(2, chain.weight_sets + 1):
        assert events.index(f"set_weights {n} started") > events.index(
            f"set_weights {n - 1} finished"
        )
    assert my_weights(net, validator) and validator.store.last_round() == 4


def test_run_returns_only_after_the_weight_set_in_flight(net, events, miner):
    chain = FlakyChain(net.chain, events)
    chain.hold = threading.Event()
    validator = make_validator(net, chain, ConstantEvaluator())
    threading.Timer(1.0, chain.hold.set).start()
    asyncio.run(validator.run(rounds=1))
    assert events.items[-1] == "set_weights 1 finished"
    assert my_weights(net, validator)


def test_a_prompt_generator_that_raises_is_started_again(net, events, miner):
    validator = make_validator(net, FlakyChain(net.chain, events), ConstantEvaluator())

    def broken():
        raise OSError("festival: text2wave timed out")
        yield  # a generator, as a service's tasks() is

    validator.tasks["tts"] = broken()
    asyncio.run(validator.run(rounds=2))
    assert validator.faults["round"] == 1 and validator.store.last_round() == 2


class CommitRevealChain(FlakyChain):
    """A commit-reveal subnet's view of commits: each set is a pending commit, and the
    one before it was dropped by the chain at its reveal."""

    def __init__(self, chain: LocalChain, events: Events, hotkey: str):
        super().__init__(chain, events)
        self.hotkey = hotkey

    def weight_commits(self) -> list[WeightCommit]:
        lost = WeightCommit(self.hotkey, 0, 90, 7, 100, {1: 65535}, "lost", "no validator permit")
        return [lost, WeightCommit(self.hotkey, 0, 120, 9, 130, {1: 65535})]


def test_a_set_on_a_commit_reveal_subnet_is_reported_as_a_commit_and_lost_ones_warned(
    net, events, miner, caplog
):
    chain = CommitRevealChain(net.chain, events, net.validator.hotkey.ss58_address)
    validator = make_validator(net, chain, ConstantEvaluator())
    with caplog.at_level(logging.INFO, logger="chorus.validator"):
        asyncio.run(validator.run(rounds=1))
    said = [r.getMessage() for r in caplog.records]
    assert "weights committed; the chain reveals them at block 130" in said
    assert "weights committed at block 90 were lost: no validator permit" in said

"""The validator loop: prompt, query, score, remember, and set weights.

Each round picks a service in rotation, makes a fresh prompt, queries a batch of miners
concurrently under one deadline, scores every answer (failures score zero), folds the
results into per-miner moving averages in one transaction, and sets weights on the chain
every ``weights_interval_blocks`` blocks. Everything it learns lives in a
``ValidatorStore``, so a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chorus import audio
from chorus.chain import Chain, ChainError, Neuron
from chorus.client import CallResult, MinerClient
from chorus.errors import CallerError
from chorus.fingerprint import Probe, ReplayMemory, near_copies, prompt_key
from chorus.incentive import weights_from_scores
from chorus.protocol import ANSWER_LIMITS
from chorus.services import Evaluator, Task, TaskContext, get, registry
from chorus.store import Answer, ValidatorStore

log = logging.getLogger("chorus.validator")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # backoff while the chain is unreachable


@dataclass
class ValidatorSettings:
    services: tuple[str, ...] = ("tts",)
    batch_size: int = 16
    timeout_s: float = 30.0
    alpha: float = 0.9
    weights_interval_blocks: int = 10
    round_interval_s: float = 0.0
    seed: int | None = None
    corpus: str | None = None
    voices: str | None = None  # folder of reference recordings (default: built-in bank)
    music_seconds: tuple[float, float] = (5.0, 15.0)


@dataclass
class RoundReport:
    round: int
    service: str
    prompt: str
    answers: list[Answer] = field(default_factory=list)
    weights_set: bool = False
    seconds: float = 0.0


class Validator:
    def __init__(
        self,
        wallet: Any,
        chain: Chain,
        store: ValidatorStore,
        evaluators: dict[str, Evaluator],
        settings: ValidatorSettings | None = None,
    ):
        self.wallet = wallet
        self.hotkey = wallet.hotkey.ss58_address
        self.chain = chain
        self.store = store
        self.evaluators = evaluators
        self.settings = settings or ValidatorSettings()
        self.rng = random.Random(self.settings.seed)
        self.replays = ReplayMemory(store)  # persisted: a restart keeps it
        known = registry()
        unknown = [name for name in self.settings.services if name not in known]
        if unknown or not self.settings.services:
            raise CallerError(
                f"validator cannot test {unknown or 'nothing'}; it knows {list(known)}"
            )
        missing = [name for name in self.settings.services if name not in evaluators]
        if missing:
            raise CallerError(f"no evaluator loaded for {missing}")
        ctx = TaskContext(
            rng=self.rng,
            seed=self.settings.seed,
            corpus=self.settings.corpus,
            voices=self.settings.voices,
            music_seconds=self.settings.music_seconds,
        )
        self.tasks: dict[str, Iterator[Task]] = {
            name: get(name).tasks(ctx) for name in self.settings.services
        }

    # -- one round -------------------------------------------------------------------

    def miners(self) -> list[Neuron]:
        """Neurons that serve an axon, other than ourselves, in a random batch."""
        serving = [n for n in self.chain.neurons() if n.url and n.hotkey != self.hotkey]
        self.rng.shuffle(serving)
        return sorted(serving[: self.settings.batch_size], key=lambda n: n.uid)

    async def run_round(self, client: MinerClient) -> RoundReport:
        start = time.perf_counter()
        round_no = self.store.last_round() + 1
        service = self.settings.services[(round_no - 1) % len(self.settings.services)]
        task = next(self.tasks[service])
        miners = self.miners()
        report = RoundReport(round_no, service, task.prompt)
        results = await asyncio.gather(
            *(
                client.call(n.url, n.hotkey, service, task.request, self.settings.timeout_s)
                for n in miners
            )
        )
        received = [self.receive(n, task, r) for n, r in zip(miners, results, strict=True)]
        self.reject_copies(round_no, received)
        loop = asyncio.get_running_loop()
        for answer, clip in received:
            if clip is not None and answer.error is None:
                await loop.run_in_executor(None, self.score, answer, task, clip)
            report.answers.append(answer)
        self.store.record_round(round_no, report.answers, self.settings.alpha)
        report.weights_set = self.maybe_set_weights()
        report.seconds = time.perf_counter() - start
        return report

    def receive(
        self, neuron: Neuron, task: Task, result: CallResult
    ) -> tuple[Answer, tuple[np.ndarray, int] | None]:
        """Decode one miner's answer; anything that is not valid audio scores zero."""
        answer = Answer(
            uid=neuron.uid,
            hotkey=neuron.hotkey,
            service=task.service,
            prompt=task.prompt,
            score=0.0,
            latency_s=round(result.latency_s, 4),
        )
        if result.answer is None:
            answer.error = result.error or "no answer"
            return answer, None
        answer.synthesis_s = result.answer.synthesis_s
        try:
            return answer, audio.decode(result.answer.audio, ANSWER_LIMITS)
        except audio.AudioError as e:
            answer.error = f"bad audio: {e}"
            return answer, None

    def reject_copies(
        self, round_no: int, received: list[tuple[Answer, tuple[np.ndarray, int] | None]]
    ) -> None:
        """Zero answers that near-copy another miner's answer in this round, or that replay
        an earlier answer; remember the rest (``chorus.fingerprint``).

        Near-copy means re-encoded, resampled, gain-changed, trimmed or noisy, not only
        identical. Honest generation is stochastic, so two miners' answers that share most
        of their landmarks mean shared output; which one is the original cannot be told
        from the outside (a copier can even answer first), so every member of such a group
        earns nothing this round.

        A replay is a near-copy of any answer that any miner gave in an earlier round (the
        memory is persisted in the store and survives a restart), not only the same
        miner's: a miner can fetch another's earlier answers from the dashboard's samples
        and serve them when a prompt comes round again. The one exception is the same
        miner's (hotkey's) answer to the same prompt, which a deterministic backend rightly
        repeats. Every answer that is not a replay is remembered, copies included (what
        was copied once can be replayed later); replays are not (their source is)."""
        valid = [(a, Probe(*clip)) for a, clip in received if clip is not None]
        pairs = near_copies([probe for _, probe in valid])
        fresh = []
        for (answer, probe), twins in zip(valid, pairs, strict=True):
            key = prompt_key(answer.service, answer.prompt)
            if twins:
                best = max(twins.values(), key=lambda m: m.score)
                uids = ", ".join(str(valid[i][0].uid) for i in sorted(twins))
                answer.error = (
                    f"identical to uid {uids}'s answer, or a near-copy"
                    f" ({best.score:.0%} of landmarks shared)"
                )
            elif (replay := self.replays.seen(probe, answer.hotkey, key)) is not None:
                earlier = replay.earlier
                whose = "its own" if earlier.hotkey == answer.hotkey else f"uid {earlier.uid}'s"
                answer.error = (
                    f"replay of an answer from round {earlier.round} ({whose} answer,"
                    f" {replay.match.score:.0%} of landmarks shared)"
                )
                continue
            fresh.append((answer.uid, answer.hotkey, key, probe.fingerprint))
        self.replays.remember(round_no, fresh)

    def score(self, answer: Answer, task: Task, clip: tuple[np.ndarray, int]) -> None:
        samples, rate = clip
        result = self.evaluators[task.service].evaluate(samples, rate, task.challenge)
        answer.score = float(result.score)
        answer.eval_s = round(result.seconds, 4)
        answer.result = result
        answer.audio = audio.encode_bytes(samples, rate, "flac")

    # -- weights ---------------------------------------------------------------------

    def weights(self) -> dict[int, float]:
        """Weights from the moving-average scores of miners still registered, through
        ``chorus.incentive`` (relative to the best, to the 6th power, nothing under half the
        best)."""
        current = {n.uid: n.hotkey for n in self.chain.neurons()}
        scores = {
            uid: s.score for uid, s in self.store.scores().items() if current.get(uid) == s.hotkey
        }
        return weights_from_scores(scores)

    def maybe_set_weights(self, force: bool = False) -> bool:
        """Set weights if the interval has passed; a chain failure is logged and retried
        at the next round, never fatal."""
        try:
            block = self.chain.block()
            last = int(self.store.get_meta("weights_block", "-1") or -1)
            if not force and last >= 0 and block - last < self.settings.weights_interval_blocks:
                return False
            weights = self.weights()
            if not weights:
                return False
            self.chain.set_weights(self.hotkey, weights)
        except ChainError as e:
            log.warning("could not set weights now (will retry): %s", e)
            return False
        self.store.set_meta("weights_block", block)
        return True

    # -- the loop --------------------------------------------------------------------

    async def run(
        self,
        rounds: int | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Run ``rounds`` rounds (forever if None) until ``stop`` is set."""
        client = MinerClient(self.wallet)
        done, backoff = 0, RETRY_FIRST_S
        try:
            while rounds is None or done < rounds:
                if stop is not None and stop.is_set():
                    break
                try:
                    report = await self.run_round(client)
                except ChainError as e:
                    log.warning("chain unavailable, retrying in %.0f s: %s", backoff, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX_S)
                    continue
                done, backoff = done + 1, RETRY_FIRST_S
                if on_round:
                    on_round(report)
                if self.settings.round_interval_s:
                    await asyncio.sleep(self.settings.round_interval_s)
        finally:
            await client.aclose()


def format_round(report: RoundReport) -> str:
    """One readable line per miner, for progress output."""
    lines = [
        f"round {report.round} [{report.service}] {report.seconds:.1f}s"
        f"{' weights set' if report.weights_set else ''}: {report.prompt[:70]!r}"
    ]
    for a in report.answers:
        if a.error:
            lines.append(f"  uid {a.uid:>3}  score 0.000  error: {a.error[:80]}")
        else:
            extra = a.result.summary() if a.result else ""
            lines.append(f"  uid {a.uid:>3}  score {a.score:.3f}  {extra}  eval {a.eval_s:.2f}s")
    return "\n".join(lines)

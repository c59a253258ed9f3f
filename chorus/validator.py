"""The validator loop: prompt, query, score, remember, and set weights.

Each round picks a service in rotation, makes a fresh prompt, queries a batch of miners
concurrently under one deadline, scores every answer (failures score zero), folds the
results into per-miner moving averages in one transaction, and sets weights on the chain
every ``weights_interval_blocks`` blocks. Everything it learns lives in a
``ValidatorStore``, so a restart resumes where it stopped.

No fault of the chain or of scoring ends the loop. A round that cannot run (the chain
unreadable, whatever the SDK raised) or whose evaluator failed is logged (with its
traceback the first time each kind is seen), counted by stage (``Validator.faults``,
``RoundReport.faults`` and the store's ``faults`` meta, for the dashboard), and followed
by a pause that doubles up to ``retry_max_s``; the loop goes on and the pause resets after
a clean round. Only ``KeyboardInterrupt``, ``SystemExit`` and cancellation stop it.

Chain calls never run on the event loop: the miner list is read in a worker thread, and
weights are set by one dedicated thread while the next rounds go on, so an extrinsic
that waits for finalisation delays no scoring, and two weight sets never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus import audio
from chorus.chain import Chain, ChainError, Neuron
from chorus.client import CallResult, MinerClient
from chorus.config import check_counts, check_seconds
from chorus.errors import CallerError, ChorusError
from chorus.fingerprint import Probe, ReplayMemory, near_copies, prompt_key
from chorus.incentive import weights_from_scores
from chorus.protocol import ANSWER_LIMITS
from chorus.services import (
    MUSIC_TASK_SECONDS,
    Evaluator,
    Result,
    RoundEvaluator,
    Task,
    TaskContext,
    evaluate_round,
    get,
    registry,
)
from chorus.store import Answer, ValidatorStore

log = logging.getLogger("chorus.validator")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # backoff after a faulty round
# Where a fault happened: reading the chain for a round, scoring an answer, setting
# weights, or anywhere else in a round (prompts, the store, copy checks).
FAULT_STAGES = ("chain", "scoring", "weights", "round")


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
    music_seconds: tuple[float, float] = MUSIC_TASK_SECONDS
    retry_first_s: float = RETRY_FIRST_S  # pause after a faulty round, doubled up to...
    retry_max_s: float = RETRY_MAX_S

    def __post_init__(self) -> None:
        """Refuse settings a validator cannot run with (CallerError), before any model
        loads: a moving average outside [0, 1) would write scores outside [0, 1]."""
        check_counts(("--batch-size", self.batch_size))
        if not 0 <= self.alpha < 1:
            raise CallerError(f"--alpha must be at least 0 and below 1, not {self.alpha}")
        if self.weights_interval_blocks < 0:
            raise CallerError(
                f"--weights-interval must be 0 or more, not {self.weights_interval_blocks}"
            )
        check_seconds(
            ("--timeout", self.timeout_s),
            ("retry_first_s", self.retry_first_s),
            ("retry_max_s", self.retry_max_s),
        )
        if not 0 <= self.round_interval_s < math.inf:
            raise CallerError(
                f"--round-interval must be 0 or more seconds, not {self.round_interval_s}"
            )
        if self.corpus is not None and not Path(self.corpus).expanduser().is_file():
            raise CallerError(f"--corpus {self.corpus}: no such file (one sentence a line)")


@dataclass
class RoundReport:
    """One round's answers. ``weights_set``: a weight set (running in the background)
    succeeded since the previous report. ``unscored``: uids whose answer the evaluator
    failed on; left out of the round, so the miner's score does not move. ``faults``:
    the validator's fault counts by stage so far."""

    round: int
    service: str
    prompt: str
    answers: list[Answer] = field(default_factory=list)
    weights_set: bool = False
    seconds: float = 0.0
    unscored: list[int] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)


class _StageFault(Exception):
    """A round stopped by a fault in ``stage``; the cause is chained."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


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
        self._ctx = ctx = TaskContext(
            rng=self.rng,
            seed=self.settings.seed,
            corpus=self.settings.corpus,
            voices=self.settings.voices,
            music_seconds=self.settings.music_seconds,
        )
        if self.settings.corpus:
            _ = ctx.speech  # the corpus is read now: a bad one stops the start, not each round
        self.tasks: dict[str, Iterator[Task]] = {
            name: get(name).tasks(ctx) for name in self.settings.services
        }
        self._fault_lock = threading.Lock()
        self._faults = {stage: 0 for stage in FAULT_STAGES} | store.faults()
        self._traced: set[tuple[str, str]] = set()  # (stage, type) logged with a traceback
        self.backoff_s = 0.0  # the pause before the current attempt (0 after a clean round)
        # One thread sets weights, so a slow extrinsic never blocks the event loop and two
        # sets never overlap; the lock also covers direct calls of maybe_set_weights.
        self._weights_pool = ThreadPoolExecutor(1, thread_name_prefix="chorus-weights")
        self._weights_job: Future[bool] | None = None
        self._weights_fresh = False  # a set succeeded since the last report
        self._weights_lock = threading.Lock()

    # -- faults ----------------------------------------------------------------------

    @property
    def faults(self) -> dict[str, int]:
        """Faults counted by stage (``FAULT_STAGES``) over this state's lifetime."""
        with self._fault_lock:
            return dict(self._faults)

    def record_fault(self, stage: str, error: BaseException, logged: bool = False) -> None:
        """Count a fault, keep the counts in the store's meta (``faults``, ``last_fault``),
        and log it (unless the caller has): with a traceback the first time this stage
        sees this exception type, in one line after that. Thread-safe (weights are set
        from a worker thread)."""
        kind = type(error).__name__
        reason = error.reason if isinstance(error, ChorusError) else str(error)
        with self._fault_lock:
            self._faults[stage] = self._faults.get(stage, 0) + 1
            counts = dict(self._faults)
            first = (stage, kind) not in self._traced
            self._traced.add((stage, kind))
        if not logged:
            level = logging.WARNING if isinstance(error, ChorusError) else logging.ERROR
            log.log(
                level,
                "%s fault #%d (%s): %s",
                stage,
                counts[stage],
                kind,
                reason,
                exc_info=error if first else None,
            )
        try:
            self.store.set_meta("faults", json.dumps(counts, sort_keys=True))
            self.store.set_meta("last_fault", f"{time.time():.0f} {stage} {kind}: {reason}"[:500])
        except Exception as e:  # the store itself failing must not turn one fault into two
            log.warning("could not record the fault count in the store: %s", e)

    # -- one round -------------------------------------------------------------------

    def miners(self) -> list[Neuron]:
        """Neurons that serve an axon, other than ourselves, in a random batch."""
        serving = [n for n in self.chain.neurons() if n.url and n.hotkey != self.hotkey]
        self.rng.shuffle(serving)
        return sorted(serving[: self.settings.batch_size], key=lambda n: n.uid)

    async def run_round(self, client: MinerClient) -> RoundReport:
        """One round. The chain is read in a worker thread; a fault there ends the round
        (``_StageFault`` "chain"), an evaluator's fault only leaves that answer out."""
        start = time.perf_counter()
        round_no = self.store.last_round() + 1
        service = self.settings.services[(round_no - 1) % len(self.settings.services)]
        try:
            task = next(self.tasks[service])
        except Exception as e:  # a generator that raised is spent: the next round starts anew
            self.tasks[service] = get(service).tasks(self._ctx)
            raise _StageFault("round", e) from e
        try:
            miners = await asyncio.to_thread(self.miners)
        except Exception as e:
            raise _StageFault("chain", e) from e
        report = RoundReport(round_no, service, task.prompt)
        results = await asyncio.gather(
            *(
                client.call(n.url, n.hotkey, service, task.request, self.settings.timeout_s)
                for n in miners
            )
        )
        received = [self.receive(n, task, r) for n, r in zip(miners, results, strict=True)]
        self.reject_copies(round_no, received)
        scored = await self.score_round(task, received)
        loop = asyncio.get_running_loop()
        for answer, clip in received:
            if clip is not None and answer.error is None:
                try:
                    if id(answer) in scored:
                        self.keep(answer, scored[id(answer)], clip)
                    else:
                        await loop.run_in_executor(None, self.score, answer, task, clip)
                except Exception as e:  # our evaluator failed, not the miner
                    self.record_fault("scoring", e)
                    report.unscored.append(answer.uid)
                    continue
            report.answers.append(answer)
        self.store.record_round(round_no, report.answers, self.settings.alpha)
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

    async def score_round(
        self, task: Task, received: list[tuple[Answer, tuple[np.ndarray, int] | None]]
    ) -> dict[int, Result]:
        """Score the round's decodable, original answers at once where the evaluator can
        (speech: Whisper decodes them as one batch; ``services.evaluate_round``); results
        by ``id(answer)``. If the batch fails, nothing is returned and each answer is then
        scored alone, so a fault costs only the answer it belongs to."""
        evaluator = self.evaluators[task.service]
        scorable = [(a, clip) for a, clip in received if clip is not None and a.error is None]
        if not isinstance(evaluator, RoundEvaluator) or len(scorable) < 2:
            return {}
        items = [(samples, rate, task.challenge) for _, (samples, rate) in scorable]
        try:
            results = await asyncio.to_thread(evaluate_round, evaluator, items)
        except Exception as e:
            self.record_fault("scoring", e)
            return {}
        return {id(a): r for (a, _), r in zip(scorable, results, strict=True)}

    def score(self, answer: Answer, task: Task, clip: tuple[np.ndarray, int]) -> None:
        samples, rate = clip
        result = self.evaluators[task.service].evaluate(samples, rate, task.challenge)
        self.keep(answer, result, clip)

    def keep(self, answer: Answer, result: Result, clip: tuple[np.ndarray, int]) -> None:
        """Put an evaluator's result on the answer, with the audio for the dashboard."""
        answer.score = float(result.score)
        answer.eval_s = round(result.seconds, 4)
        answer.result = result
        answer.audio = audio.encode_bytes(clip[0], clip[1], "flac")

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
        """Set weights if the interval has passed. Blocking (an extrinsic may wait for
        finalisation): the loop calls it in its weights thread. Any failure, whatever the
        chain or its SDK raised, is counted (stage "weights") and retried at the next
        round, never fatal; never two at once."""
        with self._weights_lock:
            try:
                block = self.chain.block()
                last = int(self.store.get_meta("weights_block", "-1") or -1)
                interval = self.settings.weights_interval_blocks
                if not force and last >= 0 and block - last < interval:
                    return False
                weights = self.weights()
                if not weights:
                    return False
                self.chain.set_weights(self.hotkey, weights)
                self.store.set_meta("weights_block", block)
                self._report_commits()
            except ChainError as e:  # refused or unreachable: its reason says which
                log.warning("could not set weights now (will retry): %s", e)
                self.record_fault("weights", e, logged=True)
                return False
            except Exception as e:
                self.record_fault("weights", e)
                return False
        return True

    def _report_commits(self) -> None:
        """On a commit-reveal subnet a set is only a commit: say when the chain reveals
        it, and warn about earlier commits it dropped at the reveal (the backend checks)."""
        commits = self.chain.weight_commits()
        latest = commits[-1] if commits else None
        if latest is not None and latest.status == "pending" and latest.hotkey == self.hotkey:
            log.info("weights committed; the chain reveals them at block %d", latest.reveal_block)
        for c in commits:
            if c.status == "lost" and c.hotkey == self.hotkey:
                log.warning("weights committed at block %d were lost: %s", c.block, c.reason)

    def _start_weights(self) -> None:
        """Hand a weight set to the weights thread, unless one is still running."""
        self._collect_weights()
        if self._weights_job is None:
            self._weights_job = self._weights_pool.submit(self.maybe_set_weights)
        else:
            log.info("weights are still being set; not starting another set")

    def _collect_weights(self) -> None:
        """Note whether a finished weight set succeeded; re-raises a ``KeyboardInterrupt``
        or ``SystemExit`` it ended with (it catches every ``Exception`` itself)."""
        job = self._weights_job
        if job is not None and job.done():
            self._weights_job = None
            self._weights_fresh |= job.result()

    async def _settle_weights(self) -> None:
        """Wait, off the loop, for the weight set in flight, if any."""
        if self._weights_job is not None:
            await asyncio.wait({asyncio.wrap_future(self._weights_job)})
        self._collect_weights()

    # -- the loop --------------------------------------------------------------------

    async def run(
        self,
        rounds: int | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Run ``rounds`` completed rounds (forever if None) until ``stop`` is set.

        A round that fails is counted and retried after a pause (``retry_first_s``,
        doubling up to ``retry_max_s``); a round with unscored answers counts as done but
        is followed by the same pause. Weights are set in the background after every
        round but one that could not read the chain (``_start_weights``); a normal return
        waits for the set in flight."""
        client = MinerClient(self.wallet)
        done = 0
        delay = self.settings.retry_first_s
        try:
            while rounds is None or done < rounds:
                if stop is not None and stop.is_set():
                    break
                stage = None
                try:
                    report = await self.run_round(client)
                except _StageFault as e:
                    stage, report = e.stage, None
                    self.record_fault(stage, e.error)
                except Exception as e:  # never fatal: counted, paused, tried again
                    stage, report = "round", None
                    self.record_fault(stage, e)
                # Weights come from the moving averages, so a round that failed for any
                # reason but an unreadable chain still tries.
                if stage != "chain":
                    self._start_weights()
                if report is not None:
                    done += 1
                    report.weights_set, self._weights_fresh = self._weights_fresh, False
                    report.faults = self.faults
                    if on_round:
                        on_round(report)
                if report is None or report.unscored:
                    self.backoff_s = delay
                    log.warning("pausing %.1f s after a faulty round", delay)
                    await _pause(delay, stop)
                    delay = min(delay * 2, self.settings.retry_max_s)
                    continue
                self.backoff_s, delay = 0.0, self.settings.retry_first_s
                if self.settings.round_interval_s:
                    await _pause(self.settings.round_interval_s, stop)
            await self._settle_weights()
        finally:
            await client.aclose()


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def format_round(report: RoundReport) -> str:
    """One readable line per miner, for progress output."""
    lines = [
        f"round {report.round} [{report.service}] {report.seconds:.1f}s"
        f"{' weights set' if report.weights_set else ''}: {report.prompt[:70]!r}"
    ]
    if report.unscored:
        lines.append(f"  not scored (evaluator failed): uids {report.unscored}")
    if any(report.faults.values()):
        counts = ", ".join(f"{stage} {n}" for stage, n in report.faults.items() if n)
        lines.append(f"  faults so far: {counts}")
    for a in report.answers:
        if a.error:
            lines.append(f"  uid {a.uid:>3}  score 0.000  error: {a.error[:80]}")
        else:
            extra = a.result.summary() if a.result else ""
            lines.append(f"  uid {a.uid:>3}  score {a.score:.3f}  {extra}  eval {a.eval_s:.2f}s")
    return "\n".join(lines)

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from chorus import audio
from chorus.chain import Chain, ChainError, Neuron
from chorus.client import CallResult, MinerClient
from chorus.fingerprint import COPY_THRESHOLD, ReplayMemory, fingerprint, similarity
from chorus.music_prompts import music_prompts
from chorus.prompts import SpeechPrompts
from chorus.protocol import CloneRequest, MusicRequest, TTSRequest
from chorus.scoring import Score
from chorus.store import Answer, ValidatorStore

log = logging.getLogger("chorus.validator")

ANSWER_LIMITS = audio.AudioLimits(max_seconds=180.0)
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
class Task:
    """One round's challenge: the request sent to every miner and how to score answers."""

    service: str
    prompt: str
    request: BaseModel
    score: Callable[[np.ndarray, int], Score]


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
        evaluators: dict[str, Any],
        settings: ValidatorSettings | None = None,
    ):
        self.wallet = wallet
        self.hotkey = wallet.hotkey.ss58_address
        self.chain = chain
        self.store = store
        self.evaluators = evaluators
        self.settings = settings or ValidatorSettings()
        self.rng = random.Random(self.settings.seed)
        self.speech = SpeechPrompts(seed=self.settings.seed, corpus=self.settings.corpus)
        self.replays = ReplayMemory()
        self.task_makers: dict[str, Callable[[], Task]] = {
            "tts": self._tts_task,
            "clone": self._clone_task,
            "music": self._music_task,
        }
        unknown = [s for s in self.settings.services if s not in self.task_makers]
        if unknown or not self.settings.services:
            raise ValueError(
                f"validator cannot test {unknown or 'nothing'}; it knows {list(self.task_makers)}"
            )
        self.voice_bank = self._voice_bank() if "clone" in self.settings.services else None
        self.music = (
            music_prompts(self.settings.seed) if "music" in self.settings.services else None
        )

    def _voice_bank(self):
        from chorus.voices import VoiceBank

        if self.settings.voices:
            return VoiceBank.from_folder(self.settings.voices)
        bank = VoiceBank.builtin()
        if not bank.voices:
            raise ValueError(
                "no reference voices for clone: install the Festival voices "
                f"({'; '.join(sorted(set(bank.missing.values())))}) or pass --voices DIR"
            )
        return bank

    # -- tasks -----------------------------------------------------------------------

    def _tts_task(self) -> Task:
        prompt = self.speech.next(sentences=self.rng.choice([1, 2, 2, 3]))
        evaluator = self.evaluators["tts"]
        return Task(
            service="tts",
            prompt=prompt.text,
            request=TTSRequest(text=prompt.text),
            score=lambda samples, rate: evaluator.evaluate(samples, rate, prompt.text),
        )

    def _clone_task(self) -> Task:
        assert self.voice_bank is not None
        prompt = self.speech.next(sentences=self.rng.choice([1, 2]))
        voice = self.rng.choice(self.voice_bank.voices)
        ref, ref_rate = self.voice_bank.reference(
            voice, np.random.default_rng(self.rng.getrandbits(32))
        )
        evaluator = self.evaluators["clone"]
        return Task(
            service="clone",
            prompt=f"[{voice}] {prompt.text}",
            request=CloneRequest(text=prompt.text, reference=audio.encode(ref, ref_rate, "flac")),
            score=lambda samples, rate: evaluator.evaluate(
                samples, rate, prompt.text, ref, ref_rate
            ),
        )

    def _music_task(self) -> Task:
        assert self.music is not None
        asked = next(self.music)
        lo, hi = self.settings.music_seconds
        duration = round(self.rng.uniform(lo, hi), 1)
        evaluator = self.evaluators["music"]
        return Task(
            service="music",
            prompt=f"{asked.text} ({duration:g} s)",
            request=MusicRequest(prompt=asked.text, duration=duration),
            score=lambda samples, rate: evaluator.evaluate(samples, rate, asked.text, duration),
        )

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
        task = self.task_makers[service]()
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
        """Zero answers that are near-identical to another miner's answer in this round, or
        that replay an answer from an earlier round.

        Honest generation is stochastic, so identical answers mean shared output. Which
        one is the original cannot be told from the outside (a copier can even answer
        first), so every member of an identical group earns nothing this round."""
        valid = [(a, fingerprint(*clip)) for a, clip in received if clip is not None]
        fresh: list[tuple[Answer, np.ndarray]] = []
        for answer, fp in valid:
            twins = [
                o.uid
                for o, ofp in valid
                if o is not answer and similarity(fp, ofp) > COPY_THRESHOLD
            ]
            earlier = self.replays.seen(fp)
            if twins:
                answer.error = f"identical to uid {', '.join(map(str, twins))}'s answer"
            elif earlier is not None:
                answer.error = f"replay of an answer from round {earlier}"
            else:
                fresh.append((answer, fp))
        for _, fp in fresh:
            self.replays.remember(round_no, fp)

    def score(self, answer: Answer, task: Task, clip: tuple[np.ndarray, int]) -> None:
        samples, rate = clip
        scored = task.score(samples, rate)
        answer.score = float(scored.score)
        answer.eval_s = round(scored.seconds, 4)
        answer.metrics = scored.to_json()
        answer.audio = audio.encode_bytes(samples, rate, "flac")

    # -- weights ---------------------------------------------------------------------

    def weights(self) -> dict[int, float]:
        """Normalised weights from moving-average scores of miners still registered."""
        current = {n.uid: n.hotkey for n in self.chain.neurons()}
        raw = {
            uid: s.score
            for uid, s in self.store.scores().items()
            if current.get(uid) == s.hotkey and np.isfinite(s.score) and s.score > 0
        }
        total = sum(raw.values())
        return {uid: w / total for uid, w in raw.items()} if total > 0 else {}

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
            m = a.metrics
            extra = f"wer {m['wer']:.2f}" if m.get("wer") is not None else m.get("reason", "")
            lines.append(f"  uid {a.uid:>3}  score {a.score:.3f}  {extra}  eval {a.eval_s:.2f}s")
    return "\n".join(lines)

"""Load a miner with concurrent signed requests and report what it did under pressure.

A miner should answer what it can, refuse the rest quickly with 429 (its queue is
bounded), and never fall over or grow without bound. ``hammer`` measures exactly that:
status counts, latency percentiles for the answered requests, and throughput. ``flood``
measures what a flood of signed requests from a key that is not on the subnet costs the
miner: how fast it refuses them, and how much slower an honest validator is answered
while it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from chorus.auth import sign
from chorus.services.tts import TTSRequest

SENTENCES = [
    "The lighthouse keeper counted forty ships before the storm arrived.",
    "Fresh bread and warm soup were waiting for the travellers at the inn.",
    "Our train was delayed by twenty minutes because of snow on the tracks.",
    "She painted the garden fence a bright shade of yellow last spring.",
]
# During a flood the honest validator asks at this pace, as a validator's rounds would,
# rather than back to back (which would take the miner's CPU from the flood it measures).
HONEST_EVERY_S = 0.25
FLOOD_REQUESTS = 400  # requests in each of a flood's two runs, unless told otherwise


@dataclass
class LoadReport:
    requests: int
    concurrency: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    throughput_rps: float = 0.0  # answered (200) requests per second
    rejected_p50_s: float | None = None  # how fast a 429 comes back


async def _signed_post(
    client: httpx.AsyncClient, url: str, wallet, miner_hotkey: str, raw: bytes
) -> tuple[str, float]:
    """POST a TTS body signed afresh by ``wallet``: its status (or the error's name) and
    how long the answer took (signing excluded)."""
    headers = sign(wallet, "POST", "/v1/tts", raw, miner_hotkey)
    start = time.perf_counter()
    try:
        r = await client.post(url + "/v1/tts", content=raw, headers=headers)
        status = str(r.status_code)
    except httpx.HTTPError as e:
        status = type(e).__name__
    return status, time.perf_counter() - start


async def hammer(
    url: str,
    miner_hotkey: str,
    wallet,
    requests: int = 50,
    concurrency: int = 50,
    timeout: float = 120.0,
) -> LoadReport:
    """Send ``requests`` TTS requests, ``concurrency`` at a time, each signed afresh."""
    gate = asyncio.Semaphore(concurrency)
    statuses: Counter[str] = Counter()
    ok_latency: list[float] = []
    rejected_latency: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            status, elapsed = await _signed_post(client, url, wallet, miner_hotkey, _tts_body(i))
        statuses[status] += 1
        if status == "200":
            ok_latency.append(elapsed)
        elif status == "429":
            rejected_latency.append(elapsed)

    start = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(one(client, i) for i in range(requests)))
    seconds = time.perf_counter() - start

    return LoadReport(
        requests=requests,
        concurrency=concurrency,
        seconds=round(seconds, 2),
        statuses=dict(statuses),
        latency_p50_s=_pct(ok_latency, 50),
        latency_p90_s=_pct(ok_latency, 90),
        latency_p99_s=_pct(ok_latency, 99),
        latency_max_s=_pct(ok_latency, 100),
        throughput_rps=round(len(ok_latency) / seconds, 2) if seconds else 0.0,
        rejected_p50_s=_pct(rejected_latency, 50),
    )


@dataclass
class FloodReport:
    requests: int
    concurrency: int
    seconds: float  # wall time of the flood (the first one, with no honest traffic)
    statuses: dict[str, int] = field(default_factory=dict)  # of that flood
    refused_p50_s: float | None = None
    refused_p90_s: float | None = None
    miner_cpu_s: float | None = None  # CPU the miner spent on that flood
    honest_alone_s: float | None = None  # median of the honest requests sent alone
    honest_during_s: float | None = None  # median of those answered during the second flood
    honest_during: int = 0  # how many honest requests were answered during it
    honest_statuses: dict[str, int] = field(default_factory=dict)
    pinned: bool = False  # the miner on its own CPU, the clients on the others


def _tts_body(i: int, text: str | None = None) -> bytes:
    body = TTSRequest(text=text or f"{SENTENCES[i % len(SENTENCES)]} Request {i}.")
    return body.model_dump_json(exclude_none=True).encode()


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _pin(pid: int, cpus: set[int] | None) -> None:
    """Keep ``pid`` on ``cpus`` where the OS allows (a measurement aid, never required)."""
    if cpus:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(pid, cpus)


@contextlib.contextmanager
def split_cpus(miner_pid: int | None) -> Iterator[tuple[set[int], set[int]] | None]:
    """On a machine with two or more CPUs: the miner on the first, the clients (this
    process and the flooder) on the rest, so a flood measures the miner, not the CPU the
    flooding client takes from it; this process gets its CPUs back on leaving. Yields
    None, placing nothing, without a miner or where affinity cannot be set."""
    try:
        before = os.sched_getaffinity(0)
    except AttributeError:
        before = set()
    if miner_pid is None or len(before) < 2:
        yield None
        return
    cpus = sorted(before)
    miner, clients = {cpus[0]}, set(cpus[1:])
    _pin(miner_pid, miner)
    _pin(0, clients)
    try:
        yield miner, clients
    finally:
        _pin(0, before)


async def _attack_all(
    url: str, miner_hotkey: str, attacker, first: int, requests: int, concurrency: int,
    timeout: float,
) -> tuple[Counter[str], list[float]]:  # fmt: skip
    """``requests`` TTS requests signed afresh by ``attacker``, ``concurrency`` at a time:
    their statuses, and the latencies of those refused (401/403)."""
    gate = asyncio.Semaphore(concurrency)
    statuses: Counter[str] = Counter()
    refused: list[float] = []

    async def attack(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            raw = _tts_body(i)
            status, elapsed = await _signed_post(client, url, attacker, miner_hotkey, raw)
        statuses[status] += 1
        if status in ("401", "403"):
            refused.append(elapsed)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(attack(client, first + i) for i in range(requests)))
    return statuses, refused


def _flood_process(
    url: str, miner_hotkey: str, wallet: tuple[str, str], first: int, requests: int,
    concurrency: int, timeout: float, cpus: set[int] | None,
) -> None:  # fmt: skip
    """A flooding client in its own process, as an attacker's would be, and at the lowest
    priority: on a small machine it shares the clients' CPU with the honest validator,
    whose own latency must not include the attacker's signing and HTTP work."""
    from chorus.auth import load_wallet

    _pin(0, cpus)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19)
    attacker = load_wallet(wallet[0], path=wallet[1])
    asyncio.run(_attack_all(url, miner_hotkey, attacker, first, requests, concurrency, timeout))


async def flood(
    url: str,
    miner_hotkey: str,
    attacker: tuple[str, str],
    validator,
    requests: int = FLOOD_REQUESTS,
    concurrency: int = 32,
    honest_alone: int = 8,
    cpu: Callable[[], float] | None = None,
    timeout: float = 120.0,
    miner_pid: int | None = None,
) -> FloodReport:
    """Two floods of ``requests`` TTS requests signed by the wallet ``attacker`` (name,
    wallets folder: a key that is not on the subnet), ``concurrency`` at a time, each
    signed afresh. The first runs alone, in this process: its wall time, refusal
    latencies and the miner's CPU (``cpu()``, the miner process's CPU seconds so far).
    The second runs in a process of its own (at the lowest priority) while ``validator``
    sends a short request every ``HONEST_EVERY_S`` from this one; their latency is
    compared with the median of ``honest_alone`` requests sent before any flood. With
    ``miner_pid`` on a machine of two or more CPUs the miner gets the first CPU and the
    clients the rest."""
    import multiprocessing

    from chorus.auth import load_wallet

    with split_cpus(miner_pid) as placement:
        honest_statuses: Counter[str] = Counter()

        async def honest(client: httpx.AsyncClient, i: int) -> float:
            raw = _tts_body(i, f"Good morning, number {i}.")
            status, elapsed = await _signed_post(client, url, validator, miner_hotkey, raw)
            honest_statuses[status] += 1
            return elapsed

        async with httpx.AsyncClient(timeout=timeout) as client:
            await honest(client, 0)  # warm-up: the first synthesis loads lazily
            honest_statuses.clear()
            alone = [await honest(client, i + 1) for i in range(honest_alone)]

            cpu_before = cpu() if cpu else None
            start = time.perf_counter()
            wallet = load_wallet(attacker[0], path=attacker[1])
            statuses, refused = await _attack_all(
                url, miner_hotkey, wallet, 0, requests, concurrency, timeout
            )
            seconds = time.perf_counter() - start
            miner_cpu = None if cpu_before is None else round(cpu() - cpu_before, 2)

            child = multiprocessing.get_context("spawn").Process(
                target=_flood_process,
                args=(url, miner_hotkey, attacker, requests, requests, concurrency, timeout,
                      placement[1] if placement else None),
            )  # fmt: skip
            child.start()
            await asyncio.sleep(0.5)  # the flooder starts (imports, loads its key)
            during, i = [], 1000
            while child.is_alive():  # a request every HONEST_EVERY_S, as a validator's round
                started = time.perf_counter()
                latency = await honest(client, i)
                if child.is_alive():  # answered while the flood still ran
                    during.append(latency)
                i += 1
                await asyncio.sleep(max(0.0, HONEST_EVERY_S - (time.perf_counter() - started)))
            child.join()

        return FloodReport(
            requests=requests,
            concurrency=concurrency,
            seconds=round(seconds, 2),
            statuses=dict(statuses),
            refused_p50_s=_pct(refused, 50),
            refused_p90_s=_pct(refused, 90),
            miner_cpu_s=miner_cpu,
            honest_alone_s=_pct(alone, 50),
            honest_during_s=_pct(during, 50),
            honest_during=len(during),
            honest_statuses=dict(honest_statuses),
            pinned=placement is not None,
        )


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"{field_name} not found for pid {pid}")


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MinerProcess:
    """A real ``chorus miner`` process on a throwaway local chain, for load runs."""

    def __init__(self, workdir, max_queue: int | None = None, port: int | None = None):
        import socket

        from chorus.auth import create_wallet
        from chorus.chain.local import LocalChain
        from chorus.miner import MAX_QUEUE

        self.dir = workdir
        self.max_queue = MAX_QUEUE if max_queue is None else max_queue
        wallets = str(workdir / "wallets")
        self.chain = LocalChain(workdir / "chain.sqlite")
        self.validator = create_wallet("validator", path=wallets)
        miner = create_wallet("miner", path=wallets)
        self.chain.register(
            self.validator.hotkey.ss58_address, self.validator.coldkeypub.ss58_address, 1000.0, True
        )
        self.chain.register(miner.hotkey.ss58_address, miner.coldkeypub.ss58_address)
        self.hotkey = miner.hotkey.ss58_address
        self.stranger = create_wallet("stranger", path=wallets)  # never registered
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.args = [
            "miner",
            "--wallet",
            "miner",
            "--wallet-path",
            wallets,
            "--chain-path",
            str(self.chain.path),
            "--port",
            str(port),
            "--max-queue",
            str(self.max_queue),
        ]

    def __enter__(self) -> MinerProcess:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chorus.cli", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("miner exited during start-up")
            try:
                httpx.get(self.url + "/health", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("miner did not start within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()

"""A whole network on one machine: a chain file, N miners and a validator, end to end.

Every participant is a separate process on 127.0.0.1, talking signed HTTP, exactly as on
a real subnet. The line-up is chosen so the ranking means something: honest Piper
miners, a plainly worse (degraded) one, and one that accepts connections but never
answers, so the validator has to time it out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from chorus.errors import CallerError
from chorus.services import registry

LINEUP = ["piper", "degraded", "hang"]
VALIDATOR_STAKE = 1000.0


@dataclass
class LocalnetSettings:
    miners: int = 3
    rounds: int = 6
    out: str = "demo-out"
    base_port: int = 18091
    alpha: float = 0.5
    timeout_s: float = 20.0


def miner_flags(kind: str) -> list[str]:
    """The honest miner serves every service with its default backend; the degraded one
    only a worse TTS."""
    if kind == "degraded":
        return ["--tts-backend", "degraded"]
    return [a for name, s in registry().items() for a in (f"--{name}-backend", s.default_backend)]


def miner_kind(i: int) -> str:
    """Miner i's backend: piper, degraded, hang, then piper/degraded alternating."""
    return LINEUP[i] if i < len(LINEUP) else ("piper", "degraded")[i % 2]


def _chorus(*args: str) -> list[str]:
    return [sys.executable, "-m", "chorus.cli", *args]


class LocalNet:
    """Starts and stops the processes; use as a context manager so all of them stop."""

    def __init__(self, out: Path, miners: int, base_port: int):
        self.out = out
        self.n = miners
        self.base_port = base_port
        self.wallets = out / "wallets"
        self.chain_path = out / "chain.sqlite"
        self.state = out / "validator"
        self.procs: list[subprocess.Popen] = []
        self.kinds: dict[int, str] = {}

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def common(self, wallet: str) -> list[str]:
        return [
            "--wallet",
            wallet,
            "--wallet-path",
            str(self.wallets),
            "--chain-path",
            str(self.chain_path),
        ]

    def setup(self) -> None:
        from chorus.auth import create_wallet
        from chorus.chain.local import LocalChain

        self.out.mkdir(parents=True, exist_ok=True)
        for stale in (self.chain_path, self.state):  # a fresh network every run
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                for p in stale.parent.glob(stale.name + "*"):
                    p.unlink()
        chain = LocalChain(self.chain_path, block_seconds=2.0)
        v = create_wallet("validator", path=str(self.wallets))
        chain.register(v.hotkey.ss58_address, v.coldkeypub.ss58_address, VALIDATOR_STAKE, True)
        for i in range(self.n):
            w = create_wallet(f"miner-{i}", path=str(self.wallets))
            n = chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address)
            self.kinds[n.uid] = miner_kind(i)
        print(f"chain {self.chain_path}: validator + {self.n} miners registered", flush=True)

    def start_miners(self) -> None:
        from chorus.chain.local import LocalChain

        chain = LocalChain(self.chain_path)
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        for i in range(self.n):
            port, kind = self.base_port + i, miner_kind(i)
            log = open(logs / f"miner-{i}.log", "w")  # noqa: SIM115 - lives as long as the process
            if kind == "hang":
                cmd = [sys.executable, "-m", "chorus.localnet", "hang", str(port)]
                from chorus.auth import load_wallet

                hk = load_wallet(f"miner-{i}", path=str(self.wallets)).hotkey.ss58_address
                chain.serve_axon(hk, "127.0.0.1", port)
            else:
                cmd = _chorus(
                    "miner", *self.common(f"miner-{i}"), "--port", str(port), *miner_flags(kind)
                )
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            print(f"  miner-{i}: {kind:<9} on 127.0.0.1:{port} (log {log.name})", flush=True)
        self.wait_ready()

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        pending = {i for i in range(self.n) if miner_kind(i) != "hang"}
        while pending:
            for i in sorted(pending):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"miner-{i} exited early; see {self.out}/logs/miner-{i}.log")
                try:
                    httpx.get(f"http://127.0.0.1:{self.base_port + i}/health", timeout=1.0)
                    pending.discard(i)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"miners {sorted(pending)} did not start in {timeout:.0f} s")
            if pending:
                time.sleep(0.5)
        print("  all miners are up", flush=True)

    def run_validator(self, rounds: int, alpha: float, timeout: float) -> int:
        cmd = _chorus(
            "validator",
            *self.common("validator"),
            "--services",
            ",".join(services()),
            "--rounds",
            str(rounds),
            "--alpha",
            str(alpha),
            "--timeout",
            str(timeout),
            "--weights-interval",
            "2",
            "--state",
            str(self.state),
            "--max-samples",
            "30",
            "--seed",
            "7",
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        for line in proc.stdout:
            print("  validator | " + line.rstrip(), flush=True)
        return proc.wait()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def leaderboard(self) -> str:
        from chorus.chain.local import LocalChain
        from chorus.store import ValidatorStore

        chain = LocalChain(self.chain_path)
        store = ValidatorStore(self.state / "state.sqlite", self.state / "samples")
        weights = next(iter(chain.weights().values()), {})
        services = registry()
        columns = list({c.title: c for s in services.values() for c in s.columns}.values())
        rows = [
            f"{'rank':>4} {'uid':>4}  {'hotkey':<12} {'backend':<9} {'score':>6} "
            + " ".join(f"{n:>6}" for n in services)
            + "".join(f" {c.title[:10]:>10}" for c in columns)
            + f" {'fails':>5} {'weight':>7}"
        ]

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        for rank, r in enumerate(store.summary(), 1):
            rows.append(
                f"{rank:>4} {r.uid:>4}  {r.hotkey[:10] + '..':<12} "
                f"{self.kinds.get(r.uid, '?'):<9} {r.score:>6.3f} "
                + " ".join(f"{num(r.services.get(n), '.3f'):>6}" for n in services)
                + "".join(f" {num(r.columns.get(c.title), c.fmt):>10}" for c in columns)
                + f" {r.failed:>5} {weights.get(r.uid, 0.0):>7.3f}"
            )
        return "\n".join(rows)


def services() -> list[str]:
    """Every service a validator can test here (cloning needs reference voices)."""
    usable = []
    for name, service in registry().items():
        missing = service.available()
        if missing:
            print(f"the demo leaves out {name}: {missing}", flush=True)
        else:
            usable.append(name)
    return usable


def run_localnet(
    miners: int, rounds: int, out: Path, base_port: int, alpha: float, timeout: float = 20.0
) -> int:
    if miners < 1 or rounds < 1:
        raise CallerError("--miners and --rounds must be at least 1")
    start = time.monotonic()
    with LocalNet(out, miners, base_port) as net:
        net.setup()
        net.start_miners()
        code = net.run_validator(rounds, alpha, timeout)
        net.stop()
        if code != 0:
            print(f"validator exited with code {code}", file=sys.stderr)
            return code
        print("\nleaderboard (score = moving average; tts/clone/music = mean raw score per answer)")
        print(net.leaderboard())
        print(f"\naudio samples: {net.state / 'samples'}")
    print(f"localnet finished in {time.monotonic() - start:.0f} s")
    return 0


async def _hang(port: int) -> None:
    """A 'miner' that accepts connections and reads requests but never answers."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "hang":
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    asyncio.run(_hang(int(sys.argv[2])))

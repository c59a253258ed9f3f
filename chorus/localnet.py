"""A whole network on one machine: a chain file, N miners and several validators.

Every participant is a separate process on 127.0.0.1, talking signed HTTP, exactly as on
a real subnet, and the local chain runs Yuma Consensus over the validators' weights every
few blocks, so the run ends with what each miner would be paid. The line-up is chosen
so the ranking means something: honest Piper miners, a plainly worse (degraded) one, and
one that accepts connections but never answers, so validators have to time it out.
Validators hold different stakes and draw their own prompts; an optional lazy validator
copies the consensus or sets random weights, to show what such a validator earns.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import httpx
from scipy.stats import spearmanr

from chorus.chain import Chain, ChainError, Epoch
from chorus.config import check_port
from chorus.errors import CallerError, InternalError
from chorus.services import registry
from chorus.validator import ValidatorSettings

LINEUP = ["piper", "degraded", "hang"]
# Validators' stakes, the first the largest, so consensus is stake-weighted for real.
VALIDATOR_STAKES = (1000.0, 600.0, 400.0)
OTHER_VALIDATOR_STAKE = 300.0
LAZY_STAKE = 300.0
LAZY_MODES = ("copy", "random")
# The local chain's clock for a run: 2 s blocks, an epoch every 10 blocks.
BLOCK_SECONDS = 2.0
TEMPO = 10
# Validators set weights every this many blocks (the lazy one too).
WEIGHTS_INTERVAL = 2


@dataclass
class LocalnetSettings:
    miners: int = 3
    validators: int = 2
    rounds: int = 6
    out: str = "demo-out"
    base_port: int = 18091
    alpha: float = 0.5
    timeout_s: float = 20.0
    lazy: str | None = None  # "copy" or "random": add a lazy validator
    services: tuple[str, ...] = ()  # empty: every service this machine can test


@dataclass(frozen=True)
class Seat:
    """A validator of the run: its uid and what it does ("honest", or a lazy mode)."""

    uid: int
    kind: str


def validator_stake(i: int) -> float:
    return VALIDATOR_STAKES[i] if i < len(VALIDATOR_STAKES) else OTHER_VALIDATOR_STAKE


@dataclass
class MinerOutcome:
    uid: int
    kind: str
    score: float | None  # the first validator's moving average
    incentive: float
    emission: float


@dataclass
class ValidatorOutcome:
    name: str
    uid: int
    kind: str  # "honest", or the lazy mode
    stake: float
    validator_trust: float
    dividends: float
    emission: float
    mean_validator_trust: float  # over the epochs after every validator had set weights


@dataclass
class Agreement:
    a: str
    b: str
    spearman: float | None  # rank correlation of their last weight vectors over miners
    overlap: float  # sum over miners of min(w_a, w_b): 1 when the weights are identical


@dataclass
class LocalnetReport:
    """What a run ends with: who was paid what in the last epoch, and whether the
    honest validators agreed."""

    epoch_block: int | None
    epochs: int
    miners: list[MinerOutcome] = field(default_factory=list)
    validators: list[ValidatorOutcome] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)

    @property
    def honest_incentive_share(self) -> float:
        """The honest (piper) miners' share of all miners' incentive."""
        total = sum(m.incentive for m in self.miners)
        honest = sum(m.incentive for m in self.miners if m.kind == "piper")
        return honest / total if total > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "honest_incentive_share": self.honest_incentive_share}


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


def lazy_weights(mode: str, chain: Chain, rng: random.Random) -> dict[int, float] | None:
    """What a lazy validator sets: ``copy`` takes the consensus of the last epoch (None
    before the first), ``random`` draws a weight per miner. Miners are the neurons
    without a validator permit."""
    miners = [n.uid for n in chain.neurons() if not n.validator_permit]
    if mode == "random":
        return {uid: rng.random() for uid in miners}
    epoch = chain.last_epoch()
    if epoch is None:
        return None
    copied = {s.uid: s.consensus for s in epoch.neurons if s.uid in miners and s.consensus > 0}
    return copied or None


def agreement(weights: dict[str, dict[int, float]], miners: list[int]) -> list[Agreement]:
    """Pairwise agreement of validators' weight vectors over ``miners``: Spearman rank
    correlation (None where a vector is constant, e.g. not set yet) and overlap, the
    weight both put on the same miners (what clipping to a two-validator consensus
    would leave)."""
    out = []
    for a, b in combinations(weights, 2):
        x = [weights[a].get(u, 0.0) for u in miners]
        y = [weights[b].get(u, 0.0) for u in miners]
        rho = None
        if len(set(x)) > 1 and len(set(y)) > 1:
            rho = float(spearmanr(x, y).statistic)
        out.append(Agreement(a, b, rho, sum(map(min, x, y))))
    return out


class LocalNet:
    """Starts and stops the processes; use as a context manager so all of them stop."""

    def __init__(self, out: Path, settings: LocalnetSettings):
        self.out = out
        self.settings = settings
        self.n = settings.miners
        self.base_port = settings.base_port
        self.wallets = out / "wallets"
        self.chain_path = out / "chain.sqlite"
        self.procs: list[subprocess.Popen] = []
        self.kinds: dict[int, str] = {}
        self.validators: dict[str, Seat] = {}  # by wallet name
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def state(self, name: str) -> Path:
        return self.out / name

    @property
    def honest(self) -> list[str]:
        return [name for name, seat in self.validators.items() if seat.kind == "honest"]

    def common(self, wallet: str) -> list[str]:
        return [
            "--wallet",
            wallet,
            "--wallet-path",
            str(self.wallets),
            "--chain-path",
            str(self.chain_path),
        ]

    def chain(self):
        from chorus.chain.local import LocalChain

        return LocalChain(self.chain_path)

    def setup(self) -> None:
        from chorus.auth import create_wallet
        from chorus.chain.local import LocalChain

        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob("validator*"):  # a fresh network every run
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        for stale in self.out.glob(self.chain_path.name + "*"):
            stale.unlink()
        chain = LocalChain(self.chain_path, block_seconds=BLOCK_SECONDS, tempo=TEMPO)
        lineup = [(f"validator-{i}", "honest") for i in range(self.settings.validators)]
        if self.settings.lazy:
            lineup.append((f"validator-{self.settings.lazy}", self.settings.lazy))
        for i, (name, kind) in enumerate(lineup):
            w = create_wallet(name, path=str(self.wallets))
            stake = validator_stake(i) if kind == "honest" else LAZY_STAKE
            n = chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address, stake, True)
            self.validators[name] = Seat(n.uid, kind)
        for i in range(self.n):
            w = create_wallet(f"miner-{i}", path=str(self.wallets))
            n = chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address)
            self.kinds[n.uid] = miner_kind(i)
        print(
            f"chain {self.chain_path}: {len(lineup)} validators + {self.n} miners registered;"
            f" an epoch every {TEMPO} blocks of {BLOCK_SECONDS:g} s",
            flush=True,
        )

    def start_miners(self) -> None:
        chain = self.chain()
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
                    log = self.out / "logs" / f"miner-{i}.log"
                    lines = log.read_text(errors="replace").strip().splitlines()
                    said = f": {lines[-1].strip()}" if lines else ""
                    raise CallerError(f"miner-{i} could not start{said} (log {log})")
                try:
                    httpx.get(f"http://127.0.0.1:{self.base_port + i}/health", timeout=1.0)
                    pending.discard(i)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise CallerError(
                    f"miners {sorted(pending)} did not start in {timeout:.0f} s; see their logs"
                    f" in {self.out / 'logs'}"
                )
            if pending:
                time.sleep(0.5)
        print("  all miners are up", flush=True)

    def _echo(self, name: str, proc: subprocess.Popen) -> None:
        """Print a child's output, each line prefixed with its name."""

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(f"  {name} | {line.rstrip()}", flush=True)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_validators(self, services: list[str]) -> dict[str, subprocess.Popen]:
        """Every validator as its own process with its own wallet, state and prompts
        (seed); the lazy one runs until stopped."""
        s = self.settings
        running = {}
        for i, (name, seat) in enumerate(self.validators.items()):
            if seat.kind == "honest":
                cmd = _chorus(
                    "validator",
                    *self.common(name),
                    "--services",
                    ",".join(services),
                    "--rounds",
                    str(s.rounds),
                    "--alpha",
                    str(s.alpha),
                    "--timeout",
                    str(s.timeout_s),
                    "--weights-interval",
                    str(WEIGHTS_INTERVAL),
                    "--state",
                    str(self.state(name)),
                    "--max-samples",
                    "30",
                    "--seed",
                    str(7 + i),
                )
            else:
                cmd = [
                    sys.executable, "-m", "chorus.localnet", "lazy", seat.kind,
                    name, str(self.wallets), str(self.chain_path),
                ]  # fmt: skip
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            self.procs.append(proc)
            self._echo(name, proc)
            running[name] = proc
        return running

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
        for t in self._threads:
            t.join(timeout=2)

    def wait_for_epoch(self, after: int) -> Epoch | None:
        """Wait (at most one tempo and a bit) for an epoch past block ``after``, so the
        results include every validator's last weights."""
        chain = self.chain()
        deadline = time.monotonic() + (TEMPO + 2) * BLOCK_SECONDS
        while time.monotonic() < deadline:
            epoch = chain.last_epoch()
            if epoch is not None and epoch.block > after:
                return epoch
            time.sleep(0.5)
        return chain.last_epoch()

    def report(self, epoch: Epoch | None, started_block: int) -> LocalnetReport:
        from chorus.store import ValidatorStore

        chain = self.chain()
        epochs = [e for e in chain.epochs(limit=None) if e.block > started_block]
        # Epochs in which every validator's weights were on the chain.
        weights_on_chain = chain.weights()
        first_full = None
        for e in epochs:
            if all(
                (s := e.standing(seat.uid)) is not None and s.validator_trust > 0
                for seat in self.validators.values()
            ):
                first_full = e.block
                break
        full = [e for e in epochs if first_full is not None and e.block >= first_full]
        report = LocalnetReport(epoch_block=epoch.block if epoch else None, epochs=len(epochs))
        first = ValidatorStore(
            self.state(self.honest[0]) / "state.sqlite", self.state(self.honest[0]) / "samples"
        )
        scores = {r.uid: r.score for r in first.summary()}
        for uid, kind in sorted(self.kinds.items()):
            s = epoch.standing(uid) if epoch else None
            report.miners.append(
                MinerOutcome(
                    uid, kind, scores.get(uid), s.incentive if s else 0.0, s.emission if s else 0.0
                )
            )
        for name, seat in self.validators.items():
            s = epoch.standing(seat.uid) if epoch else None
            history = [st.validator_trust for e in full if (st := e.standing(seat.uid))]
            report.validators.append(
                ValidatorOutcome(
                    name=name,
                    uid=seat.uid,
                    kind=seat.kind,
                    stake=s.stake if s else 0.0,
                    validator_trust=s.validator_trust if s else 0.0,
                    dividends=s.dividends if s else 0.0,
                    emission=s.emission if s else 0.0,
                    mean_validator_trust=sum(history) / len(history) if history else 0.0,
                )
            )
        honest_weights = {
            name: weights_on_chain.get(self.validators[name].uid, {}) for name in self.honest
        }
        report.agreement = agreement(honest_weights, sorted(self.kinds))
        return report

    def leaderboard(self, report: LocalnetReport) -> str:
        """Miners by incentive (with the first validator's scores), then validators."""
        from chorus.store import ValidatorStore

        name = self.honest[0]
        store = ValidatorStore(self.state(name) / "state.sqlite", self.state(name) / "samples")
        summary = {r.uid: r for r in store.summary()}
        services = registry()
        columns = list({c.title: c for s in services.values() for c in s.columns}.values())

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        rows = [
            f"miners (score, per-service means and measures: {name}'s view; incentive and"
            " emission: the chain's last epoch)",
            f"{'uid':>4}  {'hotkey':<12} {'backend':<9} {'score':>6} "
            + " ".join(f"{n:>6}" for n in services)
            + "".join(f" {c.title[:10]:>10}" for c in columns)
            + f" {'fails':>5} {'incentive':>9} {'emission':>8}",
        ]
        for m in sorted(report.miners, key=lambda m: -m.incentive):
            r = summary.get(m.uid)
            rows.append(
                f"{m.uid:>4}  {(r.hotkey[:10] + '..') if r else '-':<12} {m.kind:<9} "
                f"{num(m.score, '.3f'):>6} "
                + " ".join(f"{num(r.services.get(n) if r else None, '.3f'):>6}" for n in services)
                + "".join(
                    f" {num(r.columns.get(c.title) if r else None, c.fmt):>10}" for c in columns
                )
                + f" {r.failed if r else 0:>5} {m.incentive:>9.3f} {m.emission:>8.3f}"
            )
        rows += [
            "",
            "validators (validator trust: the share of its weight that consensus kept)",
            f"{'name':<18} {'uid':>4} {'kind':<7} {'stake':>6} {'vtrust':>6} {'mean':>6}"
            f" {'dividends':>9} {'emission':>8}",
        ]
        for v in report.validators:
            rows.append(
                f"{v.name:<18} {v.uid:>4} {v.kind:<7} {v.stake:>6g} {v.validator_trust:>6.3f}"
                f" {v.mean_validator_trust:>6.3f} {v.dividends:>9.3f} {v.emission:>8.3f}"
            )
        if report.agreement:
            rows += ["", "agreement of honest validators' weights"]
            for a in report.agreement:
                rows.append(
                    f"  {a.a} ~ {a.b}: Spearman {num(a.spearman, '.3f')}, overlap {a.overlap:.3f}"
                )
        rows.append(
            f"\nhonest miners' share of the miners' incentive: {report.honest_incentive_share:.3f}"
            f" (epoch at block {report.epoch_block}, {report.epochs} epochs in the run)"
        )
        return "\n".join(rows)


def services(wanted: tuple[str, ...] = ()) -> list[str]:
    """The services to test: ``wanted`` (all if empty) that this machine can test
    (cloning needs reference voices)."""
    known = registry()
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise CallerError(f"unknown services {unknown}; available: {', '.join(known)}")
    usable = []
    for name, service in known.items():
        if wanted and name not in wanted:
            continue
        missing = service.available()
        if missing:
            print(f"the run leaves out {name}: {missing}", flush=True)
        else:
            usable.append(name)
    return usable


def run_localnet(settings: LocalnetSettings) -> LocalnetReport:
    """Run a whole network, print its progress and the leaderboard, and return what the
    chain paid (raises InternalError if a validator fails)."""
    s = settings
    if s.miners < 1 or s.rounds < 1 or s.validators < 1:
        raise CallerError("--miners, --validators and --rounds must be at least 1")
    if s.lazy is not None and s.lazy not in LAZY_MODES:
        raise CallerError(f"--lazy-validator must be one of {', '.join(LAZY_MODES)}")
    last_port = s.base_port + s.miners - 1
    if not 1 <= s.base_port <= last_port <= 65535:
        raise CallerError(
            f"--port {s.base_port}: {s.miners} miners need ports {s.base_port}-{last_port},"
            " and ports end at 65535"
        )
    ValidatorSettings(alpha=s.alpha, timeout_s=s.timeout_s)  # a bad --alpha, --timeout
    chosen = services(s.services)
    if not chosen:
        raise CallerError("no service to test on this machine")
    for port in range(s.base_port, last_port + 1):  # before the last run's files go
        check_port("127.0.0.1", port)
    start = time.monotonic()
    with LocalNet(Path(s.out), s) as net:
        net.setup()
        started_block = net.chain().block()
        net.start_miners()
        running = net.start_validators(chosen)
        codes = {name: running[name].wait() for name in net.honest}
        net.stop()
        failed = {name: code for name, code in codes.items() if code != 0}
        if failed:
            raise InternalError(f"validators exited with errors: {failed}; see their lines above")
        print(f"\nwaiting for the epoch after the validators' last weights (<= "
              f"{TEMPO * BLOCK_SECONDS:.0f} s)", flush=True)  # fmt: skip
        epoch = net.wait_for_epoch(net.chain().block())
        report = net.report(epoch, started_block)
        print()
        print(net.leaderboard(report))
        print(f"\naudio samples: {net.state(net.honest[0]) / 'samples'}")
    print(f"localnet finished in {time.monotonic() - start:.0f} s")
    return report


def _lazy(mode: str, wallet: str, wallets: str, chain_path: str) -> None:
    """A lazy validator's loop: set weights every few blocks without scoring anyone."""
    from chorus.auth import load_wallet
    from chorus.chain.local import LocalChain

    chain = LocalChain(chain_path)
    hotkey = load_wallet(wallet, path=wallets).hotkey.ss58_address
    rng = random.Random(11)
    print(f"lazy validator ({mode}) started", flush=True)
    shown_before = ""
    while True:
        try:
            weights = lazy_weights(mode, chain, rng)
            if weights:
                chain.set_weights(hotkey, weights)
        except ChainError as e:  # a busy chain file: try again next time
            print(f"could not set weights now: {e}", flush=True)
            weights = None
        if weights:
            total = sum(weights.values())
            shown = ", ".join(f"{u}: {w / total:.2f}" for u, w in sorted(weights.items()))
            if shown != shown_before:  # a copier's weights rarely change: say so once
                print(f"sets weights {shown}", flush=True)
                shown_before = shown
        time.sleep(WEIGHTS_INTERVAL * BLOCK_SECONDS)


async def _hang(port: int) -> None:
    """A 'miner' that accepts connections and reads requests but never answers."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if len(sys.argv) == 3 and sys.argv[1] == "hang":
        asyncio.run(_hang(int(sys.argv[2])))
    elif len(sys.argv) == 6 and sys.argv[1] == "lazy":
        _lazy(*sys.argv[2:])

"""The real Bittensor network as a chorus chain, through the ``bittensor`` SDK (11.x).

Reads come from the subnet's metagraph (one runtime-API call), cached for ``ttl_s`` so
a miner checking callers or a validator picking miners does not hit the chain on every
request. The chain runs Yuma Consensus itself; ``last_epoch`` only reads its results
(rank, trust, incentive, dividends, emission, ...) from the same metagraph. Writes
(weights, the miner's axon endpoint) are SDK intents signed by the wallet's hotkey. The
SDK client is passed in, so tests run the real SDK over an in-memory substrate and
operators can hand in a client with their own endpoints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import bittensor as bt
from bittensor import timelock
from bittensor.keyfiles import KeyfileError

from chorus import __version__
from chorus.chain import ChainError, Epoch, Neuron, Standing, WeightCommit, may_set_weights

log = logging.getLogger("chorus.chain.bittensor")


def version_key(version: str = __version__) -> int:
    """The weights version key for a chorus version: ``major*1_000_000 + minor*1_000 +
    patch`` (each part below 1000, pre-release suffixes ignored), so 0.1.0 is 1000 and
    1.2.3 is 1_002_003. Subnet owners raise the subnet's ``weights_version`` to this
    number to make validators upgrade; unlike ``1000*major + 10*minor + patch`` it never
    lets 0.10.0 and 1.0.0 collide."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"cannot derive a version key from version {version!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    if minor >= 1000 or patch >= 1000:
        raise ValueError(f"version {version!r}: minor and patch must be below 1000")
    return major * 1_000_000 + minor * 1_000 + patch


VERSION_KEY = version_key()

# Commits remembered per subnet (in memory and in the commits file): a few days' worth.
KEEP_COMMITS = 100
# How far the local clock may be from the chain's before chorus warns, and the delay
# between a block's timestamp and when a node shows it, taken off the measured offset.
CLOCK_TOLERANCE_S = 1.0
CHAIN_DELAY_S = 0.5


U16_MAX = 65535


def quantize(weights: Mapping[int, float], max_weight_limit: int = U16_MAX) -> dict[int, int]:
    """Weights as the chain stores them: u16 values max-upscaled so the largest is 65535,
    none of them above the subnet's ``max_weight_limit`` share of the row by the chain's
    own test.

    Scores that are NaN, infinite, negative or zero are dropped (a validator's bad
    number must not void the whole row), and so are weights that round to 0; all-zero
    input gives ``{}``. Without a binding limit the values are those of the SDK's
    ``bittensor.intents.normalize``. With one, every weight above a common level is cut
    to it (their excess goes to the rest, as the SDK's clip does), the row is rounded
    to u16, and then the weights that rounding cut most are raised one step at a time
    until ``65535 * 65535 <= max_weight_limit * sum``: the exact form of the chain's
    ``max_weight_limited``, which the SDK's clip (a float margin smaller than the
    rounding that follows) misses about half the time where the limit binds. Raises
    ChainError when no row over these uids can pass: fewer than 65535 / limit weights.
    """
    clean = sorted((int(u), float(w)) for u, w in weights.items() if math.isfinite(w) and w > 0)
    if not clean:
        return {}
    values = [w for _, w in clean]
    limit = int(max_weight_limit)
    binding = limit < U16_MAX
    if binding and len(values) * limit < U16_MAX:
        least = -(-U16_MAX // max(limit, 1))
        raise ChainError(
            f"the subnet's max_weight_limit ({limit}/65535 of the row) needs weights on at "
            f"least {least} uids; this validator has scored {len(values)} miners so far"
        )
    level = _clip_level(values, limit / U16_MAX) if binding else max(values)
    scaled = [min(w, level) / level * U16_MAX for w in values]
    ints = [round(x) for x in scaled]
    if binding:
        missing = -(-U16_MAX * U16_MAX // limit) - sum(ints)  # the sum the chain needs
        cut_most = sorted(range(len(ints)), key=lambda i: ints[i] - scaled[i])
        if missing > sum(U16_MAX - v for v in ints):  # cannot happen when the count fits
            raise ChainError(f"cannot fit these weights under max_weight_limit {limit}")
        while missing > 0:
            for i in cut_most:
                if missing > 0 and ints[i] < U16_MAX:
                    ints[i] += 1
                    missing -= 1
    return {uid: v for (uid, _), v in zip(clean, ints, strict=True) if v}


def _clip_level(values: list[float], share: float) -> float:
    """The level at which cutting every value above it leaves the level at most ``share``
    of the cut total (the largest value when nothing needs cutting); the smallest value,
    which makes every weight equal, when only that fits."""
    ordered = sorted(values, reverse=True)
    total = sum(ordered)
    if ordered[0] <= share * total:
        return ordered[0]
    tail = total
    for j, w in enumerate(ordered, 1):
        tail -= w
        if tail <= 0 or j * share >= 1:
            break
        level = share * tail / (1 - j * share)
        if level >= (ordered[j] if j < len(ordered) else 0.0):
            return level
    return ordered[-1]


def pad_weights(
    values: dict[int, int], spare: list[int], needed: int
) -> tuple[dict[int, int], list[int]]:
    """``values`` with the smallest nonzero weight (1 of 65535) on the first of ``spare``
    uids until there are ``needed`` weights, and the uids added. The chain counts the
    weights (``check_length``), so this passes its minimum while giving those uids a
    negligible share; ``max_weight_limit`` still holds, as the largest weight stays."""
    added = [u for u in spare if u not in values][: max(0, needed - len(values))]
    return dict(sorted({**values, **dict.fromkeys(added, 1)}.items())), added


def axon_address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` cannot be a miner's published axon address, or None when it can.

    Subtensor refuses 127.0.0.1, ::1, 255.255.255.255 and ffff:...:ffff with
    ``InvalidIpAddress`` (``is_valid_ip_address`` in ``subnets/serving.rs``). chorus
    also refuses every other loopback address (IPv4-mapped ones included) and the
    unspecified ones (0.0.0.0, ::), which the chain would store but no validator on
    another machine can ever reach.
    """
    mapped = getattr(ip, "ipv4_mapped", None) or ip
    if ip.is_unspecified or mapped.is_unspecified:
        return f"{ip} is not an address validators can reach"
    if ip.is_loopback or mapped.is_loopback:
        return (
            f"{ip} is a loopback address: subtensor refuses 127.0.0.1 and ::1 "
            "(InvalidIpAddress), and no validator on another machine reaches any loopback"
        )
    if int(ip) == (1 << (32 if ip.version == 4 else 128)) - 1:
        return f"subtensor refuses {ip} (InvalidIpAddress)"
    return None


def to_neuron(n: bt.MetagraphNeuron) -> Neuron:
    """A metagraph row as a chorus Neuron. ``stake`` is the neuron's total stake weight
    in the subnet's alpha units; an IPv6 host keeps its brackets so ``Neuron.url``
    is a valid URL."""
    host: str | None = None
    port: int | None = None
    if n.axon:
        address, _, port_text = n.axon.rpartition(":")
        host, port = address, int(port_text)
    return Neuron(
        uid=n.uid,
        hotkey=n.hotkey,
        coldkey=n.coldkey,
        host=host,
        port=port or None,
        stake=n.total_stake.amount,
        validator_permit=n.validator_permit,
    )


def to_standing(n: bt.MetagraphNeuron, validator_trust: float = 0.0) -> Standing:
    """A metagraph row as a chorus Standing: the SDK has already turned the runtime's u16
    scores into fractions and the rao amounts into Balances (``emission`` and ``stake``
    in the subnet's alpha units, as in ``to_neuron``). The SDK's row has no validator
    trust, so the caller passes it in."""
    return Standing(
        uid=n.uid,
        hotkey=n.hotkey,
        stake=n.total_stake.amount,
        validator_permit=n.validator_permit,
        rank=n.rank,
        trust=n.trust,
        consensus=n.consensus,
        incentive=n.incentive,
        dividends=n.dividends,
        emission=n.emission.amount,
        validator_trust=validator_trust,
    )


def u16_fractions(values: Any, size: int) -> list[float]:
    """A vector of PerU16 values (u16 over 65535) as ``size`` fractions, padded with 0
    where the chain sent fewer (a uid registered since) and cut where it sent more."""
    fractions = [int(v or 0) / 65535 for v in list(values or [])[:size]]
    return fractions + [0.0] * (size - len(fractions))


class WeightRules(NamedTuple):
    """The subnet's hyperparameters that decide whether the chain takes a weights row."""

    rate_limit: int  # blocks between two sets (or commits) by one validator
    version_key: int  # the oldest weights version key accepted (0: any)
    max_weight_limit: int  # the largest share of the row one weight may take, over 65535
    min_allowed_weights: int  # weights a row needs (the chain caps it at the subnet's size)
    commit_reveal: bool  # weights are committed timelocked and revealed by the chain later


class _ChainMinWeights:
    """A Substrate that reads ``MinAllowedWeights`` as the chain applies it, capped at the
    subnet's size (``check_length``), and passes everything else through."""

    def __init__(self, substrate: Any, subnet_n: int):
        self._substrate, self._subnet_n = substrate, subnet_n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._substrate, name)

    async def query(self, module: str, name: str, params: Any = None, *args: Any, **kw: Any):
        value = await self._substrate.query(module, name, params, *args, **kw)
        if name == "MinAllowedWeights" and value is not None and self._subnet_n:
            return min(int(value), self._subnet_n)
        return value


@dataclasses.dataclass
class _SetWeights(bt.SetWeights):
    """The SDK's SetWeights asking for as many weights as the chain does: SDK 11.3
    demands ``min_allowed_weights`` of them, while the chain asks for at most the subnet's
    size, so on a subnet smaller than its own minimum the SDK would refuse every row."""

    subnet_n: int = 0

    async def build(self, substrate: Any, wallet: Any) -> Any:
        return await super().build(_ChainMinWeights(substrate, self.subnet_n), wallet)


def weights_intent(netuid: int, values: Mapping[int, int], subnet_n: int) -> bt.SetWeights:
    """The SDK intent that submits a quantised row (``quantize``) unchanged: the SDK's
    own clip and ``normalize`` leave a row that already passes the chain's checks as it
    is, on the plain path and the commit-reveal one alike."""
    return _SetWeights(
        netuid=netuid,
        uids=list(values),
        weights=[float(v) for v in values.values()],
        version_key=VERSION_KEY,
        subnet_n=subnet_n,
    )


@contextmanager
def _sdk(what: str) -> Iterator[None]:
    """Turn SDK and connection failures into ChainError, which callers already handle."""
    try:
        yield
    except ChainError:
        raise
    except (bt.BittensorError, OSError, TimeoutError) as e:
        raise ChainError(f"{what} failed: {e}") from e


class BittensorChain:
    """A subnet on a Bittensor network; see chorus.chain.Chain for the interface.

    ``subtensor`` is an SDK client (``bittensor.Subtensor``, blocking mode). ``wallet``
    signs writes and may be None for read-only use (``chorus chain show``). On a
    commit-reveal subnet each commit is recorded (in ``commits_path`` too, when given, so
    ``chorus chain show`` in another process sees them) and checked after its reveal.
    """

    def __init__(
        self,
        subtensor: Any,
        netuid: int,
        wallet: Any = None,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        commits_path: str | os.PathLike | None = None,
    ):
        self.subtensor = subtensor
        self.netuid = netuid
        self.network: str = subtensor.network
        self.wallet = wallet
        self.ttl_s = ttl_s
        self.clock = clock
        self.commits_path = Path(commits_path) if commits_path else None
        self._lock = threading.Lock()
        self._graph: bt.Metagraph | None = None
        self._graph_at = -math.inf
        self._rules: WeightRules | None = None
        self._rules_at = -math.inf
        self._trust: tuple[bt.Metagraph, list[float]] | None = None  # for that metagraph
        self._weights_block = 0  # our own last successful set, before the metagraph shows it
        self._commits: list[WeightCommit] | None = None  # read from commits_path when first used

    # -- reading -----------------------------------------------------------------------

    def metagraph(self, force: bool = False) -> bt.Metagraph:
        """The subnet's metagraph, fetched again once older than ``ttl_s``."""
        with self._lock:
            if force or self._graph is None or self.clock() - self._graph_at > self.ttl_s:
                with _sdk(f"reading the metagraph of subnet {self.netuid} on {self.network}"):
                    graph = self.subtensor.subnets.metagraph(self.netuid, commitments=False)
                if graph is None:
                    raise ChainError(f"subnet {self.netuid} does not exist on {self.network}")
                self._graph, self._graph_at = graph, self.clock()
            return self._graph

    def neurons(self) -> list[Neuron]:
        return [to_neuron(n) for n in self.metagraph().neurons]

    def neuron(self, hotkey: str) -> Neuron | None:
        found = self.metagraph().by_hotkey(hotkey)
        return to_neuron(found) if found else None

    def block(self) -> int:
        with _sdk(f"reading the block number of {self.network}"):
            return int(self.subtensor.block)

    def weights(self) -> dict[int, dict[int, float]]:
        with _sdk(f"reading the weights of subnet {self.netuid}"):
            return self.subtensor.weights.weights(self.netuid)

    def validator_trust(self, graph: bt.Metagraph) -> list[float]:
        """Each uid's validator trust as of ``graph``, fetched once per metagraph. The
        runtime's metagraph record carries it on some runtimes (a ``validator_trust``
        column); otherwise it is read from storage (``ValidatorTrust``, one PerU16 per
        uid) at the metagraph's block, so both describe the same moment."""
        with self._lock:
            if self._trust is not None and self._trust[0] is graph:
                return self._trust[1]
        column = graph.raw.get("validator_trust")
        if column is None:
            with _sdk(f"reading the validator trust of subnet {self.netuid}"):
                column = self.subtensor.query(
                    bt.storage.SubtensorModule.ValidatorTrust, [self.netuid], block=graph.block
                )
        trust = u16_fractions(column, len(graph.neurons))
        with self._lock:
            self._trust = (graph, trust)
        return trust

    def last_epoch(self) -> Epoch | None:
        """The results of the subnet's last epoch as the chain computed them, read from
        the metagraph (at most ``ttl_s`` old); None before the subnet's first epoch. The
        chain does not report the owner's cut per epoch, so ``owner_emission`` is None."""
        graph = self.metagraph()
        if not graph.last_step:
            return None
        trust = self.validator_trust(graph)
        return Epoch(
            block=graph.last_step,
            neurons=[to_standing(n, trust[i]) for i, n in enumerate(graph.neurons)],
            owner_emission=None,
        )

    def owner_hotkey(self) -> str:
        """The subnet owner's hotkey (``SubnetOwnerHotkey``), as the metagraph reports it."""
        return str(self.metagraph().owner_hotkey)

    def weight_rules(self) -> WeightRules:
        """The subnet's weights hyperparameters, cached like the metagraph: they change
        rarely and only by the subnet owner."""
        with self._lock:
            if self._rules is not None and self.clock() - self._rules_at <= self.ttl_s:
                return self._rules
        module = bt.storage.SubtensorModule
        with _sdk(f"reading the hyperparameters of subnet {self.netuid}"):
            rate = self.subtensor.hyperparameters.weights_rate_limit(self.netuid)
            read = {
                item.name: self.subtensor.query(item, [self.netuid])
                for item in (
                    module.WeightsVersionKey,
                    module.MaxWeightsLimit,
                    module.MinAllowedWeights,
                    module.CommitRevealWeightsEnabled,
                )
            }
        limit = read["MaxWeightsLimit"]
        rules = WeightRules(
            rate_limit=int(rate or 0),
            version_key=int(read["WeightsVersionKey"] or 0),
            max_weight_limit=U16_MAX if limit is None else int(limit),  # the chain's default
            min_allowed_weights=int(read["MinAllowedWeights"] or 0),
            commit_reveal=bool(read["CommitRevealWeightsEnabled"]),
        )
        with self._lock:
            self._rules, self._rules_at = rules, self.clock()
        return rules

    # -- writing -----------------------------------------------------------------------

    def _check_signer(self, hotkey: str) -> None:
        if self.wallet is None:
            raise ChainError("the bittensor chain was opened without a wallet; it cannot sign")
        try:
            own = self.wallet.hotkey.ss58_address
        except (OSError, ValueError, KeyfileError) as e:  # missing, unreadable, encrypted
            raise ChainError(f"cannot load the signing hotkey: {e}") from e
        if hotkey != own:
            raise ChainError(f"this chain signs as {own}, not {hotkey}")

    def _registered(self, hotkey: str) -> bt.MetagraphNeuron:
        me = self.metagraph(force=True).by_hotkey(hotkey)
        if me is None:
            raise ChainError(
                f"hotkey {hotkey} is not registered on subnet {self.netuid} ({self.network}); "
                f"register it with `btcli subnets register --netuid {self.netuid} "
                f"--network {self.network} --wallet NAME --wallet-hotkey HOTKEY`"
            )
        return me

    def _execute(self, intent: Any, what: str) -> Any:
        with _sdk(what):
            result = self.subtensor.execute(intent, self.wallet)
        if not result.success:
            raise ChainError(f"{what} failed: {result.message or result.error}")
        with self._lock:
            self._graph_at = -math.inf  # the chain changed; read it again next time
        return result

    def register(self, hotkey: str, coldkey: str, *_: Any, **__: Any) -> Neuron:
        """Registration on Bittensor costs TAO and is signed by the coldkey: btcli's job."""
        raise ChainError(
            f"register on Bittensor with `btcli subnets register --netuid {self.netuid} "
            f"--network {self.network} --wallet NAME --wallet-hotkey HOTKEY` (hotkey {hotkey})"
        )

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        """Publish where validators reach this miner; skipped when the chain already shows
        that endpoint, so restarts cost no fee and do not hit the serving rate limit.
        Addresses the chain refuses, and ones no other machine can reach (loopback,
        0.0.0.0), are refused here before anything is signed; see axon_address_problem."""
        self._check_signer(hotkey)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ChainError(
                f"the axon address must be an IP address validators can reach, not {host!r};"
                " pass the public one with --axon-host"
            ) from None
        problem = axon_address_problem(ip)
        if problem:
            raise ChainError(
                f"cannot publish axon {host}: {problem}; pass this machine's "
                "public IP with --axon-host (on a local subtensor, its LAN address)"
            )
        if not 0 < port < 65536:
            raise ChainError(f"port {port} is not a valid TCP port")
        if not ip.is_global:
            log.warning("publishing a non-public address %s: only local validators reach it", ip)
        me = self._registered(hotkey)
        endpoint = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        if me.axon == endpoint:
            log.info("axon %s is already published on subnet %s", endpoint, self.netuid)
            return
        intent = bt.ServeAxon(netuid=self.netuid, ip=str(ip), port=port, version=VERSION_KEY)
        self._execute(intent, f"publishing axon {endpoint} on subnet {self.netuid}")

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None:
        """Submit weights, refusing early (ChainError) what the chain would reject: no
        permit (unless this is the subnet owner's hotkey), unknown uids, nothing to set,
        an outdated version key, a call within the subnet's weights rate limit, or fewer
        scored miners than ``max_weight_limit`` allows. The row is quantised so the
        chain's ``max_weight_limited`` check passes exactly, and padded with the smallest
        weight on other uids up to ``min_allowed_weights`` as the chain counts it. On a
        commit-reveal subnet the SDK commits the row timelocked; the commit is recorded
        and checked after its reveal (``weight_commits``)."""
        self._check_signer(hotkey)
        me = self._registered(hotkey)
        graph = self.metagraph()
        if not may_set_weights(self, to_neuron(me)):
            raise ChainError(f"hotkey {hotkey} has no validator permit on subnet {self.netuid}")
        uids = [n.uid for n in graph.neurons]
        unknown = sorted(set(weights) - set(uids))
        if unknown:
            raise ChainError(f"uids {unknown} are not on subnet {self.netuid}")
        rules = self.weight_rules()
        if rules.version_key > VERSION_KEY:
            raise ChainError(
                f"subnet {self.netuid} requires weights version key {rules.version_key}; "
                f"chorus {__version__} sends {VERSION_KEY}: upgrade chorus"
            )
        block = self.block()
        last = max(me.last_update, self._weights_block)
        if rules.rate_limit and last and block - last < rules.rate_limit:
            wait = rules.rate_limit - (block - last)
            raise ChainError(
                f"weights were set {block - last} blocks ago and subnet {self.netuid} allows "
                f"one set per {rules.rate_limit} blocks; retry in {wait} blocks"
            )
        values = quantize(weights, rules.max_weight_limit)
        if not values:
            raise ChainError("no positive weights to set")
        needed = min(rules.min_allowed_weights, len(uids))  # as the chain's check_length
        scored = {u for u, w in weights.items() if math.isfinite(w) and w > 0}
        spare = sorted(
            graph.neurons,
            key=lambda n: (n.uid == me.uid, n.uid not in scored, n.validator_permit, n.uid),
        )
        values, added = pad_weights(values, [n.uid for n in spare], needed)
        if added:
            log.info(
                "subnet %s needs %d weights: uids %s get the smallest weight (1/65535)",
                self.netuid,
                needed,
                added,
            )
        intent = weights_intent(self.netuid, values, len(uids))
        try:  # settle what is due before this validator's row changes again
            self.check_commits()
        except ChainError as e:
            log.warning("could not check weight commits now: %s", e)
        result = self._execute(intent, f"setting weights on subnet {self.netuid}")
        self._weights_block = block
        reveal_round = (getattr(result, "data", None) or {}).get("reveal_round")
        if reveal_round is not None:
            self._record_commit(
                WeightCommit(
                    hotkey=hotkey,
                    uid=me.uid,
                    block=block,
                    reveal_round=int(reveal_round),
                    reveal_block=self._reveal_block(block, int(reveal_round)),
                    weights=dict(values),
                )
            )

    # -- commit-reveal -----------------------------------------------------------------

    def _reveal_block(self, block: int, reveal_round: int) -> int:
        """The block at which the chain will reveal a commit made at ``block``: the first
        whose timestamp reaches drand round ``reveal_round`` (the SDK chose the round
        from the subnet's epoch schedule, so this is the reveal epoch's first block)."""
        reveal_at = timelock.reveal_time(reveal_round).timestamp()
        try:
            now = self.chain_time()
            block_time = float(self.subtensor.block_time())
        except ChainError:
            now, block_time = time.time(), 12.0
        return block + max(1, math.ceil((reveal_at - now) / block_time))

    def _load_commits(self) -> list[WeightCommit]:
        """The recorded commits (call with the lock held)."""
        if self._commits is None:
            self._commits = []
            if self.commits_path and self.commits_path.is_file():
                try:
                    rows = json.loads(self.commits_path.read_text())
                    self._commits = [
                        WeightCommit(
                            **{**r, "weights": {int(u): int(v) for u, v in r["weights"].items()}}
                        )
                        for r in rows
                    ]
                except (OSError, ValueError, TypeError, KeyError) as e:
                    log.warning(
                        "ignoring unreadable weight commits in %s: %s", self.commits_path, e
                    )
        return self._commits

    def _save_commits(self) -> None:
        """Write the last KEEP_COMMITS commits to ``commits_path`` (with the lock held)."""
        self._commits = self._load_commits()[-KEEP_COMMITS:]
        if not self.commits_path:
            return
        try:
            self.commits_path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.commits_path.with_suffix(".tmp")
            partial.write_text(json.dumps([c.to_json() for c in self._commits], indent=1))
            partial.replace(self.commits_path)
        except OSError as e:
            log.warning("could not record weight commits in %s: %s", self.commits_path, e)

    def _record_commit(self, commit: WeightCommit) -> None:
        log.info(
            "weights committed at block %d (uid %d); the chain reveals them at drand round %d,"
            " about block %d, and chorus checks then that it applied them",
            commit.block,
            commit.uid,
            commit.reveal_round,
            commit.reveal_block,
        )
        with self._lock:
            self._load_commits().append(commit)
            self._save_commits()

    def weight_commits(self) -> list[WeightCommit]:
        """Every recorded commit, oldest first, after settling those whose reveal block
        has passed (a chain failure leaves them pending and is logged)."""
        try:
            self.check_commits()
        except ChainError as e:
            log.warning("could not check weight commits now: %s", e)
        with self._lock:
            return list(self._load_commits())

    def pending_commits(self) -> list[WeightCommit]:
        """Commits not revealed yet, or whose reveal the chain has still to make."""
        return [c for c in self.weight_commits() if c.status == "pending"]

    def lost_commits(self) -> list[WeightCommit]:
        """Commits the chain took at the reveal but did not apply: weights silently lost."""
        return [c for c in self.weight_commits() if c.status == "lost"]

    def check_commits(self) -> list[WeightCommit]:
        """Settle the pending commits whose reveal block has passed, and return them.

        At the reveal the chain runs every weights check again (validator permit, stake,
        version key, uids, min_allowed_weights, max_weight_limit) and drops a commit that
        fails without a trace. So once a commit is due, this reads the validator's row
        (``Weights`` storage) and compares it with the committed u16 values: equal is
        "revealed"; a commit the chain still lists (``TimelockedWeightCommits``: it waits
        for the drand round) stays pending; otherwise it is "lost", logged as an error.
        When several are due at once, the newest that the row matches is "revealed" and
        older ones "superseded"."""
        with self._lock:
            pending = [c for c in self._load_commits() if c.status == "pending"]
        if not pending:
            return []
        head = self.block()
        due = [c for c in pending if head >= c.reveal_block]
        if not due:
            return []
        with _sdk(f"reading the weight commits of subnet {self.netuid}"):
            waiting = {  # the chain stamps its own inclusion block; the round is ours too
                (str(c["hotkey"]), int(c["reveal_round"]))
                for rows in self.subtensor.weights.timelocked_weight_commits(self.netuid).values()
                for c in rows
            }
            rows = {
                uid: self.subtensor.query(bt.storage.SubtensorModule.Weights, [self.netuid, uid])
                for uid in {c.uid for c in due}
            }
        settled: dict[tuple[str, int], WeightCommit] = {}
        for uid, raw in rows.items():
            row = {int(u): int(v) for u, v in raw or []}
            matched = False
            for c in sorted((c for c in due if c.uid == uid), key=lambda c: c.block, reverse=True):
                if matched:
                    settled[c.hotkey, c.block] = dataclasses.replace(c, status="superseded")
                elif c.weights == row:
                    matched = True
                    settled[c.hotkey, c.block] = dataclasses.replace(c, status="revealed")
                elif (c.hotkey, c.reveal_round) not in waiting:
                    reason = (
                        f"at block {head} the chain no longer lists the commit and uid {uid}'s "
                        "weights are not the committed ones: the reveal failed a weights check "
                        "(permit, stake, version key, uids, min_allowed_weights or "
                        "max_weight_limit) and the chain dropped it"
                    )
                    settled[c.hotkey, c.block] = dataclasses.replace(
                        c, status="lost", reason=reason
                    )
                    log.error(
                        "weights committed at block %d were LOST at the reveal (round %d, about "
                        "block %d): %s",
                        c.block,
                        c.reveal_round,
                        c.reveal_block,
                        reason,
                    )
        if not settled:
            return []
        with self._lock:
            commits = self._load_commits()
            commits[:] = [settled.get((c.hotkey, c.block), c) for c in commits]
            self._save_commits()
        return list(settled.values())

    # -- the clock ---------------------------------------------------------------------

    def chain_time(self) -> float:
        """The chain's time at its head block (``Timestamp.Now``), as a Unix time."""
        with _sdk(f"reading the time of {self.network}"):
            try:
                return self.subtensor.timestamp().timestamp()
            except (TypeError, ValueError) as e:  # no timestamp stored
                raise ChainError(f"{self.network} reports no block time: {e}") from e

    def clock_offset(
        self,
        timeout_s: float | None = None,
        poll_s: float = 0.2,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> float:
        """The local clock minus the chain's, in seconds (positive: the local clock is
        ahead). It waits for the next block and compares the local time it is first
        seen with its timestamp (``Timestamp.Now``), so the age of the head block does
        not enter. The block's timestamp is set when it is authored, so the authoring
        and gossip delay before it is seen (typically a few hundred ms) counts as ahead:
        ``CHAIN_DELAY_S`` of it is taken off."""
        with _sdk(f"reading the blocks of {self.network}"):
            block_time = float(self.subtensor.block_time())
            start = int(self.subtensor.block)
        wait = timeout_s if timeout_s is not None else 2 * block_time + 5
        deadline = time.monotonic() + wait
        while True:
            sleep(poll_s)
            with _sdk(f"reading the blocks of {self.network}"):
                head = int(self.subtensor.block)
            seen = wall()
            if head > start:
                break
            if time.monotonic() > deadline:
                raise ChainError(f"no new block on {self.network} in {wait:.0f} s")
        with _sdk(f"reading the time of block {head}"):
            try:
                stamp = self.subtensor.timestamp(block=head).timestamp()
            except (TypeError, ValueError) as e:
                raise ChainError(f"block {head} has no timestamp: {e}") from e
        return seen - stamp - CHAIN_DELAY_S

    def check_clock(
        self, tolerance_s: float = CLOCK_TOLERANCE_S, background: bool = False, **kw: Any
    ) -> float | None:
        """Measure the local clock against the chain's (``clock_offset``) and log a
        warning naming the offset and NTP when it is off by more than ``tolerance_s``:
        miners refuse signed requests more than 2 s in the future or 10 s old, so a
        validator whose clock runs 3 s fast gets 401 from every miner. Returns the offset
        (None when it could not be measured, which is logged too). ``background`` runs
        it on a daemon thread, so start-up does not wait for the next block."""
        if background:
            threading.Thread(
                target=self.check_clock,
                args=(tolerance_s,),
                kwargs=kw,
                daemon=True,
                name="chorus-clock-check",
            ).start()
            return None
        try:
            offset = self.clock_offset(**kw)
        except ChainError as e:
            log.warning("could not compare this machine's clock with the chain's: %s", e)
            return None
        if abs(offset) > tolerance_s:
            log.warning(
                "CLOCK: this machine's clock is %.1f s %s the chain's (%s). Signed requests "
                "older than 10 s or more than 2 s in the future are refused (401), so "
                "validators and miners must keep their clocks within a second: enable NTP "
                "(`timedatectl set-ntp true`, chrony or ntpd) and check `timedatectl`",
                abs(offset),
                "ahead of" if offset > 0 else "behind",
                self.network,
            )
        else:
            log.info("clock within %.1f s of the chain's (%+.2f s)", tolerance_s, offset)
        return offset


def open_subnet(network: str, netuid: int | None, wallet: Any = None) -> BittensorChain:
    """A BittensorChain on ``network`` (finney, test, local or a ws:// / wss:// endpoint),
    keeping its weight commits in ``$CHORUS_HOME/weight-commits/NETWORK-NETUID.json``.
    Nothing connects until the first read, so opening is free and never fails offline."""
    if netuid is None:
        raise ChainError("the bittensor chain needs a subnet: pass --netuid")
    if netuid < 0:
        raise ChainError(f"netuid must be a non-negative number, not {netuid}")
    try:
        subtensor = bt.Subtensor(network)
    except ValueError as e:
        raise ChainError(str(e)) from None
    from chorus.config import chorus_home

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", network).strip("_")
    try:  # where weight commits are kept for `chorus chain show`; optional
        commits: Path | None = chorus_home() / "weight-commits" / f"{name}-{netuid}.json"
    except OSError:
        commits = None
    return BittensorChain(subtensor, netuid, wallet, commits_path=commits)

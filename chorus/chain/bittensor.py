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

import ipaddress
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import bittensor as bt
from bittensor.intents import normalize
from bittensor.keyfiles import KeyfileError

from chorus import __version__
from chorus.chain import ChainError, Epoch, Neuron, Standing

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


def quantize(weights: Mapping[int, float]) -> dict[int, int]:
    """Weights as the chain stores them: u16 values max-upscaled so the largest is 65535.

    Scores that are NaN, infinite, negative or zero are dropped (a validator's bad
    number must not void the whole row); all-zero input gives ``{}``. The scaling is
    the SDK's own ``bittensor.intents.normalize``, the one the chain's format follows.
    """
    clean = sorted((int(u), float(w)) for u, w in weights.items() if math.isfinite(w) and w > 0)
    uids, values = normalize([u for u, _ in clean], [w for _, w in clean])
    return dict(zip(uids, values, strict=True))


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
    signs writes and may be None for read-only use (``chorus chain show``).
    """

    def __init__(
        self,
        subtensor: Any,
        netuid: int,
        wallet: Any = None,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.subtensor = subtensor
        self.netuid = netuid
        self.network: str = subtensor.network
        self.wallet = wallet
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._graph: bt.Metagraph | None = None
        self._graph_at = -math.inf
        self._limits: tuple[int, int] | None = None
        self._limits_at = -math.inf
        self._trust: tuple[bt.Metagraph, list[float]] | None = None  # for that metagraph
        self._weights_block = 0  # our own last successful set, before the metagraph shows it

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

    def limits(self) -> tuple[int, int]:
        """(weights rate limit in blocks, minimum weights version key), cached like the
        metagraph: hyperparameters change rarely and only by the subnet owner."""
        with self._lock:
            if self._limits is None or self.clock() - self._limits_at > self.ttl_s:
                with _sdk(f"reading the hyperparameters of subnet {self.netuid}"):
                    rate = self.subtensor.hyperparameters.weights_rate_limit(self.netuid)
                    version = self.subtensor.query(
                        bt.storage.SubtensorModule.WeightsVersionKey, [self.netuid]
                    )
                self._limits, self._limits_at = (int(rate or 0), int(version or 0)), self.clock()
            return self._limits

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

    def _execute(self, intent: Any, what: str) -> None:
        with _sdk(what):
            result = self.subtensor.execute(intent, self.wallet)
        if not result.success:
            raise ChainError(f"{what} failed: {result.message or result.error}")
        with self._lock:
            self._graph_at = -math.inf  # the chain changed; read it again next time

    def register(self, hotkey: str, coldkey: str, *_: Any, **__: Any) -> Neuron:
        """Registration on Bittensor costs TAO and is signed by the coldkey: btcli's job."""
        raise ChainError(
            f"register on Bittensor with `btcli subnets register --netuid {self.netuid} "
            f"--network {self.network} --wallet NAME --wallet-hotkey HOTKEY` (hotkey {hotkey})"
        )

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        """Publish where validators reach this miner; skipped when the chain already shows
        that endpoint, so restarts cost no fee and do not hit the serving rate limit."""
        self._check_signer(hotkey)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is None or ip.is_unspecified:
            raise ChainError(
                f"the axon address must be an IP address validators can reach, not {host!r};"
                " pass the public one with --axon-host"
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
        permit, unknown uids, nothing to set, an outdated version key, or a call within
        the subnet's weights rate limit."""
        self._check_signer(hotkey)
        me = self._registered(hotkey)
        if not me.validator_permit:
            raise ChainError(f"hotkey {hotkey} has no validator permit on subnet {self.netuid}")
        unknown = sorted(set(weights) - {n.uid for n in self.metagraph().neurons})
        if unknown:
            raise ChainError(f"uids {unknown} are not on subnet {self.netuid}")
        values = quantize(weights)
        if not values:
            raise ChainError("no positive weights to set")
        rate_limit, required = self.limits()
        if required > VERSION_KEY:
            raise ChainError(
                f"subnet {self.netuid} requires weights version key {required}; chorus "
                f"{__version__} sends {VERSION_KEY}: upgrade chorus"
            )
        block = self.block()
        last = max(me.last_update, self._weights_block)
        if rate_limit and last and block - last < rate_limit:
            wait = rate_limit - (block - last)
            raise ChainError(
                f"weights were set {block - last} blocks ago and subnet {self.netuid} allows "
                f"one set per {rate_limit} blocks; retry in {wait} blocks"
            )
        intent = bt.SetWeights(
            netuid=self.netuid,
            uids=list(values),
            weights=[float(v) for v in values.values()],
            version_key=VERSION_KEY,
        )
        self._execute(intent, f"setting weights on subnet {self.netuid}")
        self._weights_block = block


def open_subnet(network: str, netuid: int | None, wallet: Any = None) -> BittensorChain:
    """A BittensorChain on ``network`` (finney, test, local or a ws:// / wss:// endpoint).
    Nothing connects until the first read, so opening is free and never fails offline."""
    if netuid is None:
        raise ChainError("the bittensor chain needs a subnet: pass --netuid")
    if netuid < 0:
        raise ChainError(f"netuid must be a non-negative number, not {netuid}")
    try:
        subtensor = bt.Subtensor(network)
    except ValueError as e:
        raise ChainError(str(e)) from None
    return BittensorChain(subtensor, netuid, wallet)

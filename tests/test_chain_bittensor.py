"""The Bittensor chain backend, driven through the real SDK with no network.

A ``bittensor.Subtensor`` runs over ``MemorySubstrate``, an in-memory implementation of
the SDK's own ``Substrate`` seam: the metagraph is decoded, weights are conformed and
composed, and intents are planned and "submitted" by the SDK itself; only the wire is
replaced. Tests marked ``live`` read a real chain and run only when
``CHORUS_LIVE_CHAIN=ws://...`` is set (``CHORUS_LIVE_NETUID`` picks the subnet, default 1).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import random
import time

import bittensor as bt
import httpx
import pytest
from bittensor.intents import normalize
from bittensor.result import ExtrinsicResult

from chorus import __version__
from chorus.auth import AccessPolicy, create_wallet, sign
from chorus.chain import ChainError, Epoch, Neuron, Standing, WeightCommit, open_chain
from chorus.chain.bittensor import (
    CHAIN_DELAY_S,
    VERSION_KEY,
    BittensorChain,
    quantize,
    to_neuron,
    version_key,
    weights_intent,
)
from chorus.cli import main
from chorus.miner import Miner, MinerSettings, create_app
from chorus.store import Answer, ValidatorStore
from chorus.validator import Validator
from tests.servers import ThreadServer

NETUID = 7
RAO = 10**9


class MemorySubstrate:
    """The SDK's ``Substrate`` contract over a dict: storage items, one metagraph record,
    and a list of the calls submitted (with the signer's address)."""

    token_symbols: dict[int, str] = {}

    def __init__(self, graph: dict | None):
        self.graph = graph
        self.head = 5000
        self.storage: dict[tuple[str, tuple], object] = {}
        self.queries: list[tuple[str, tuple, str | None]] = []  # (item, params, block hash)
        self.submitted: list[tuple[bt.calls.Call, str]] = []
        self.metagraph_reads = 0
        self.outcome = ExtrinsicResult(True, "included")
        self.down = False

    def balance(self, rao: int, netuid: int = 0) -> bt.Balance:
        return bt.Balance.from_rao(rao, netuid)

    async def connect(self) -> None:
        if self.down:
            raise bt.RpcConnectionError("connection refused")

    async def close(self) -> None:
        pass

    async def block_hash(self, block: int | None = None) -> str:
        return f"0x{block or self.head:064x}"

    async def block_number(self) -> int:
        return self.head

    async def block_time(self) -> float:
        return 12.0

    async def query(self, module, name, params=None, block_hash=None):
        if self.down:
            raise bt.RpcConnectionError("connection lost")
        self.queries.append((name, tuple(params or ()), block_hash))
        return self.storage.get((name, tuple(params or ())))

    async def query_map(self, module, name, params=None, block_hash=None):
        return self.storage.get((name, tuple(params or ())), [])

    async def runtime_call(self, api, method, params, block_hash=None):
        assert (api, method, params) == ("SubnetInfoRuntimeApi", "get_metagraph", [NETUID])
        self.metagraph_reads += 1
        return self.graph

    async def compose(self, call):
        return call

    async def estimate_fee(self, call, keypair) -> bt.Balance:
        return bt.Balance.from_rao(1000)

    async def submit(self, call, keypair, **_) -> ExtrinsicResult:
        self.submitted.append((call, keypair.ss58_address))
        return self.outcome


def axon(host: str, port: int) -> dict:
    ip = ipaddress.ip_address(host)
    return {"ip": int(ip), "port": port, "ip_type": ip.version}


# The epoch's results per row, as the runtime encodes them: the scores as u16 (PerU16,
# 65535 = 1.0), emission in rao of alpha. Rows without them get 0, as on a fresh subnet.
SCORE_COLUMNS = {
    "rank": "rank",
    "trust": "trust",
    "consensus": "consensus",
    "incentive": "incentives",
    "dividends": "dividends",
    "emission": "emission",
}


def metagraph_record(
    rows: list[dict], block: int, last_step: int | None = None, owner: int = 0
) -> dict:
    """The runtime's ``get_metagraph`` answer for rows of (wallet, stake, permit, axon,
    last_update, and the epoch's results): the columnar shape the chain sends, stakes
    and emission in rao, scores as u16. ``last_step`` (the last epoch's block) defaults to
    ten blocks back. A ``validator_trust`` column is sent only when a row has one (most
    runtimes leave it out of the metagraph; it is in storage). ``owner`` is the row whose
    hotkey is the subnet owner's (``SubnetOwnerHotkey``)."""
    scores = {column: [int(r.get(key, 0)) for r in rows] for key, column in SCORE_COLUMNS.items()}
    if any("validator_trust" in r for r in rows):
        scores["validator_trust"] = [int(r.get("validator_trust", 0)) for r in rows]
    return {
        **scores,
        "netuid": NETUID,
        "name": list(b"chorus"),
        "symbol": list("γ".encode()),
        "block": block,
        "tempo": 360,
        "last_step": block - 10 if last_step is None else last_step,
        "blocks_since_last_step": 10,
        "owner_hotkey": rows[owner]["wallet"].hotkey.ss58_address,
        "owner_coldkey": rows[owner]["wallet"].coldkeypub.ss58_address,
        "network_registered_at": 1,
        "num_uids": len(rows),
        "max_uids": 256,
        "hotkeys": [r["wallet"].hotkey.ss58_address for r in rows],
        "coldkeys": [r["wallet"].coldkeypub.ss58_address for r in rows],
        "axons": [r.get("axon") or {"ip": 0, "port": 0, "ip_type": 4} for r in rows],
        "active": [True] * len(rows),
        "validator_permit": [r.get("permit", False) for r in rows],
        "last_update": [r.get("last_update", 0) for r in rows],
        # total_stake is the chain's stake weight (alpha + TAO x tao_weight), which chorus uses
        "alpha_stake": [int(r.get("stake", 0) * RAO) // 4 for r in rows],
        "tao_stake": [int(r.get("stake", 0) * RAO) * 3 for r in rows],
        "total_stake": [int(r.get("stake", 0) * RAO) for r in rows],
    }


class Subnet:
    """A subnet of real wallets on a MemorySubstrate: uid 0 a validator with a permit and
    stake, uid 1 a poor validator, uid 2 a registered non-validator, uids 3-4 miners
    (3 serving an IPv4 axon, 4 an IPv6 one); ``stranger`` is not registered. uid 0's
    hotkey is the subnet owner's (``owner``), and the chain's clock (``Timestamp.Now``)
    reads the local time when the subnet is made."""

    def __init__(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))
        self.wallets = wallets = str(tmp_path / "wallets")
        names = ["validator", "poor", "outsider", "miner-0", "miner-1", "stranger"]
        self.w = {name: create_wallet(name, path=wallets) for name in names}
        self.rows = [
            {"wallet": self.w["validator"], "stake": 1000.0, "permit": True},
            {"wallet": self.w["poor"], "stake": 1.0, "permit": True},
            {"wallet": self.w["outsider"], "stake": 50.0},
            {"wallet": self.w["miner-0"], "axon": axon("203.0.113.5", 8091)},
            {"wallet": self.w["miner-1"], "axon": axon("2001:db8::1", 8092)},
        ]
        self.substrate = MemorySubstrate(None)
        self.last_step: int | None = None  # the record's default: ten blocks back
        self.owner = 0
        self.publish()
        self.set_storage(rate_limit=100, version=0)
        self.set_time(time.time())

    def publish(self) -> None:
        self.substrate.graph = metagraph_record(
            self.rows, self.substrate.head, self.last_step, self.owner
        )
        for uid, row in enumerate(self.rows):
            hotkey = row["wallet"].hotkey.ss58_address
            self.substrate.storage[("Uids", (NETUID, hotkey))] = uid
        last = [row.get("last_update", 0) for row in self.rows]
        self.substrate.storage[("LastUpdate", (NETUID,))] = last

    def set_storage(self, rate_limit: int, version: int) -> None:
        self.substrate.storage[("WeightsSetRateLimit", (NETUID,))] = rate_limit
        self.substrate.storage[("WeightsVersionKey", (NETUID,))] = version

    def set_rules(self, max_weight_limit: int | None = None, min_allowed: int | None = None):
        """The subnet's MaxWeightsLimit and MinAllowedWeights hyperparameters."""
        self.substrate.storage[("MaxWeightsLimit", (NETUID,))] = max_weight_limit
        self.substrate.storage[("MinAllowedWeights", (NETUID,))] = min_allowed

    def set_time(self, unix: float) -> None:
        """The head block's timestamp (``Timestamp.Now``, in milliseconds)."""
        self.substrate.storage[("Now", ())] = int(unix * 1000)

    def commit_reveal(self) -> None:
        """Switch commit-reveal on, with the epoch schedule the SDK reads to pick the
        drand round of the reveal: tempo 360, reveal one epoch later."""
        storage = self.substrate.storage
        storage[("CommitRevealWeightsEnabled", (NETUID,))] = True
        storage[("Tempo", (NETUID,))] = 360
        storage[("RevealPeriodEpochs", (NETUID,))] = 1
        storage[("LastEpochBlock", (NETUID,))] = self.substrate.head - 10
        storage[("BlocksSinceLastStep", (NETUID,))] = 10

    def chain(self, signer: str | None = "validator", **kw) -> BittensorChain:
        subtensor = bt.Subtensor("local", substrate=self.substrate)
        return BittensorChain(subtensor, NETUID, self.w[signer] if signer else None, **kw)

    def hotkey(self, name: str) -> str:
        return self.w[name].hotkey.ss58_address


@pytest.fixture
def subnet(tmp_path, monkeypatch) -> Subnet:
    return Subnet(tmp_path, monkeypatch)


# -- version key and weights ----------------------------------------------------------


# The key each chorus release sends, worked out by hand from the formula in the docs
# (major * 1_000_000 + minor * 1_000 + patch): 0.1.0 -> 0 + 1 * 1_000 + 0 = 1_000.
# A release that bumps the version adds its line here.
RELEASE_KEYS = {"0.1.0": 1_000}


def test_version_key_sent_is_the_releases_key():
    assert __version__ in RELEASE_KEYS, f"add chorus {__version__}'s key to RELEASE_KEYS"
    assert RELEASE_KEYS[__version__] == VERSION_KEY


@pytest.mark.parametrize(
    ("version", "key"),
    [
        ("0.1.0", 1_000),
        ("1.2.3", 1_002_003),
        ("0.2.15", 2_015),
        ("3.14.159", 3_014_159),
        ("10.999.999", 10_999_999),
        ("2.0.0rc1", 2_000_000),  # a pre-release suffix is ignored
        ("2.0", 2_000_000),  # a missing patch is 0
        ("1.4.2.post1", 1_004_002),
    ],
)
def test_version_key_formula(version, key):
    assert version_key(version) == key


def test_version_key_ordering_and_refusals():
    assert version_key("0.10.0") < version_key("1.0.0")  # no 1000*major + 10*minor clash
    assert version_key("0.999.999") < version_key("1.0.0")
    for bad in ("dev", "1.1000.0", "1.2.1000"):
        with pytest.raises(ValueError):
            version_key(bad)


def test_quantize_all_zero_nan_and_negative_give_nothing():
    assert quantize({}) == {}
    assert quantize({0: 0.0, 1: 0.0}) == {}
    assert quantize({0: math.nan, 1: -1.0, 2: math.inf, 3: 0.0}) == {}


def test_quantize_drops_bad_entries_and_keeps_the_rest():
    assert quantize({0: math.nan, 1: 0.25, 2: 0.75, 3: -0.5}) == {1: 21845, 2: 65535}


def test_quantize_single_miner_gets_the_whole_u16():
    assert quantize({42: 1e-9}) == {42: 65535}


def test_quantize_drops_weights_that_round_to_zero():
    assert quantize({0: 1.0, 1: 1e-6}) == {0: 65535}


def test_quantize_256_miners_keeps_proportions_within_one_step():
    weights = {uid: float(uid + 1) for uid in range(256)}
    values = quantize(weights)
    assert sorted(values) == list(range(256))
    assert max(values.values()) == values[255] == 65535
    assert all(isinstance(v, int) and 1 <= v <= 65535 for v in values.values())
    for uid, w in weights.items():
        assert abs(values[uid] - w / 256 * 65535) <= 0.5


# -- reading the metagraph ------------------------------------------------------------


def test_metagraph_maps_to_neurons(subnet):
    chain = subnet.chain(signer=None)
    graph = chain.metagraph()
    assert isinstance(graph, bt.Metagraph)
    assert all(isinstance(n, bt.MetagraphNeuron) for n in graph.neurons)
    neurons = chain.neurons()
    assert [n.uid for n in neurons] == [0, 1, 2, 3, 4]
    v = neurons[0]
    assert (v.hotkey, v.coldkey) == (
        subnet.hotkey("validator"),
        subnet.w["validator"].coldkeypub.ss58_address,
    )
    assert v.stake == 1000.0 and v.validator_permit and v.url is None
    assert not neurons[2].validator_permit and neurons[2].stake == 50.0
    assert neurons[3].url == "http://203.0.113.5:8091"
    assert neurons[4].url == "http://[2001:db8::1]:8092"
    assert chain.neuron(subnet.hotkey("miner-0")) == neurons[3]
    assert chain.neuron(subnet.hotkey("stranger")) is None
    assert chain.block() == subnet.substrate.head


def test_to_neuron_from_sdk_objects():
    zero = bt.Balance.from_rao(0, NETUID)
    scores = ("rank", "trust", "consensus", "incentive", "dividends", "pruning_score")
    row = bt.MetagraphNeuron(
        uid=9,
        hotkey="5Hot",
        coldkey="5Cold",
        active=True,
        validator_permit=True,
        last_update=1,
        block_at_registration=1,
        emission=zero,
        alpha_stake=zero,
        tao_stake=bt.Balance.from_rao(0),
        total_stake=bt.Balance.from_rao(2_500_000_000, NETUID),
        axon="10.0.0.2:9000",
        identity=None,
        commitment=None,
        **dict.fromkeys(scores, 0.0),
    )
    assert to_neuron(row) == Neuron(9, "5Hot", "5Cold", "10.0.0.2", 9000, 2.5, True)
    row.axon = None
    assert to_neuron(row).url is None


def test_metagraph_is_cached_for_its_ttl(subnet):
    now = [0.0]
    chain = subnet.chain(signer=None, ttl_s=60.0, clock=lambda: now[0])
    chain.neurons()
    chain.neuron(subnet.hotkey("miner-0"))
    assert subnet.substrate.metagraph_reads == 1
    subnet.rows.append({"wallet": subnet.w["stranger"]})
    subnet.publish()
    now[0] = 59.0
    assert chain.neuron(subnet.hotkey("stranger")) is None
    now[0] = 61.0
    assert chain.neuron(subnet.hotkey("stranger")).uid == 5
    assert subnet.substrate.metagraph_reads == 2


def test_missing_subnet_and_dead_endpoint_are_chain_errors(subnet):
    subnet.substrate.graph = None
    with pytest.raises(ChainError, match="subnet 7 does not exist"):
        subnet.chain().neurons()
    subnet.substrate.down = True
    with pytest.raises(ChainError, match="connection refused"):
        subnet.chain().neurons()


def test_weights_are_read_as_row_fractions(subnet):
    subnet.substrate.storage[("Weights", (NETUID,))] = [(0, [(3, 65535), (4, 21845)])]
    assert subnet.chain().weights() == {0: {3: 0.75, 4: 0.25}}


# -- the last epoch, as the chain's Yuma Consensus left it ----------------------------


def epoch_results(subnet: Subnet) -> None:
    """What an epoch left on the subnet, in the runtime's encodings: the validator earned
    all the dividends, the miners split the incentive 3:1."""
    subnet.rows[0].update(rank=0, dividends=65535, emission=4_100_000_000)
    subnet.rows[3].update(rank=49151, trust=65535, consensus=49151, incentive=49151)
    subnet.rows[3].update(emission=3_075_000_000)
    subnet.rows[4].update(rank=16384, trust=65535, consensus=16384, incentive=16384)
    subnet.rows[4].update(emission=1_025_000_000)
    subnet.publish()


def vtrust_reads(subnet: Subnet) -> list:
    return [q for q in subnet.substrate.queries if q[0] == "ValidatorTrust"]


def test_last_epoch_reads_the_chains_results_from_the_metagraph(subnet):
    epoch_results(subnet)
    # no validator_trust column in this runtime's metagraph: the backend reads storage,
    # and a vector shorter than the subnet (uids registered since) counts 0 for the rest
    subnet.substrate.storage[("ValidatorTrust", (NETUID,))] = [65535, 32768]
    epoch = subnet.chain(signer=None).last_epoch()
    assert isinstance(epoch, Epoch)
    assert epoch.block == subnet.substrate.head - 10  # the metagraph's last_step
    assert epoch.owner_emission is None  # the chain does not report it
    assert [s.uid for s in epoch.neurons] == [0, 1, 2, 3, 4]
    assert epoch.standing(0) == Standing(
        uid=0,
        hotkey=subnet.hotkey("validator"),
        stake=1000.0,
        validator_permit=True,
        rank=0.0,
        trust=0.0,
        consensus=0.0,
        incentive=0.0,
        dividends=1.0,
        emission=4.1,
        validator_trust=1.0,
    )
    assert epoch.standing(1).validator_trust == 32768 / 65535
    assert epoch.standing(2).validator_trust == 0.0 and not epoch.standing(2).validator_permit
    miner = epoch.standing(3)
    assert (miner.hotkey, miner.stake, miner.validator_permit) == (
        subnet.hotkey("miner-0"),
        0.0,
        False,
    )
    assert miner.rank == miner.consensus == miner.incentive == 49151 / 65535
    assert miner.trust == 1.0 and miner.dividends == 0.0 and miner.validator_trust == 0.0
    assert miner.emission == 3.075 and epoch.standing(4).emission == 1.025
    assert epoch.standing(4).incentive == 16384 / 65535
    assert epoch.standing(5) is None
    # read at the metagraph's own block, so both describe the same moment
    [(_, params, block_hash)] = vtrust_reads(subnet)
    assert (params, block_hash) == ((NETUID,), f"0x{subnet.substrate.head:064x}")
    assert json.loads(json.dumps(epoch.to_json()))["neurons"][3]["incentive"] == miner.incentive


def test_last_epoch_takes_validator_trust_from_the_runtime_when_it_sends_it(subnet):
    epoch_results(subnet)
    subnet.rows[0]["validator_trust"] = 58982
    subnet.publish()
    subnet.substrate.storage[("ValidatorTrust", (NETUID,))] = [1, 1, 1, 1, 1]  # not read
    epoch = subnet.chain(signer=None).last_epoch()
    assert epoch.standing(0).validator_trust == 58982 / 65535
    assert [s.validator_trust for s in epoch.neurons[1:]] == [0.0] * 4
    assert vtrust_reads(subnet) == []


def test_last_epoch_with_no_validator_trust_anywhere_is_zero(subnet):
    epoch = subnet.chain(signer=None).last_epoch()  # storage has no ValidatorTrust entry
    assert [s.validator_trust for s in epoch.neurons] == [0.0] * 5
    assert all(s.incentive == s.emission == 0.0 for s in epoch.neurons)


def test_last_epoch_is_cached_with_the_metagraph(subnet):
    now = [0.0]
    epoch_results(subnet)
    subnet.substrate.storage[("ValidatorTrust", (NETUID,))] = [65535]
    chain = subnet.chain(signer=None, ttl_s=60.0, clock=lambda: now[0])
    first = chain.last_epoch()
    chain.neurons()
    assert chain.last_epoch() == first
    assert subnet.substrate.metagraph_reads == 1 and len(vtrust_reads(subnet)) == 1
    # the next epoch: the miners swap places, the validator's trust halves
    subnet.rows[3]["incentive"], subnet.rows[4]["incentive"] = 16384, 49151
    subnet.last_step = subnet.substrate.head + 350
    subnet.substrate.head += 360
    subnet.publish()
    subnet.substrate.storage[("ValidatorTrust", (NETUID,))] = [32768]
    now[0] = 30.0
    assert chain.last_epoch() == first
    now[0] = 61.0
    second = chain.last_epoch()
    assert second.block == first.block + 360
    assert second.standing(3).incentive == 16384 / 65535
    assert second.standing(0).validator_trust == 32768 / 65535
    assert subnet.substrate.metagraph_reads == 2 and len(vtrust_reads(subnet)) == 2


def test_last_epoch_is_none_before_the_first_epoch(subnet):
    subnet.last_step = 0
    subnet.publish()
    assert subnet.chain(signer=None).last_epoch() is None
    assert vtrust_reads(subnet) == []


def test_last_epoch_failures_are_chain_errors(subnet):
    subnet.substrate.graph = None
    with pytest.raises(ChainError, match="subnet 7 does not exist"):
        subnet.chain(signer=None).last_epoch()
    subnet.publish()
    chain = subnet.chain(signer=None)
    chain.metagraph()
    subnet.substrate.down = True  # the storage read after the metagraph fails
    with pytest.raises(ChainError, match="validator trust of subnet 7 failed: connection lost"):
        chain.last_epoch()


# -- setting weights ------------------------------------------------------------------


def test_set_weights_submits_u16_with_version_key(subnet):
    subnet.chain().set_weights(subnet.hotkey("validator"), {3: 0.25, 4: 0.75, 2: math.nan})
    [(call, signer)] = subnet.substrate.submitted
    assert (call.module, call.function) == ("SubtensorModule", "set_mechanism_weights")
    assert call.params == {
        "netuid": NETUID,
        "mecid": 0,
        "dests": [3, 4],
        "weights": [21845, 65535],
        "version_key": VERSION_KEY,
    }
    assert signer == subnet.hotkey("validator")


def test_set_weights_respects_the_rate_limit(subnet):
    subnet.rows[0]["last_update"] = subnet.substrate.head - 10
    subnet.publish()
    chain = subnet.chain()
    me = subnet.hotkey("validator")
    with pytest.raises(ChainError, match="retry in 90 blocks"):
        chain.set_weights(me, {3: 1.0})
    assert subnet.substrate.submitted == []
    subnet.substrate.head += 90
    chain.set_weights(me, {3: 1.0})
    assert len(subnet.substrate.submitted) == 1
    # the chain has not shown our new last_update yet: the backend remembers it
    subnet.substrate.head += 1
    with pytest.raises(ChainError, match="retry in 99 blocks"):
        chain.set_weights(me, {3: 1.0})
    assert len(subnet.substrate.submitted) == 1


def test_set_weights_refuses_what_the_chain_would_reject(subnet):
    chain = subnet.chain()
    me = subnet.hotkey("validator")
    ghost = bt.Wallet(name="ghost", path=subnet.wallets)  # no keyfiles
    cases = [
        (subnet.chain("outsider"), subnet.hotkey("outsider"), {3: 1.0}, "no validator permit"),
        (subnet.chain("stranger"), subnet.hotkey("stranger"), {3: 1.0}, "btcli subnets register"),
        (chain, subnet.hotkey("miner-0"), {3: 1.0}, "signs as"),
        (subnet.chain(signer=None), me, {3: 1.0}, "without a wallet"),
        (BittensorChain(chain.subtensor, NETUID, ghost), me, {3: 1.0}, "signing hotkey"),
        (chain, me, {3: 0.0, 4: math.nan}, "no positive weights"),
        (chain, me, {3: 1.0, 99: 1.0}, r"uids \[99\] are not on subnet"),
    ]
    for backend, hotkey, weights, reason in cases:
        with pytest.raises(ChainError, match=reason):
            backend.set_weights(hotkey, weights)
    subnet.set_storage(rate_limit=100, version=VERSION_KEY + 1)
    with pytest.raises(ChainError, match="upgrade chorus"):
        subnet.chain().set_weights(me, {3: 1.0})
    assert subnet.substrate.submitted == []


def test_a_failed_extrinsic_is_a_chain_error(subnet):
    subnet.substrate.outcome = ExtrinsicResult(False, "MaxWeightExceeded")
    with pytest.raises(ChainError, match="MaxWeightExceeded"):
        subnet.chain().set_weights(subnet.hotkey("validator"), {3: 1.0})


class NeverEvaluates:
    """An evaluator for a validator that only sets weights: scoring would be a bug."""

    def evaluate(self, samples, rate, challenge):
        raise AssertionError("setting weights must not evaluate anything")


def test_validator_sets_weights_through_the_bittensor_chain(subnet, tmp_path):
    chain = subnet.chain()
    store = ValidatorStore(tmp_path / "state.sqlite", tmp_path / "samples", 0)
    answers = [
        Answer(uid=3, hotkey=subnet.hotkey("miner-0"), service="tts", prompt="p", score=0.9),
        Answer(uid=4, hotkey=subnet.hotkey("miner-1"), service="tts", prompt="p", score=0.72),
    ]
    store.record_round(1, answers, alpha=0.0)
    validator = Validator(subnet.w["validator"], chain, store, {"tts": NeverEvaluates()})
    assert validator.maybe_set_weights(force=True)
    [(call, _)] = subnet.substrate.submitted
    # chorus.incentive: uid 4 scores 80 % of the best, so its weight is 0.8 ** 6 = 0.262144
    # of uid 3's; max-upscaled to u16, 65535 * 0.262144 = 17179.6 -> 17180.
    assert call.params["dests"] == [3, 4] and call.params["weights"] == [65535, 17180]
    # within the rate limit the chain refuses; the validator logs it and carries on
    assert not validator.maybe_set_weights(force=True)
    assert len(subnet.substrate.submitted) == 1


def test_subnet_owner_sets_weights_without_a_permit(subnet):
    """subtensor's check_validator_permit (subnets/weights.rs) lets the subnet owner's
    hotkey (SubnetOwnerHotkey) set weights without a permit, and check_weights_min_stake
    without the minimum stake; anyone else still needs the permit."""
    subnet.owner = 2  # "outsider": registered, stake 50, no permit
    subnet.publish()
    owner = subnet.hotkey("outsider")
    subnet.chain("outsider").set_weights(owner, {3: 1.0, 4: 0.5})
    [(call, signer)] = subnet.substrate.submitted
    assert signer == owner and call.params["dests"] == [3, 4]
    subnet.rows[0]["permit"] = False
    subnet.publish()
    with pytest.raises(ChainError, match="no validator permit"):
        subnet.chain().set_weights(subnet.hotkey("validator"), {3: 1.0})
    assert len(subnet.substrate.submitted) == 1


# -- the chain's own weights checks, reimplemented to test against ---------------------
#
# subtensor's internal_set_weights (pallets/subtensor/src/subnets/weights.rs) checks a
# row, among other things, in this order: check_len_uids_within_allowed (no more uids
# than the subnet has), check_length (at least min(min_allowed_weights, subnet n)
# weights, unless the row is a single self weight), then vec_u16_max_upscale_to_u16 and
# max_weight_limited -> check_vec_max_limited (pallets/subtensor/src/epoch/math.rs):
# the row is normalised (inplace_normalize) and its largest entry compared with
# max_weight_limit / 65535, all in I32F32 fixed point. substrate-fixed divides as
# ((a << 32) / b) on the raw bits (div_dir), truncating; safe_div gives 0 for b = 0;
# round() takes ties away from zero; saturating_to_num::<u16> caps at 65535. The commit
# -reveal path runs the same function when the chain reveals a commit.

FRAC = 32


def _fx(n: int) -> int:
    return n << FRAC


def _div(a: int, b: int) -> int:
    return 0 if b == 0 else (a << FRAC) // b


def _mul(a: int, b: int) -> int:
    return (a * b) >> FRAC


def _round_u16(bits: int) -> int:
    return min(65535, (bits + (1 << (FRAC - 1))) >> FRAC)


def chain_max_upscale(values: list[int]) -> list[int]:
    """vec_u16_max_upscale_to_u16 -> vec_max_upscale_to_u16."""
    bits = [_fx(v) for v in values]
    top = max(bits, default=0)
    if top == 0:
        return [0 for _ in bits]
    if top > _fx(32768):
        ratio = _div(_fx(65535), top)
        return [_round_u16(_mul(b, ratio)) for b in bits]
    return [_round_u16(_div(_mul(b, _fx(65535)), top)) for b in bits]


def chain_max_limited(values: list[int], limit: int) -> bool:
    """check_vec_max_limited: the normalised row's largest entry within limit / 65535."""
    bits = [_fx(v) for v in values]
    total = sum(bits)
    if not bits or total == 0:
        return True
    return max(_div(b, total) for b in bits) <= _div(_fx(limit), _fx(65535))


def chain_refuses(
    me: int | None, uids: list[int], values: list[int], limit: int, min_allowed: int, n: int
) -> str | None:
    """The error internal_set_weights gives this row (of the checks above), or None."""
    self_weight = len(values) == 1 and uids[0] == me
    if len(uids) > n:
        return "UidsLengthExceedUidsInSubNet"
    if not self_weight and len(values) < min(min_allowed, n):
        return "WeightVecLengthIsLow"
    upscaled = chain_max_upscale(values)
    if not self_weight and limit != 65535 and not chain_max_limited(upscaled, limit):
        return "MaxWeightExceeded"
    return None


LIMITS = [65535, 32768, 13107, 6553, 6553, 4096, 1000]


def random_rows(seed: int, count: int):
    """(max_weight_limit, weights) pairs over up to 256 uids: chorus's own curve over
    uniform scores, heavy-tailed, one dominant miner, and flat rows."""
    rng = random.Random(seed)
    for _ in range(count):
        uids = rng.sample(range(256), rng.randint(1, 256))
        kind = rng.choice(["incentive", "heavy", "dominant", "flat"])
        if kind == "incentive":
            scores = [rng.random() for _ in uids]
            raw = [(s / max(scores)) ** 6 for s in scores]
        elif kind == "heavy":
            raw = [rng.expovariate(1.0) ** 3 for _ in uids]
        elif kind == "dominant":
            raw = [1.0] + [rng.uniform(0.0001, 0.05) for _ in uids[1:]]
        else:
            raw = [rng.uniform(0.8, 1.0) for _ in uids]
        yield rng.choice(LIMITS), dict(zip(uids, raw, strict=True))


def test_quantized_rows_pass_the_chains_max_weight_check_exactly(subnet):
    """2000 seeded rows through what chorus submits (quantize, then the SDK's own
    conforming in SetWeights) and the chain's check reimplemented above. The old way
    (the SDK's normalize, then its clip) is checked the same way to show what failed."""
    # rows the chain's own tests (and arithmetic by hand) decide
    assert chain_max_upscale([0, 1, 2]) == [0, 32768, 65535]  # 1/2 * 65535 = 32767.5
    assert chain_max_upscale([100, 65535]) == [100, 65535]
    assert chain_max_limited([65535, 65535], 32768) and not chain_max_limited([65535, 1], 32768)
    assert chain_max_limited([65535] * 10, 6554) and not chain_max_limited([65535] * 10, 6553)
    assert chain_refuses(0, [0], [65535], 100, 8, 5) is None  # a single self weight
    assert chain_refuses(0, [3], [65535], 65535, 2, 5) == "WeightVecLengthIsLow"
    assert chain_refuses(0, [3, 4], [1, 1], 65535, 8, 2) is None  # min(8, n = 2)
    subtensor, wallet = subnet.chain().subtensor, subnet.w["validator"]
    checked = refused = old_failed = 0
    for limit, weights in random_rows(seed=16, count=2000):
        subnet.set_rules(max_weight_limit=limit)
        if len(weights) * limit < 65535:  # no row over so few uids can pass
            with pytest.raises(ChainError, match="needs weights on at least"):
                quantize(weights, limit)
            refused += 1
            continue
        values = quantize(weights, limit)
        sent = subtensor.plan(weights_intent(NETUID, values, 256), wallet).call.params
        # the SDK submits the row unchanged, so a commit can be compared after the reveal
        assert (sent["dests"], sent["weights"]) == (list(values), list(values.values()))
        assert max(values.values()) == 65535
        assert chain_refuses(None, sent["dests"], sent["weights"], limit, 0, 256) is None
        checked += 1
        uids, old = normalize(list(weights), list(weights.values()))
        intent = bt.SetWeights(netuid=NETUID, uids=uids, weights=[float(v) for v in old])
        sent = subtensor.plan(intent, wallet).call.params
        old_failed += chain_refuses(None, sent["dests"], sent["weights"], limit, 0, 256) is not None
    assert checked > 1800 and refused > 10
    assert old_failed > 100  # measured: 195 of the 1872 rows that can pass failed the old way


def test_quantize_with_a_binding_limit_keeps_the_order_and_the_cap():
    weights = {0: 1.0, 1: 0.2, 2: 0.2, 3: 0.1}
    values = quantize(weights, 32768)  # no weight above half the row
    assert values[0] == 65535 and min(values[1], values[2]) > values[3] > 0
    assert abs(values[1] - values[2]) <= 1  # one got the odd step of the repair
    assert chain_max_limited(list(values.values()), 32768)
    assert 32768 * sum(values.values()) >= 65535 * 65535  # the exact form of the check
    assert quantize(weights) == quantize(weights, 65535) == {0: 65535, 1: 13107, 2: 13107, 3: 6554}


def test_set_weights_refuses_too_few_miners_for_the_max_weight_limit(subnet):
    subnet.set_rules(max_weight_limit=6553)  # no weight above 10 % of the row
    with pytest.raises(ChainError, match="at least 11 uids; this validator has scored 2"):
        subnet.chain().set_weights(subnet.hotkey("validator"), {3: 0.9, 4: 0.3})
    assert subnet.substrate.submitted == []
    subnet.set_rules(max_weight_limit=16384)  # a quarter: four weights will do
    subnet.chain().set_weights(subnet.hotkey("validator"), {1: 0.1, 2: 0.2, 3: 0.9, 4: 0.3})
    [(call, _)] = subnet.substrate.submitted
    sent = call.params
    assert chain_refuses(0, sent["dests"], sent["weights"], 16384, 0, 5) is None


def test_set_weights_pads_to_the_chains_min_allowed_weights(subnet):
    """Two scored miners on a subnet that wants four weights: the chain counts entries
    (check_length), so the smallest weight goes to two more uids, non-validators first."""
    subnet.set_rules(min_allowed=4)
    subnet.chain().set_weights(subnet.hotkey("validator"), {3: 0.9, 4: 0.3})
    [(call, _)] = subnet.substrate.submitted
    assert call.params["dests"] == [1, 2, 3, 4]
    assert call.params["weights"] == [1, 1, 65535, 21845]
    assert chain_refuses(0, call.params["dests"], call.params["weights"], 65535, 4, 5) is None


def test_set_weights_on_a_subnet_smaller_than_its_min_allowed_weights(subnet):
    """The chain asks for min(min_allowed_weights, subnet n) weights, here every uid of
    five (the validator's own last); the SDK alone would demand 64 and refuse."""
    subnet.set_rules(min_allowed=64)
    subnet.chain().set_weights(subnet.hotkey("validator"), {3: 0.9, 4: 0.3})
    [(call, _)] = subnet.substrate.submitted
    assert call.params["dests"] == [0, 1, 2, 3, 4]
    assert call.params["weights"] == [1, 1, 1, 65535, 21845]
    assert chain_refuses(0, call.params["dests"], call.params["weights"], 65535, 64, 5) is None


# -- commit-reveal: commits are checked after the chain reveals them -------------------


def test_commit_reveal_records_the_commit_and_confirms_the_reveal(subnet):
    subnet.commit_reveal()
    chain, me, head = subnet.chain(), subnet.hotkey("validator"), subnet.substrate.head
    chain.set_weights(me, {3: 0.9, 4: 0.3})
    [(call, _)] = subnet.substrate.submitted
    assert call.function == "commit_timelocked_mechanism_weights"
    [commit] = chain.pending_commits()
    assert isinstance(commit, WeightCommit)
    assert (commit.hotkey, commit.uid, commit.block) == (me, 0, head)
    assert commit.reveal_round == call.params["reveal_round"]
    assert commit.weights == {3: 65535, 4: 21845}
    # the reveal epoch starts at the next epoch (tempo 360, ten blocks in)
    assert head < commit.reveal_block <= head + 2 * 361
    subnet.substrate.head = commit.reveal_block - 1
    assert chain.check_commits() == []
    assert not [q for q in subnet.substrate.queries if q[0] == "Weights"]  # not due: not read
    # the chain reveals it: uid 0's row now holds the committed values
    subnet.substrate.head = commit.reveal_block
    subnet.substrate.storage[("Weights", (NETUID, 0))] = [(3, 65535), (4, 21845)]
    [settled] = chain.check_commits()
    assert settled.status == "revealed"
    assert chain.pending_commits() == chain.lost_commits() == []
    assert [c.status for c in chain.weight_commits()] == ["revealed"]


def test_commit_reveal_reports_weights_the_chain_dropped_at_the_reveal(subnet, caplog):
    subnet.commit_reveal()
    chain, me = subnet.chain(), subnet.hotkey("validator")
    chain.set_weights(me, {3: 0.9, 4: 0.3})
    [commit] = chain.pending_commits()
    # past the reveal block, but the chain still lists the commit (its drand round is late)
    subnet.substrate.head = commit.reveal_block + 1
    waiting = [(1, [(me, commit.block + 1, "0x00", commit.reveal_round)])]
    subnet.substrate.storage[("TimelockedWeightCommits", (NETUID,))] = waiting
    assert chain.check_commits() == [] and chain.pending_commits() == [commit]
    # the chain took it, ran the weights checks again (say the permit went at the epoch)
    # and dropped it: uid 0's row still holds its older weights
    subnet.substrate.storage[("TimelockedWeightCommits", (NETUID,))] = []
    subnet.substrate.storage[("Weights", (NETUID, 0))] = [(3, 65535)]
    with caplog.at_level(logging.ERROR, logger="chorus.chain.bittensor"):
        [lost] = chain.lost_commits()
    assert lost.block == commit.block and "dropped it" in lost.reason
    assert "LOST" in caplog.text and chain.pending_commits() == []


def test_commit_reveal_commits_are_kept_for_chain_show(subnet, tmp_path, monkeypatch, capsys):
    """The validator records its commits under CHORUS_HOME, so `chorus chain show`, in
    another process, lists them and reports a lost one."""
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    sdk_client = bt.Subtensor
    monkeypatch.setattr(bt, "Subtensor", lambda net: sdk_client(net, substrate=subnet.substrate))
    subnet.commit_reveal()
    validator = open_chain(
        "bittensor", network="finney", netuid=NETUID, wallet=subnet.w["validator"]
    )
    validator.set_weights(subnet.hotkey("validator"), {3: 1.0, 4: 0.5})
    [commit] = validator.pending_commits()
    on_subnet = ["--chain", "bittensor", "--netuid", str(NETUID), "--wallet-path", subnet.wallets]
    assert main(["chain", "show", "--json", *on_subnet]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["weight_commits"] == [json.loads(json.dumps(commit.to_json()))]
    subnet.substrate.head = commit.reveal_block  # revealed, but the row was never written
    assert main(["chain", "show", *on_subnet]) == 0
    out = capsys.readouterr().out
    assert f"weights committed by uid 0 at block {commit.block}: lost" in out
    assert [c.status for c in validator.weight_commits()] == ["lost"]  # the validator agrees


# -- publishing the axon --------------------------------------------------------------


def test_serve_axon_publishes_and_rereads_the_metagraph(subnet):
    chain = subnet.chain("miner-0", clock=lambda: 0.0)  # the cache never expires by age
    me = subnet.hotkey("miner-0")
    chain.serve_axon(me, "198.51.100.7", 8093)
    [(call, signer)] = subnet.substrate.submitted
    assert (call.function, signer) == ("serve_axon", me)
    assert call.params["ip"] == int(ipaddress.ip_address("198.51.100.7"))
    assert (call.params["port"], call.params["ip_type"]) == (8093, 4)
    assert call.params["version"] == VERSION_KEY
    subnet.rows[3]["axon"] = axon("198.51.100.7", 8093)  # the chain includes it
    subnet.publish()
    assert chain.neuron(me).url == "http://198.51.100.7:8093"


def test_serve_axon_skips_an_endpoint_already_published(subnet):
    subnet.chain("miner-0").serve_axon(subnet.hotkey("miner-0"), "203.0.113.5", 8091)
    subnet.chain("miner-1").serve_axon(subnet.hotkey("miner-1"), "2001:db8::1", 8092)
    assert subnet.substrate.submitted == []


def test_serve_axon_refusals(subnet):
    cases = [
        ("miner-0", "0.0.0.0", 8091, "--axon-host"),
        ("miner-0", "miner.example.com", 8091, "must be an IP address"),
        ("miner-0", "198.51.100.7", 0, "not a valid TCP port"),
        ("stranger", "198.51.100.7", 8091, "not registered on subnet 7"),
    ]
    for name, host, port, reason in cases:
        with pytest.raises(ChainError, match=reason):
            subnet.chain(name).serve_axon(subnet.hotkey(name), host, port)
    with pytest.raises(ChainError, match="btcli subnets register"):
        subnet.chain().register(subnet.hotkey("stranger"), "5Cold")
    assert subnet.substrate.submitted == []


def subtensor_accepts_axon_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """subtensor's is_valid_ip_address(ip_type, addr, allow_zero = true), as
    validate_serve_axon calls it (pallets/subtensor/src/subnets/serving.rs)."""
    addr = int(ip)
    if ip.version == 4:
        return addr < 2**32 - 1 and addr != 0x7F000001
    return addr != 2**128 - 1 and addr != 1


ADDRESSES = [
    "127.0.0.1",
    "::1",
    "255.255.255.255",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "0.0.0.0",
    "::",
    "127.0.0.2",
    "::ffff:127.0.0.1",
    "10.0.0.7",
    "192.168.1.20",
    "198.51.100.7",
    "2001:db8::7",
]


def test_serve_axon_refuses_every_address_subtensor_refuses(subnet, caplog):
    me = subnet.hotkey("miner-0")
    chain_refuses_ip = [
        a for a in ADDRESSES if not subtensor_accepts_axon_ip(ipaddress.ip_address(a))
    ]
    assert chain_refuses_ip == ADDRESSES[:4]
    # refused before signing, and so is what no other machine can reach
    for address in ADDRESSES[:8]:
        with pytest.raises(ChainError, match=r"cannot publish axon .*--axon-host"):
            subnet.chain("miner-0").serve_axon(me, address, 8091)
    with pytest.raises(ChainError, match="subtensor refuses 127.0.0.1 and ::1"):
        subnet.chain("miner-0").serve_axon(me, "127.0.0.1", 8091)
    assert subnet.substrate.submitted == []
    # what the chain takes and others can reach is published; a private address warns
    with caplog.at_level(logging.WARNING, logger="chorus.chain.bittensor"):
        for address in ADDRESSES[8:]:
            subnet.chain("miner-0").serve_axon(me, address, 8091)
    assert [call.params["ip"] for call, _ in subnet.substrate.submitted] == [
        int(ipaddress.ip_address(a)) for a in ADDRESSES[8:]
    ]
    assert "non-public address 10.0.0.7" in caplog.text


# -- a real miner refuses callers by the metagraph ------------------------------------


def test_miner_refuses_callers_by_the_bittensor_metagraph(subnet, piper):
    me = subnet.hotkey("miner-0")
    policy = AccessPolicy(min_stake=10.0)
    miner = Miner(me, subnet.chain("miner-0"), {"tts": piper}, MinerSettings(policy=policy))
    body = json.dumps({"text": "Hello there."}).encode()

    def post(server: ThreadServer, caller: str) -> httpx.Response:
        headers = sign(subnet.w[caller], "POST", "/v1/tts", body, me)
        return httpx.post(server.url + "/v1/tts", content=body, headers=headers, timeout=60)

    with ThreadServer(create_app(miner)) as server:
        refusals = {
            "stranger": "not registered on the subnet",
            "outsider": "no validator permit",
            "poor": "stake 1 is below the minimum 10",
        }
        for caller, reason in refusals.items():
            r = post(server, caller)
            assert r.status_code == 403 and reason in r.json()["error"], (caller, r.text)
        r = post(server, "validator")
        assert r.status_code == 200, r.text
        assert r.json()["duration_s"] > 0.3
    assert miner.served == 1


# -- opening the chain ----------------------------------------------------------------


def test_open_chain_bittensor_is_cold_and_checks_its_options():
    chain = open_chain("bittensor", network="test", netuid=3)
    assert isinstance(chain, BittensorChain)
    assert (chain.netuid, chain.network, chain.wallet) == (3, "test", None)
    with pytest.raises(ChainError, match="--netuid"):
        open_chain("bittensor", network="finney")
    with pytest.raises(ChainError, match="Unknown network 'mainnet'"):
        open_chain("bittensor", network="mainnet", netuid=1)
    with pytest.raises(ChainError, match="available: local, bittensor"):
        open_chain("ethereum")


def test_cli_needs_a_netuid_for_bittensor(capsys):
    assert main(["chain", "show", "--chain", "bittensor", "--network", "test"]) == 2
    assert "pass --netuid" in capsys.readouterr().err


def test_cli_on_bittensor_shows_the_subnet_and_names_btcli_for_registration(
    subnet, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    sdk_client = bt.Subtensor
    monkeypatch.setattr(bt, "Subtensor", lambda net: sdk_client(net, substrate=subnet.substrate))
    on_subnet = ["--chain", "bittensor", "--netuid", str(NETUID), "--wallet-path", subnet.wallets]
    epoch_results(subnet)
    subnet.substrate.storage[("ValidatorTrust", (NETUID,))] = [65535, 32768]
    assert main(["chain", "show", "--json", *on_subnet]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["block"] == subnet.substrate.head
    hotkeys = [row["wallet"].hotkey.ss58_address for row in subnet.rows]
    assert [n["hotkey"] for n in shown["neurons"]] == hotkeys
    # the chain ran Yuma itself: chorus shows what the metagraph says of the last epoch
    assert shown["epoch_block"] == subnet.substrate.head - 10
    assert shown["neurons"][3]["incentive"] == 49151 / 65535
    assert shown["neurons"][1]["validator_trust"] == 32768 / 65535
    assert main(["chain", "show", *on_subnet]) == 0
    assert f"last epoch at block {subnet.substrate.head - 10}" in capsys.readouterr().out
    register = (
        f"btcli subnets register --netuid {NETUID} --network finney --wallet stranger"
        f" --wallet-hotkey default --wallet-path {subnet.wallets}"
    )
    assert main(["miner", "--wallet", "stranger", *on_subnet]) == 2
    assert f"is not registered; run `{register}`" in capsys.readouterr().err
    assert main(["chain", "register", "--wallet", "stranger", *on_subnet]) == 2
    assert "btcli subnets register" in capsys.readouterr().err


# -- the clock ------------------------------------------------------------------------


def new_block_after(subnet: Subnet, polls: int, stamp: float):
    """A ``sleep`` for clock_offset: the ``polls``-th call makes the next block, whose
    timestamp (``Timestamp.Now``) is ``stamp``."""
    count = [0]

    def sleep(_: float) -> None:
        count[0] += 1
        if count[0] == polls:
            subnet.substrate.head += 1
            subnet.set_time(stamp)

    return sleep


@pytest.mark.parametrize(
    ("skew", "warning"),
    [(3.0, "2.8 s ahead of"), (-3.0, "3.2 s behind"), (0.0, None), (0.9, None)],
)
def test_check_clock_warns_when_the_local_clock_is_off(subnet, caplog, skew, warning):
    """The next block is seen 0.3 s after its timestamp by a clock ``skew`` s ahead."""
    stamp = 1_800_000_000.0
    chain = subnet.chain(signer=None)
    sleep = new_block_after(subnet, 3, stamp)
    with caplog.at_level(logging.INFO, logger="chorus.chain.bittensor"):
        offset = chain.check_clock(sleep=sleep, wall=lambda: stamp + 0.3 + skew)
    assert offset == pytest.approx(skew + 0.3 - CHAIN_DELAY_S)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warning is None:
        assert warned == []
    else:
        [message] = warned
        assert warning in message and "NTP" in message and "401" in message


def test_check_clock_without_a_new_block_logs_and_goes_on(subnet, caplog):
    chain = subnet.chain(signer=None)
    with caplog.at_level(logging.WARNING, logger="chorus.chain.bittensor"):
        assert chain.check_clock(timeout_s=0, sleep=lambda _: None) is None
    assert "could not compare this machine's clock" in caplog.text


def test_validator_and_miner_check_the_clock_at_start_on_bittensor(
    subnet, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    checks = []

    def check_clock(chain, **kw):
        checks.append(kw)
        raise ChainError("the clock was checked")  # stop before serving

    monkeypatch.setattr(BittensorChain, "check_clock", check_clock)
    sdk_client = bt.Subtensor
    monkeypatch.setattr(bt, "Subtensor", lambda net: sdk_client(net, substrate=subnet.substrate))
    on_subnet = ["--chain", "bittensor", "--netuid", str(NETUID), "--wallet-path", subnet.wallets]
    for command, wallet in [("validator", "validator"), ("miner", "miner-0")]:
        assert main([command, "--wallet", wallet, *on_subnet]) == 2
        assert "the clock was checked" in capsys.readouterr().err
    assert checks == [{"background": True}] * 2


def test_subnet_owner_may_run_a_validator_without_a_permit(subnet, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))

    def check_clock(chain, **_):
        raise ChainError("past the permit check")

    monkeypatch.setattr(BittensorChain, "check_clock", check_clock)
    sdk_client = bt.Subtensor
    monkeypatch.setattr(bt, "Subtensor", lambda net: sdk_client(net, substrate=subnet.substrate))
    outsider = ["validator", "--wallet", "outsider", "--chain", "bittensor"]
    outsider += ["--netuid", str(NETUID), "--wallet-path", subnet.wallets]
    assert main(outsider) == 2
    assert "needs a validator permit" in capsys.readouterr().err
    subnet.owner = 2  # the outsider's hotkey owns the subnet: past the permit check
    subnet.publish()
    assert main(outsider) == 2
    assert "past the permit check" in capsys.readouterr().err


# -- a live chain (opt-in) ------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("CHORUS_LIVE_CHAIN"), reason="set CHORUS_LIVE_CHAIN")
def test_live_metagraph_reads():
    netuid = int(os.environ.get("CHORUS_LIVE_NETUID", "1"))
    chain = open_chain("bittensor", network=os.environ["CHORUS_LIVE_CHAIN"], netuid=netuid)
    neurons = chain.neurons()
    assert chain.block() > 0 and neurons
    assert [n.uid for n in neurons] == list(range(len(neurons)))
    assert all(n.stake >= 0 and len(n.hotkey) == 48 for n in neurons)
    assert chain.neuron(neurons[0].hotkey) == neurons[0]
    assert isinstance(chain.weights(), dict)

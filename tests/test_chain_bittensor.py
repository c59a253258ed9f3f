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
import math
import os

import bittensor as bt
import httpx
import pytest
from bittensor.result import ExtrinsicResult

from chorus import __version__
from chorus.auth import AccessPolicy, create_wallet, sign
from chorus.chain import ChainError, Epoch, Neuron, Standing, open_chain
from chorus.chain.bittensor import VERSION_KEY, BittensorChain, quantize, to_neuron, version_key
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


def metagraph_record(rows: list[dict], block: int, last_step: int | None = None) -> dict:
    """The runtime's ``get_metagraph`` answer for rows of (wallet, stake, permit, axon,
    last_update, and the epoch's results): the columnar shape the chain sends, stakes
    and emission in rao, scores as u16. ``last_step`` (the last epoch's block) defaults to
    ten blocks back. A ``validator_trust`` column is sent only when a row has one (most
    runtimes leave it out of the metagraph; it is in storage)."""
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
        "owner_hotkey": rows[0]["wallet"].hotkey.ss58_address,
        "owner_coldkey": rows[0]["wallet"].coldkeypub.ss58_address,
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
    (3 serving an IPv4 axon, 4 an IPv6 one); ``stranger`` is not registered."""

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
        self.publish()
        self.set_storage(rate_limit=100, version=0)

    def publish(self) -> None:
        self.substrate.graph = metagraph_record(self.rows, self.substrate.head, self.last_step)
        for uid, row in enumerate(self.rows):
            hotkey = row["wallet"].hotkey.ss58_address
            self.substrate.storage[("Uids", (NETUID, hotkey))] = uid
        last = [row.get("last_update", 0) for row in self.rows]
        self.substrate.storage[("LastUpdate", (NETUID,))] = last

    def set_storage(self, rate_limit: int, version: int) -> None:
        self.substrate.storage[("WeightsSetRateLimit", (NETUID,))] = rate_limit
        self.substrate.storage[("WeightsVersionKey", (NETUID,))] = version

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
    subnet, monkeypatch, capsys
):
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

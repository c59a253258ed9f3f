"""The gateway's faults with real miners on 127.0.0.1: a request the caller got wrong ends at
the first miner that says so (its status and reason, no failover), while a miner that
refuses the gateway, does not serve the route, crashes, is down or never answers is
skipped for the next; and a chain that raises anything at all is a 503, not a crash."""

from __future__ import annotations

import json
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chorus.auth import AccessPolicy, create_wallet
from chorus.chain import Epoch, Neuron
from chorus.chain.local import LocalChain
from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys
from chorus.miner import Miner, MinerSettings, create_app
from chorus.store import Answer, ValidatorStore
from tests.servers import ThreadServer, free_port, make_net

KEY = "carol:sk-carol-0123456789"
AUTH = {"Authorization": "Bearer sk-carol-0123456789"}


class CrashingTTS:
    """A backend with a bug: every request is a 500 from the miner."""

    model = "crash"
    voices = ["crash"]

    def synthesize(self, text: str, voice: str | None = None):
        raise RuntimeError("backend bug")


@dataclass
class FaultNet:
    chain: LocalChain
    root: Path
    gateway: object  # wallet
    uids: dict[str, int]  # role -> uid


ROLES = ("honest", "refuses-gateway", "wrong-hotkey", "no-tts", "crashes", "down", "black-hole")


@pytest.fixture(scope="module")
def network(tmp_path_factory, piper):
    """One honest Piper miner, and one of each kind of miner the gateway must skip."""
    tmp = tmp_path_factory.mktemp("gwfaults")
    net = make_net(tmp, miners=len(ROLES) + 1)
    hotkeys = dict(zip(ROLES, (w.hotkey.ss58_address for w in net.miners), strict=False))
    spare = net.miners[-1].hotkey.ss58_address  # runs behind another miner's axon
    gateway = create_wallet("gateway", path=str(tmp / "wallets"))
    net.chain.register(gateway.hotkey.ss58_address, gateway.coldkeypub.ss58_address, 50.0, True)
    refuse = MinerSettings(policy=AccessPolicy(blacklist=frozenset({gateway.hotkey.ss58_address})))
    miners = {
        "honest": Miner(hotkeys["honest"], net.chain, {"tts": piper}),
        "refuses-gateway": Miner(hotkeys["refuses-gateway"], net.chain, {"tts": piper}, refuse),
        "wrong-hotkey": Miner(spare, net.chain, {"tts": piper}),  # signed for someone else
        "no-tts": Miner(hotkeys["no-tts"], net.chain, {}),
        "crashes": Miner(hotkeys["crashes"], net.chain, {"tts": CrashingTTS()}),
    }
    with ExitStack() as stack, socket.socket() as black_hole:
        for role, miner in miners.items():
            server = stack.enter_context(ThreadServer(create_app(miner)))
            net.chain.serve_axon(hotkeys[role], "127.0.0.1", server.port)
        net.chain.serve_axon(hotkeys["down"], "127.0.0.1", free_port())  # nothing listens
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)  # accepts connections, never answers
        net.chain.serve_axon(hotkeys["black-hole"], "127.0.0.1", black_hole.getsockname()[1])
        uids = {role: net.chain.neuron(h).uid for role, h in hotkeys.items()}
        yield FaultNet(net.chain, tmp, gateway, uids)


def start_gateway(net: FaultNet, tmp_path, ranked: list[str], chain=None, **settings):
    """A gateway whose validator ranked the miners ``ranked`` best first."""
    store = ValidatorStore(tmp_path / "state.sqlite")
    by_uid = {n.uid: n.hotkey for n in net.chain.neurons()}
    answers = [
        Answer(net.uids[role], by_uid[net.uids[role]], "tts", "A prompt.", 0.9 - 0.1 * i)
        for i, role in enumerate(ranked)
    ]
    store.record_round(1, answers, alpha=0.0)
    log_path = tmp_path / "requests.jsonl"
    options = dict(timeout_s=20, max_attempts=len(ranked)) | settings
    gateway = Gateway(
        net.gateway,
        chain or net.chain,
        store,
        load_keys(keys=[KEY]),
        GatewaySettings(**options),
        RequestLog(log_path.open("a")),
    )
    return ThreadServer(create_gateway_app(gateway)), log_path


def speak(url: str, **extra) -> httpx.Response:
    body = {"model": "chorus-tts", "input": "Hello from the gateway.", "voice": "alloy", **extra}
    return httpx.post(url + "/v1/audio/speech", json=body, headers=AUTH, timeout=60)


def last_log(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def test_a_caller_fault_ends_at_the_first_miner_with_its_status_and_reason(network, tmp_path):
    server, log_path = start_gateway(network, tmp_path, ["honest", "refuses-gateway", "crashes"])
    with server:
        r = speak(server.url, voice="no-such-voice")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    # The miner's own reason, as it gave it; not "every miner tried failed".
    assert error["message"].startswith("unknown voice 'no-such-voice'")
    assert error["type"] == "invalid_request_error"
    line = last_log(log_path)
    assert line["status"] == 422 and line["attempts"] == 1
    assert line["miner_uid"] == network.uids["honest"]


@pytest.mark.parametrize(
    ("role", "why"),
    [
        ("refuses-gateway", "HTTP 403"),
        ("wrong-hotkey", "HTTP 401"),
        ("no-tts", "HTTP 404"),
        ("crashes", "HTTP 500"),
        ("down", "http: "),
        ("black-hole", "timeout"),
    ],
)
def test_a_miner_at_fault_is_skipped_for_the_next(network, tmp_path, role, why):
    server, log_path = start_gateway(network, tmp_path, [role, "honest"], timeout_s=3)
    with server:
        r = speak(server.url)
        alone, _ = start_gateway(network, tmp_path / "alone", [role], timeout_s=3)
        with alone:
            failed = speak(alone.url)
    assert r.status_code == 200, r.text
    assert int(r.headers["x-chorus-miner-uid"]) == network.uids["honest"]
    assert last_log(log_path)["attempts"] == 2
    # Alone, the same miner leaves nothing to fail over to: 503 naming what it did.
    assert failed.status_code == 503, failed.text
    message = failed.json()["error"]["message"]
    assert message.startswith("every miner tried failed") and why in message


class BrokenChain:
    """The local chain, except that ``neurons`` raises whatever ``error`` holds."""

    def __init__(self, chain: LocalChain):
        self.chain = chain
        self.error: BaseException | None = None

    def neurons(self) -> list[Neuron]:
        if self.error is not None:
            raise self.error
        return self.chain.neurons()

    def neuron(self, hotkey: str) -> Neuron | None:
        return self.chain.neuron(hotkey)

    def block(self) -> int:
        return self.chain.block()

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        self.chain.serve_axon(hotkey, host, port)

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None:
        self.chain.set_weights(hotkey, weights)

    def weights(self) -> dict[int, dict[int, float]]:
        return self.chain.weights()

    def last_epoch(self) -> Epoch | None:
        return self.chain.last_epoch()


def test_a_chain_that_raises_anything_is_503_then_the_last_ranking(network, tmp_path):
    chain = BrokenChain(network.chain)
    chain.error = TypeError("'NoneType' object is not iterable")  # deep in an SDK
    server, log_path = start_gateway(network, tmp_path, ["honest"], chain=chain, refresh_s=0)
    with server:
        before = speak(server.url)
        models = httpx.get(server.url + "/v1/models", headers=AUTH)
        chain.error = None
        served = speak(server.url)
        chain.error = RuntimeError("websocket closed")
        still = speak(server.url)  # the chain fails again: the last ranking serves
    assert before.status_code == 503, before.text
    assert "cannot rank miners now: TypeError" in before.json()["error"]["message"]
    assert models.status_code == 503
    assert served.status_code == 200 and still.status_code == 200
    statuses = [json.loads(line)["status"] for line in log_path.read_text().splitlines()]
    assert statuses == [503, 200, 200]

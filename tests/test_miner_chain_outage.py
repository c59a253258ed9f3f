"""A slow, failing or hung chain must not stall or break the miner (real HTTP on 127.0.0.1).

``OutageChain`` is a real Chain: a LocalChain behind a cache of its own, the way
BittensorChain caches its metagraph (``metagraph(force=...)``), that can be switched to
fail (ChainError), crash (an error that is not a ChainError) or hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import pytest

from chorus.auth import AccessPolicy, create_wallet, sign
from chorus.chain import ChainError, Neuron
from chorus.chain.local import LocalChain
from chorus.chain.view import MetagraphView
from chorus.miner import Miner, MinerSettings, create_app
from tests.servers import ThreadServer, make_net

HANG_S = 30.0


class OutageChain:
    """``local`` behind a metagraph cache, with a switch: "ok", "fail", "crash", "hang"."""

    def __init__(self, local: LocalChain, mode: str = "ok", ttl_s: float = 3600.0):
        self.local = local
        self.mode = mode
        self.ttl_s = ttl_s
        self.reads = 0  # reads that reached the chain (successful or not)
        self.hanging = threading.Event()  # set while a read hangs
        self.release = threading.Event()  # ends every hang
        self._graph: list[Neuron] | None = None
        self._graph_at = -1e9

    def metagraph(self, force: bool = False) -> list[Neuron]:
        if force or self._graph is None or time.monotonic() - self._graph_at > self.ttl_s:
            self.reads += 1
            if self.mode == "fail":
                raise ChainError("rpc.example.net refused: rate limited (429)")
            if self.mode == "crash":
                raise RuntimeError("websocket closed unexpectedly")
            if self.mode == "hang":
                self.hanging.set()
                self.release.wait(HANG_S)
                self.hanging.clear()
                raise ChainError("rpc.example.net did not answer")
            self._graph, self._graph_at = self.local.neurons(), time.monotonic()
        return self._graph

    def neurons(self) -> list[Neuron]:
        return list(self.metagraph())

    def neuron(self, hotkey: str) -> Neuron | None:
        return next((n for n in self.neurons() if n.hotkey == hotkey), None)

    def block(self) -> int:
        return self.local.block()

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        self.local.serve_axon(hotkey, host, port)

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None:
        self.local.set_weights(hotkey, weights)

    def weights(self) -> dict[int, dict[int, float]]:
        return self.local.weights()

    def last_epoch(self):
        return self.local.last_epoch()


@pytest.fixture
def net(tmp_path):
    return make_net(tmp_path)


def policy(**kw) -> AccessPolicy:
    return AccessPolicy(**{"metagraph_ttl_s": 0.2, **kw})


def post(url, hotkey, wallet, path="/v1/tts", payload=None, timeout=10.0) -> httpx.Response:
    raw = json.dumps(payload or {"text": "Hello there."}).encode()
    headers = sign(wallet, "POST", path, raw, hotkey)
    return httpx.post(url + path, content=raw, headers=headers, timeout=timeout)


def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_known_validator_is_served_from_the_last_copy_while_the_chain_fails_or_hangs(
    net, piper, caplog
):
    chain = OutageChain(net.chain, ttl_s=0.0)  # no cache of its own: every read is real
    hotkey = net.miners[0].hotkey.ss58_address
    miner = Miner(hotkey, chain, {"tts": piper}, MinerSettings(policy=policy()))
    view = miner.gatekeeper.view
    try:
        with ThreadServer(create_app(miner)) as server:
            wait_for(lambda: view.ready, what="the first metagraph read")
            assert post(server.url, hotkey, net.validator).status_code == 200

            # The RPC starts refusing: the copy stays in use, its age grows and is logged.
            late = create_wallet("late", path=str(net.root / "wallets"))
            with caplog.at_level(logging.WARNING, logger="chorus.chain.view"):
                chain.mode = "fail"
                failed = chain.reads
                wait_for(lambda: chain.reads >= failed + 2, what="failed re-reads")
                net.chain.register(
                    late.hotkey.ss58_address, late.coldkeypub.ss58_address, 50.0, True
                )
                r = post(server.url, hotkey, net.validator)
                assert r.status_code == 200, r.text
                health = httpx.get(server.url + "/health").json()
                assert "rate limited" in health["chain_error"]
                assert health["metagraph_age_s"] > 0
            assert "serving the copy read" in caplog.text and "rate limited" in caplog.text

            # An error that is not a ChainError (a broken websocket) is no different.
            chain.mode = "crash"
            crashed = chain.reads
            wait_for(lambda: chain.reads >= crashed + 2, what="crashed re-reads")
            assert post(server.url, hotkey, net.validator).status_code == 200
            assert "RuntimeError" in httpx.get(server.url + "/health").json()["chain_error"]

            # The RPC hangs: the handler never waits for it.
            chain.mode = "hang"
            assert chain.hanging.wait(10), "the background read never started"
            start = time.monotonic()
            not_served = post(server.url, hotkey, net.validator, path="/v1/music")
            assert not_served.status_code == 404  # admitted, verified, then: no music here
            assert time.monotonic() - start < 2.0
            start = time.monotonic()
            assert post(server.url, hotkey, net.validator).status_code == 200
            assert time.monotonic() - start < HANG_S / 3
            assert chain.hanging.is_set()  # still hung all along

            # The chain comes back: the view refreshes by itself (no caller forcing it).
            chain.mode = "ok"
            chain.release.set()
            wait_for(lambda: view.error is None and view.age_s < 1.0, what="recovery")
            wait_for(lambda: view.get(late.hotkey.ss58_address) is not None, what="refresh")
            assert post(server.url, hotkey, late).status_code == 200
    finally:
        chain.release.set()
        miner.gatekeeper.close()


@pytest.mark.parametrize("mode", ["fail", "crash", "hang"])
def test_no_copy_ever_read_answers_503_with_a_reason(net, mode):
    chain = OutageChain(net.chain, mode=mode)
    hotkey = net.miners[0].hotkey.ss58_address
    settings = MinerSettings(policy=policy(refresh_wait_s=0.5, force_refresh_s=0.1))
    miner = Miner(hotkey, chain, {}, settings)
    try:
        with ThreadServer(create_app(miner)) as server:
            start = time.monotonic()
            r = post(server.url, hotkey, net.validator)
            assert time.monotonic() - start < 5.0
            assert r.status_code == 503, r.text
            assert "has not read the metagraph" in r.json()["error"]
            assert r.headers["Retry-After"]
            if mode != "hang":
                reason = "rate limited" if mode == "fail" else "websocket closed"
                assert reason in r.json()["error"]
            # the chain answers again: callers are checked again
            chain.mode = "ok"
            chain.release.set()
            wait_for(lambda: miner.gatekeeper.view.ready, what="the first good read")
            r = post(server.url, hotkey, net.validator)
            assert r.status_code == 404, r.text  # admitted; this miner serves nothing
            assert post(server.url, hotkey, net.stranger).status_code == 403
    finally:
        chain.release.set()
        miner.gatekeeper.close()


def test_forced_refresh_rereads_the_chain_and_is_rate_limited(net):
    chain = OutageChain(net.chain)  # its own cache never expires: only a forced read helps
    hotkey = net.miners[0].hotkey.ss58_address
    interval = 3.0
    settings = MinerSettings(policy=policy(metagraph_ttl_s=3600.0, force_refresh_s=interval))
    miner = Miner(hotkey, chain, {}, settings)
    wallets = str(net.root / "wallets")
    try:
        with ThreadServer(create_app(miner)) as server:
            wait_for(lambda: miner.gatekeeper.view.ready, what="the first metagraph read")
            assert post(server.url, hotkey, net.validator, "/v1/music").status_code == 404
            assert chain.reads == 1
            # A validator registers after the miner read the metagraph ...
            late = create_wallet("late", path=wallets)
            net.chain.register(late.hotkey.ss58_address, late.coldkeypub.ss58_address, 50.0, True)
            # ... and is accepted on its first request: the miner read the chain again.
            assert post(server.url, hotkey, late, "/v1/music").status_code == 404
            assert chain.reads == 2
            # Unknown callers cannot make it read again within the interval.
            start = time.monotonic()
            for _ in range(30):
                r = post(server.url, hotkey, net.stranger, "/v1/music")
                assert r.status_code == 403 and "not registered" in r.json()["error"]
            elapsed = time.monotonic() - start
            assert chain.reads - 2 <= 1 + int(elapsed / interval), (chain.reads, elapsed)
            # Once the interval has passed, the next newcomer gets its re-read.
            later = create_wallet("later", path=wallets)
            net.chain.register(later.hotkey.ss58_address, later.coldkeypub.ss58_address, 50.0, True)
            time.sleep(interval + 0.2)
            reads = chain.reads
            assert post(server.url, hotkey, later, "/v1/music").status_code == 404
            assert chain.reads == reads + 1
    finally:
        miner.gatekeeper.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_view_rate_limits_forced_reads_by_its_clock(net):
    chain, clock = OutageChain(net.chain), Clock()
    view = MetagraphView(chain, ttl_s=3600, force_interval_s=5.0, clock=clock).start()
    try:
        wait_for(lambda: view.ready, what="the first read")
        assert chain.reads == 1 and view.age_s == 0
        unknown = net.stranger.hotkey.ss58_address
        assert asyncio.run(view.lookup(unknown)) is None  # forced: read again
        assert chain.reads == 2
        for _ in range(20):  # within the interval: from the copy
            assert asyncio.run(view.lookup(unknown)) is None
        assert chain.reads == 2
        clock.now += 5.0
        chain.local.register(unknown, net.stranger.coldkeypub.ss58_address)
        assert asyncio.run(view.lookup(unknown)).hotkey == unknown
        assert chain.reads == 3
        clock.now += 60
        assert view.age_s == 60  # the age of the copy, on the view's clock
    finally:
        view.close()

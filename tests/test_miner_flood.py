"""Keys that could never pass cost the miner no signature check and no memory; replay
protection holds in bounded memory (real HTTP on 127.0.0.1, a real LocalChain)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from bittensor import http_auth

from chorus.auth import AccessPolicy, BoundedNonceStore, Gatekeeper, create_wallet, sign
from chorus.miner import Miner, MinerSettings, create_app
from tests.servers import ThreadServer, make_net

BODY = json.dumps({"prompt": "calm piano", "duration": 5}).encode()
PATH = "/v1/music"  # not served: a request that passes every check gets 404, cheaply


class CountingGatekeeper(Gatekeeper):
    """The real gatekeeper, counting the signatures it checks."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.verified: list[str] = []

    def verify(self, headers, body, method, path) -> None:
        self.verified.append(headers.get(http_auth.HEADER_HOTKEY))
        super().verify(headers, body, method, path)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flood")
    net = make_net(tmp)
    wallets = str(tmp / "wallets")
    net.poor = create_wallet("poor", path=wallets)  # a permit, too little stake
    net.banned = create_wallet("banned", path=wallets)
    net.other = create_wallet("other", path=wallets)  # a second honest validator
    for w, stake in ((net.poor, 1.0), (net.banned, 500.0), (net.other, 80.0)):
        net.chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address, stake, True)
    return net


def serve(net, **policy):
    hotkey = net.miners[0].hotkey.ss58_address
    access = AccessPolicy(
        min_stake=10.0, blacklist=frozenset({net.banned.hotkey.ss58_address}), **policy
    )
    gatekeeper = CountingGatekeeper(net.chain, hotkey, access)
    miner = Miner(hotkey, net.chain, {}, MinerSettings(policy=access), gatekeeper=gatekeeper)
    return miner, ThreadServer(create_app(miner))


def post(server, miner, wallet, headers=None, body=BODY) -> httpx.Response:
    h = sign(wallet, "POST", PATH, body, miner.hotkey)
    h.update(headers or {})
    return httpx.post(server.url + PATH, content=body, headers=h, timeout=30)


def test_callers_without_standing_are_refused_before_any_signature_check(net):
    miner, server = serve(net)
    garbage = {"X-Bittensor-Signature": "0x" + "ab" * 64}
    with server:
        refusals = {
            "stranger": "not registered",
            "outsider": "no validator permit",
            "poor": "below the minimum",
            "banned": "blacklisted",
        }
        for who, reason in refusals.items():
            for headers in (None, garbage):  # a valid signature, or garbage: same answer
                r = post(server, miner, getattr(net, who), headers)
                assert r.status_code == 403 and reason in r.json()["error"], (who, r.text)
        assert miner.gatekeeper.verified == []
        assert len(miner.gatekeeper.nonces) == 0  # refused callers leave nothing behind
        # a validator's garbage is checked, and refused as such
        r = post(server, miner, net.validator, garbage)
        assert r.status_code == 401 and "BadSignature" in r.json()["error"]
        assert post(server, miner, net.validator).status_code == 404  # passed every check
        assert len(miner.gatekeeper.verified) == 2 and len(miner.gatekeeper.nonces) == 1
    miner.gatekeeper.close()


def test_a_flood_from_an_unregistered_key_costs_no_memory_or_chain_reads(net):
    miner, server = serve(net, metagraph_ttl_s=3600.0, force_refresh_s=3600.0)
    view = miner.gatekeeper.view

    async def flood(n: int) -> list[int]:
        gate = asyncio.Semaphore(32)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> int:
                body = json.dumps({"prompt": f"calm piano {i}", "duration": 5}).encode()
                async with gate:
                    h = sign(net.stranger, "POST", PATH, body, miner.hotkey)
                    r = await client.post(server.url + PATH, content=body, headers=h)
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    with server:
        assert post(server, miner, net.validator).status_code == 404
        reads = view.reads
        codes = asyncio.run(flood(200))
        assert codes == [403] * 200
        assert miner.gatekeeper.verified == [net.validator.hotkey.ss58_address]
        assert len(miner.gatekeeper.nonces) == 1
        assert view.reads - reads <= 1  # one forced re-read at most in the interval
        assert post(server, miner, net.validator).status_code == 404
    miner.gatekeeper.close()


def test_nonce_store_is_capped_over_http_and_replays_are_still_refused(net):
    miner, server = serve(net, max_nonces=8, max_nonces_per_caller=5)
    store = miner.gatekeeper.nonces
    with server:
        sent = []
        for wallet, n in ((net.validator, 12), (net.other, 6)):
            for _ in range(n):
                h = sign(wallet, "POST", PATH, BODY, miner.hotkey)
                r = httpx.post(server.url + PATH, content=BODY, headers=h, timeout=30)
                assert r.status_code == 404, r.text
                sent.append(h)
                assert len(store) <= 8
        assert store.evicted > 0
        # Every request above, evicted from the store or not, is still refused as a replay.
        for h in sent:
            r = httpx.post(server.url + PATH, content=BODY, headers=h, timeout=30)
            assert r.status_code == 401 and "ReplayedRequest" in r.json()["error"]
        assert post(server, miner, net.validator).status_code == 404  # fresh ones pass
    miner.gatekeeper.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bounded_nonce_store_expires_first_caps_and_never_accepts_twice():
    clock = Clock()
    store = BoundedNonceStore(retention=40, max_entries=100, max_per_caller=30, clock=clock)
    # one caller: at most 30 kept, all 500 nonces refused when replayed
    for nonce in range(1, 501):
        assert store.check_and_store("alice", nonce)
        assert len(store) <= 30
    assert all(not store.check_and_store("alice", nonce) for nonce in range(1, 501))
    assert len(store) == 30
    # many callers: at most 100 kept in all
    for i in range(1000):
        assert store.check_and_store(f"caller-{i}", 7)
        assert len(store) <= 100
    assert not store.check_and_store("caller-0", 7)  # evicted long ago, still refused
    assert not store.check_and_store("caller-999", 7)
    # After the retention everything expires (the freshness window refuses old nonces
    # before the store is asked), and so do the records of every caller.
    clock.now += 41
    assert store.check_and_store("bob", 1)
    assert len(store) == 1
    clock.now += 41
    assert store.check_and_store("bob", 2)
    assert (len(store), store.callers) == (1, 1)
    # expiry makes room before anything is evicted
    store = BoundedNonceStore(retention=40, max_entries=10, max_per_caller=10, clock=clock)
    for nonce in range(10):
        store.check_and_store("carol", nonce)
    clock.now += 41
    for nonce in range(10, 20):
        assert store.check_and_store("carol", nonce)
    assert store.evicted == 0 and len(store) == 10


def test_a_stranger_is_refused_before_its_body_is_read(net):
    """A caller naming a hotkey that is not on the subnet gets its 403 from the headers
    alone: it cannot hold the miner for the body deadline by never sending the body."""
    import socket
    import time

    miner, server = serve(net)
    with server:
        headers = sign(net.stranger, "POST", PATH, BODY, miner.hotkey)
        head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(head.encode())  # and no body at all
            reply = sock.recv(4096).decode()
            waited = time.monotonic() - start
            while not reply.rstrip().endswith("}"):  # the JSON body may come in a second read
                reply += sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 403"), reply[:200]
    assert "not registered" in reply
    assert waited < miner.settings.body_timeout_s / 2  # not held until the body deadline
    assert miner.gatekeeper.verified == []

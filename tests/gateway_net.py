"""A real local network behind a gateway, for the gateway's public-API tests: miners on
127.0.0.1 (each with the backends a test gives it), a gateway wallet registered with a
validator permit, a validator store in which each miner scored what the test says, and
the gateway itself over its own SQLite database. One per test module."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus.auth import create_wallet
from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys
from chorus.gateway_store import GatewayStore
from chorus.miner import Miner, create_app
from chorus.store import Answer, ValidatorStore
from tests.servers import ThreadServer, make_net

KEYS = {
    "alice": "sk-alice-0123456789",
    "bob": "sk-bob-0123456789",
    "carol": "sk-carol-0123456789",
}


def auth(who: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


class RecordingTTS:
    """A TTS backend wrapped to note when each text reached it (``time.perf_counter``, in
    this process: the miners run in threads here), to take ``delay`` seconds per request
    (a slower model, so streaming has something to overtake), and to fail on a text
    containing ``fail_on`` (a miner breaking mid-answer)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.model = backend.model
        self.voices = backend.voices
        self.delay = 0.0
        self.fail_on: str | None = None
        self.calls: list[tuple[float, str, str | None]] = []  # (when, text, voice)
        self.lock = threading.Lock()

    def synthesize(self, text: str, voice: str | None = None) -> tuple[np.ndarray, int]:
        with self.lock:
            self.calls.append((time.perf_counter(), text, voice))
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("backend broke")
        if self.delay:
            time.sleep(self.delay)
        return self.backend.synthesize(text, voice)


@dataclass
class GatewayNet:
    """The gateway's URL and objects, and each miner's uid and hotkey by name."""

    url: str
    gateway: Gateway
    db_path: Path
    log_path: Path
    store: ValidatorStore
    uids: dict[str, int] = field(default_factory=dict)
    hotkeys: dict[str, str] = field(default_factory=dict)


@contextmanager
def gateway_net(
    tmp: Path, miners: dict[str, tuple[dict[str, Any], dict[str, float]]], **settings: Any
) -> Iterator[GatewayNet]:
    """``miners``: name -> (backends by service, the validator's score by service)."""
    net = make_net(tmp, miners=len(miners))
    hotkeys = {name: w.hotkey.ss58_address for name, w in zip(miners, net.miners, strict=True)}
    with ExitStack() as stack:
        for name, (backends, _) in miners.items():
            server = stack.enter_context(
                ThreadServer(create_app(Miner(hotkeys[name], net.chain, backends)))
            )
            net.chain.serve_axon(hotkeys[name], "127.0.0.1", server.port)
        wallet = create_wallet("gateway", path=str(tmp / "wallets"))
        net.chain.register(wallet.hotkey.ss58_address, wallet.coldkeypub.ss58_address, 50.0, True)
        uids = {name: net.chain.neuron(h).uid for name, h in hotkeys.items()}
        store = ValidatorStore(tmp / "state" / "state.sqlite")
        answers = [
            Answer(uids[name], hotkeys[name], service, "A prompt.", score)
            for name, (_, scores) in miners.items()
            for service, score in scores.items()
        ]
        store.record_round(1, answers, alpha=0.0)
        db_path, log_path = tmp / "gateway.sqlite", tmp / "requests.jsonl"
        options = {"timeout_s": 60, "rate": 100.0, "burst": 100.0} | settings
        gateway = Gateway(
            wallet,
            net.chain,
            store,
            load_keys(keys=[f"{who}:{key}" for who, key in KEYS.items()]),
            GatewaySettings(**options),
            RequestLog(stack.enter_context(log_path.open("a"))),
            GatewayStore(db_path),
        )
        server = stack.enter_context(ThreadServer(create_gateway_app(gateway)))
        yield GatewayNet(server.url, gateway, db_path, log_path, store, uids, hotkeys)

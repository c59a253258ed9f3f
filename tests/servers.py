"""Real servers on 127.0.0.1 for tests: uvicorn in a thread, a local chain, wallets."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from chorus.auth import create_wallet
from chorus.chain.local import LocalChain


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, timeout: float = 60.0) -> None:
    """Return once ``url``'s ``/health`` answers 200; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not start serving within {timeout:g} s")
        time.sleep(0.1)


class ThreadServer:
    """Serve an ASGI app with uvicorn on a free port in a background thread."""

    def __init__(self, app):
        # Bind now and hand the socket to uvicorn: a port only chosen here could be taken
        # by the next server created before this one starts.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/health", timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("test server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class Hole:
    """A miner's port that accepts connections and never answers. The first ``drop``
    connections are closed at once (the caller gets an error, not a wait); later ones are
    held open, so the round that made them cannot end before its timeout, until
    ``release()``, which closes them and every connection after. ``accepted`` counts
    connections; ``wait_accepted`` polls it."""

    def __init__(self, drop: int = 0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.drop = drop
        self.accepted = 0
        self.released = False
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.accepted += 1
                if self.released or self.accepted <= self.drop:
                    conn.close()
                else:
                    self.held.append(conn)

    def wait_accepted(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.accepted} connections to the hole, not {count}")
            time.sleep(0.02)

    def release(self) -> None:
        with self.lock:
            self.released = True
            held, self.held = self.held, []
        for conn in held:
            conn.close()

    def __enter__(self) -> Hole:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.closed.set()
        self.thread.join(5)
        self.sock.close()


@dataclass
class Net:
    """A local chain with wallets under ``root``: a validator with stake, a non-validator,
    miners."""

    root: Path
    chain: LocalChain
    validator: object
    outsider: object  # registered, no permit
    stranger: object  # not registered at all
    miners: list


def make_net(tmp: Path, miners: int = 1) -> Net:
    wallets = str(tmp / "wallets")
    chain = LocalChain(tmp / "chain.sqlite", block_seconds=1.0)

    def wallet(name: str):
        return create_wallet(name, path=wallets)

    def register(w, stake: float = 0.0, permit: bool = False) -> None:
        chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address, stake, permit)

    validator, outsider, stranger = wallet("validator"), wallet("outsider"), wallet("stranger")
    register(validator, 100.0, True)
    register(outsider, 5.0, False)
    miner_wallets = [wallet(f"miner-{i}") for i in range(miners)]
    for w in miner_wallets:
        register(w)
    return Net(tmp, chain, validator, outsider, stranger, miner_wallets)

"""Faults with real processes: slow clients, kill -9, a locked or missing chain file."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from chorus.chain.local import LocalChain
from chorus.generation.tts import PiperTTS
from chorus.miner import Miner, MinerSettings, create_app
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, free_port, make_net

LONG_TEXT = " ".join(["The harbor lights flickered as seven boats returned home."] * 8)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chorus.cli", *args]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def net(tmp_path):
    n = make_net(tmp_path, miners=2)
    n.tmp = tmp_path
    return n


def make_validator(net, evaluator, chain=None, timeout_s: float = 30) -> Validator:
    store = ValidatorStore(net.tmp / "state" / "state.sqlite")
    settings = ValidatorSettings(timeout_s=timeout_s, alpha=0.5, weights_interval_blocks=1)
    return Validator(net.validator, chain or net.chain, store, {"tts": evaluator}, settings)


def test_slow_client_trickling_a_body_gets_408_and_others_are_served(net):
    hotkey = net.miners[0].hotkey.ss58_address
    miner = Miner(hotkey, net.chain, {"tts": PiperTTS()}, MinerSettings(body_timeout_s=1.0))
    with ThreadServer(create_app(miner)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /v1/tts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(4):  # 4 bytes over 2 s: well past the 1 s deadline
                s.sendall(b"{")
                time.sleep(0.5)
            reply = s.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 408") and "not received in time" in reply
        assert httpx.get(server.url + "/health").json()["ok"]


def test_miner_killed_mid_request_is_punished_and_the_loop_goes_on(net, tts_evaluator):
    wallets = str(net.tmp / "wallets")
    port = free_port()
    env = {**os.environ, "CHORUS_WALLET_PATH": wallets}
    miner = subprocess.Popen(
        cli(
            "miner", "--wallet", "miner-0", "--chain-path", str(net.chain.path), "--port", str(port)
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 120, "the miner to start")
        validator = make_validator(net, tts_evaluator)
        validator.speech.next = lambda sentences=1: type(  # a long prompt keeps it busy
            "P", (), {"text": LONG_TEXT, "written": LONG_TEXT}
        )()

        async def round_with_kill():
            task = asyncio.create_task(validator.run(rounds=1))
            async with httpx.AsyncClient() as client:
                while (await client.get(url + "/health")).json()["pending"] == 0:
                    await asyncio.sleep(0.02)
            os.kill(miner.pid, signal.SIGKILL)
            await task

        asyncio.run(round_with_kill())
        uid = net.chain.neuron(net.miners[0].hotkey.ss58_address).uid
        answer = validator.store.answers(uid=uid)[0]
        assert answer["score"] == 0.0 and answer["error"].startswith("http")
        asyncio.run(validator.run(rounds=1))  # the dead miner again: refused, not a crash
        assert validator.store.last_round() == 2
        assert validator.store.scores()[uid].failed == 2
    finally:
        miner.kill()
        miner.wait()


def test_validator_killed_mid_round_restarts_with_scores_intact(net):
    honest, dead = (w.hotkey.ss58_address for w in net.miners)
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)  # accepts connections, never answers: every round waits
    net.chain.serve_axon(dead, "127.0.0.1", black_hole.getsockname()[1])
    state = net.tmp / "state"
    args = cli(
        "validator",
        "--wallet",
        "validator",
        "--chain-path",
        str(net.chain.path),
        "--state",
        str(state),
        "--timeout",
        "4",
        "--services",
        "tts",
        "--alpha",
        "0.5",
    )
    env = {**os.environ, "CHORUS_WALLET_PATH": str(net.tmp / "wallets")}
    with ThreadServer(create_app(Miner(honest, net.chain, {"tts": PiperTTS()}))) as server:
        net.chain.serve_axon(honest, "127.0.0.1", server.port)
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("round 1 "):
                break
        time.sleep(1.0)  # round 2 is now waiting on the black hole
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        store = ValidatorStore(state / "state.sqlite")
        with sqlite3.connect(state / "state.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.last_round() == 1
        before = store.scores()
        uid = net.chain.neuron(honest).uid
        assert before[uid].score > 0 and before[uid].answered == 1

        again = subprocess.run(
            [*args, "--rounds", "1"], env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        assert "resuming after round 1" in again.stdout
        after = ValidatorStore(state / "state.sqlite").scores()
        assert after[uid].answered == 2 and store.last_round() == 2
    black_hole.close()


def test_locked_chain_delays_weights_but_not_rounds(net, tts_evaluator):
    honest = net.miners[0].hotkey.ss58_address
    chain = LocalChain(net.chain.path, busy_timeout_s=0.2)
    with ThreadServer(create_app(Miner(honest, net.chain, {"tts": PiperTTS()}))) as server:
        net.chain.serve_axon(honest, "127.0.0.1", server.port)
        validator = make_validator(net, tts_evaluator, chain=chain)
        lock = sqlite3.connect(net.chain.path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the chain
        asyncio.run(validator.run(rounds=1))
        assert validator.store.last_round() == 1 and net.chain.weights() == {}
        lock.execute("COMMIT")
        lock.close()
        asyncio.run(validator.run(rounds=1))
    weights = net.chain.weights()[net.chain.neuron(validator.hotkey).uid]
    assert weights == {net.chain.neuron(honest).uid: pytest.approx(1.0)}


def test_missing_chain_file_is_retried_until_it_returns(net, tts_evaluator):
    validator = make_validator(net, tts_evaluator, timeout_s=5)
    path = net.chain.path
    hidden = net.tmp / "hidden"
    hidden.mkdir()
    for f in path.parent.glob(path.name + "*"):
        shutil.move(f, hidden / f.name)
    path.mkdir()  # a folder where the database should be: every chain call fails

    async def outage_then_recovery():
        task = asyncio.create_task(validator.run(rounds=1))
        await asyncio.sleep(2.5)
        assert not task.done()  # still retrying, not crashed
        path.rmdir()
        for f in hidden.iterdir():
            shutil.move(f, path.parent / f.name)
        await asyncio.wait_for(task, 60)

    asyncio.run(outage_then_recovery())
    assert validator.store.last_round() == 1

"""Faults with real processes: slow clients, kill -9, a locked or missing chain file."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time

import httpx
import pytest

from chorus.chain.local import LocalChain
from chorus.miner import Miner, MinerSettings, create_app
from chorus.piper import PiperTTS
from chorus.services import Task
from chorus.services.tts import SpeechChallenge, TTSRequest
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.cli import chorus_process, run_chorus
from tests.servers import Hole, Net, ThreadServer, free_port, make_net, wait_until_serving

LONG_TEXT = " ".join(["The harbor lights flickered as seven boats returned home."] * 8)


@pytest.fixture
def net(tmp_path) -> Net:
    return make_net(tmp_path, miners=2)


def make_validator(net: Net, evaluator, chain=None, timeout_s: float = 30) -> Validator:
    store = ValidatorStore(net.root / "state" / "state.sqlite")
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
    port = free_port()
    args = ["miner", "--wallet", "miner-0", "--chain-path", str(net.chain.path)]
    with chorus_process(*args, "--port", str(port), root=net.root) as miner:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, 120)
        validator = make_validator(net, tts_evaluator)
        long_task = Task("tts", LONG_TEXT, TTSRequest(text=LONG_TEXT), SpeechChallenge(LONG_TEXT))
        validator.tasks["tts"] = itertools.repeat(long_task)  # a long prompt keeps it busy

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
        assert answer.prompt == LONG_TEXT
        assert answer.score == 0.0 and answer.error.startswith("http")
        asyncio.run(validator.run(rounds=1))  # the dead miner again: refused, not a crash
        assert validator.store.last_round() == 2
        assert validator.store.scores()[uid].failed == 2


def test_validator_killed_mid_round_restarts_with_scores_intact(net):
    honest, dead = (w.hotkey.ss58_address for w in net.miners)
    state = net.root / "state"
    args = [
        "validator",
        "--wallet",
        "validator",
        "--chain-path",
        str(net.chain.path),
        "--state",
        str(state),
        "--timeout",
        "60",  # round 2 waits on the hole until the kill; the honest miner needs ~1 s
        "--services",
        "tts",
        "--alpha",
        "0.5",
    ]
    miner = create_app(Miner(honest, net.chain, {"tts": PiperTTS()}))
    # round 1's call to the dead miner fails at once; round 2's is held open
    with Hole(drop=1) as hole, ThreadServer(miner) as server:
        net.chain.serve_axon(dead, "127.0.0.1", hole.port)
        net.chain.serve_axon(honest, "127.0.0.1", server.port)
        with chorus_process(*args, root=net.root, stdout=subprocess.PIPE) as proc:
            for line in proc.stdout:
                if line.startswith("round 1 "):
                    break
            hole.wait_accepted(2, 60)  # round 2 has called the dead miner: it is in flight
            assert proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        store = ValidatorStore(state / "state.sqlite")
        with sqlite3.connect(state / "state.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.last_round() == 1
        before = store.scores()
        uid = net.chain.neuron(honest).uid
        assert before[uid].score > 0 and before[uid].answered == 1

        hole.release()  # the restarted validator's round is not held
        again = run_chorus(*args, "--rounds", "1", root=net.root)
        assert again.returncode == 0, again.stderr
        assert "resuming after round 1" in again.stdout
        after = ValidatorStore(state / "state.sqlite").scores()
        assert after[uid].answered == 2 and store.last_round() == 2


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
    hidden = net.root / "hidden"
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

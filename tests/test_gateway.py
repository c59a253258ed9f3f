"""The gateway against real Piper miners on 127.0.0.1: routing by the validator's scores,
failover, API keys, rate limits, bad input, and the official OpenAI client."""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from chorus import audio
from chorus.auth import create_wallet
from chorus.chain.local import LocalChain
from chorus.cli import main
from chorus.errors import CallerError
from chorus.gateway import (
    Gateway,
    GatewaySettings,
    RequestLog,
    create_gateway_app,
    load_keys,
    parse_key,
)
from chorus.miner import Miner, create_app
from chorus.store import Answer, ValidatorStore
from chorus.text import word_error_rate
from tests.cli import chorus_process
from tests.servers import ThreadServer, free_port, make_net, wait_until_serving

KEY = "alice:sk-test-alice-0123456789"
SECRET = KEY.split(":", 1)[1]
AUTH = {"Authorization": f"Bearer {SECRET}"}


@dataclass
class GatewayNet:
    """The local chain (wallets under ``root``), the gateway's wallet, and the miners' uids
    by role."""

    chain: LocalChain
    root: Path
    gateway: object  # wallet
    uids: dict[str, int]


@pytest.fixture(scope="module")
def network(tmp_path_factory, piper, degraded):
    """An honest Piper miner, a degraded one, a dead axon, and a gateway wallet that is
    registered with a validator permit (miners answer nobody else)."""
    tmp = tmp_path_factory.mktemp("gwnet")
    net = make_net(tmp, miners=3)
    honest, worse, dead = (w.hotkey.ss58_address for w in net.miners)
    with ExitStack() as stack:
        for hotkey, backend in ((honest, piper), (worse, degraded)):
            app = create_app(Miner(hotkey, net.chain, {"tts": backend}))
            server = stack.enter_context(ThreadServer(app))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        net.chain.serve_axon(dead, "127.0.0.1", free_port())  # nothing listens there
        gateway = create_wallet("gateway", path=str(tmp / "wallets"))
        net.chain.register(gateway.hotkey.ss58_address, gateway.coldkeypub.ss58_address, 50.0, True)
        hotkeys = {"honest": honest, "degraded": worse, "dead": dead}
        uids = {name: net.chain.neuron(h).uid for name, h in hotkeys.items()}
        yield GatewayNet(net.chain, tmp, gateway, uids)


def start_gateway(net, tmp_path, scores: dict[str, float], **settings) -> tuple:
    """A gateway over a validator store in which each named miner scored ``scores``."""
    store = ValidatorStore(tmp_path / "state.sqlite")
    by_uid = {n.uid: n.hotkey for n in net.chain.neurons()}
    answers = [
        Answer(net.uids[name], by_uid[net.uids[name]], "tts", "A prompt.", score)
        for name, score in scores.items()
    ]
    store.record_round(1, answers, alpha=0.0)
    log_path = tmp_path / "requests.jsonl"
    gateway = Gateway(
        net.gateway,
        net.chain,
        store,
        load_keys(keys=[KEY]),
        GatewaySettings(timeout_s=20, **settings),
        RequestLog(log_path.open("a")),
    )
    return ThreadServer(create_gateway_app(gateway)), log_path


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def speak(url: str, text: str = "Hello from the gateway.", **extra) -> httpx.Response:
    body = {"model": "chorus-tts", "input": text, "voice": "alloy", **extra}
    return httpx.post(url + "/v1/audio/speech", json=body, headers=AUTH, timeout=60)


def is_mp3(data: bytes) -> bool:
    return sf.info(io.BytesIO(data)).format == "MP3"


def test_routes_to_the_best_scored_miner_and_logs_it(network, tmp_path):
    # The validator rates the degraded miner above the honest one: the gateway follows it.
    server, log_path = start_gateway(network, tmp_path, {"honest": 0.4, "degraded": 0.7})
    with server:
        r = speak(server.url, response_format="flac")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/flac" and r.content[:4] == b"fLaC"
    assert int(r.headers["x-chorus-miner-uid"]) == network.uids["degraded"]
    samples, rate = audio.decode_bytes(r.content)
    assert len(samples) / rate > 0.8
    (line,) = log_lines(log_path)
    assert line["key"] == "alice" and line["route"] == "/v1/audio/speech"
    assert line["miner_uid"] == network.uids["degraded"] and line["status"] == 200
    assert line["attempts"] == 1 and line["latency_s"] > 0


def test_fails_over_when_the_best_miner_is_dead(network, tmp_path):
    scores = {"dead": 0.95, "honest": 0.8, "degraded": 0.3}
    server, log_path = start_gateway(network, tmp_path, scores)
    with server:
        r = speak(server.url)
    assert r.status_code == 200, r.text
    # MP3 unless asked otherwise, as OpenAI
    assert r.headers["content-type"] == "audio/mpeg" and is_mp3(r.content)
    assert int(r.headers["x-chorus-miner-uid"]) == network.uids["honest"]
    assert log_lines(log_path)[0]["attempts"] == 2


def test_a_request_the_miner_refuses_is_422_without_failover(network, tmp_path):
    server, log_path = start_gateway(network, tmp_path, {"honest": 0.9, "degraded": 0.5})
    with server:
        r = speak(server.url, voice="no-such-voice")
    assert r.status_code == 422 and "no-such-voice" in r.json()["error"]["message"]
    assert log_lines(log_path)[0]["status"] == 422


def test_no_live_or_scored_miner_is_503_with_a_reason(network, tmp_path):
    server, log_path = start_gateway(network, tmp_path, {"dead": 0.9})
    with server:
        r = speak(server.url)
        clone = httpx.post(
            server.url + "/v1/audio/music",
            json={"prompt": "calm piano in C major", "duration": 5},
            headers=AUTH,
        )
    assert r.status_code == 503
    assert "every miner tried failed" in r.json()["error"]["message"]
    assert clone.status_code == 503
    assert "no miner has been scored for music" in clone.json()["error"]["message"]
    assert [line["status"] for line in log_lines(log_path)] == [503, 503]


def test_api_keys_are_required_and_checked(network, tmp_path):
    server, log_path = start_gateway(network, tmp_path, {"honest": 0.8})
    body = {"model": "tts-1", "input": "Hi there.", "voice": "alloy"}
    with server:
        url = server.url + "/v1/audio/speech"
        missing = httpx.post(url, json=body)
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-wrong-key-123"})
        models = httpx.get(server.url + "/v1/models", headers=AUTH)
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
    assert [m["id"] for m in models.json()["data"]] == ["chorus-tts"]
    assert [line["key"] for line in log_lines(log_path)] == [None, None]


def test_rate_limit_per_key(network, tmp_path):
    server, _ = start_gateway(network, tmp_path, {"honest": 0.8}, rate=0.01, burst=2)
    with server:
        codes = [speak(server.url, "Hi.").status_code for _ in range(3)]
        limited = speak(server.url, "Hi.")
    assert codes == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in limited.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"model": "tts-1", "voice": "alloy"}, "input"),
        ({"model": "tts-1", "input": "   ", "voice": "alloy"}, "text"),
        ({"model": "tts-1", "input": "...", "voice": "alloy"}, "must contain a letter or digit"),
        ({"model": "tts-1", "input": "\U0001f600", "voice": "alloy"}, "a letter or digit"),
        ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "ogg"}, "mp3"),
        ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "speed": 5.0}, "speed"),
        ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "stream": True}, "stream"),
        ({"model": "tts-1", "input": "x" * 4097, "voice": "alloy"}, "input"),
        ("not json", "JSON"),
    ],
)
def test_bad_input_is_400_in_openai_error_shape(network, tmp_path, body, reason):
    server, _ = start_gateway(network, tmp_path, {"honest": 0.8})
    content = body if isinstance(body, str) else json.dumps(body)
    with server:
        r = httpx.post(server.url + "/v1/audio/speech", content=content, headers=AUTH)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and reason in error["message"]


def test_keys_file_and_hashing(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# team keys\nbob:sk-bob-secret-1\n\nsk-anonymous-key-2\n")
    keys = load_keys(path, ["carol:sk-carol-secret-3"])
    assert [k.id for k in keys][:2] == ["carol", "bob"] and keys[2].id.startswith("key-")
    assert all(b"sk-" not in k.digest for k in keys)
    with pytest.raises(ValueError, match="secret of API key .dave. has 5 characters; at least 8"):
        parse_key("dave:short")


def test_duplicate_key_ids_and_shared_secrets_are_refused(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("alice:longsecret2\n")
    with pytest.raises(CallerError, match="API key id 'alice' is given twice"):
        load_keys(path, ["alice:longsecret1"])
    with pytest.raises(CallerError, match="API keys 'alice' and 'bob' share a secret"):
        load_keys(keys=["alice:longsecret1", "bob:longsecret1"])
    with pytest.raises(CallerError, match="share a secret"):  # a bare key is an id of its own
        load_keys(keys=["alice:longsecret1", "longsecret1"])


def test_official_openai_client_gets_real_speech(network, tmp_path, transcriber):
    server, _ = start_gateway(network, tmp_path, {"honest": 0.9, "degraded": 0.3})
    text = "Please bring the blue book to the kitchen table before dinner."
    with server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=SECRET, max_retries=0)
        speech = client.audio.speech.create(
            model="chorus-tts", voice="alloy", input=text, response_format="wav"
        )
        stranger = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-nope-0", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            stranger.audio.speech.create(model="chorus-tts", voice="alloy", input=text)
    samples, rate = audio.decode_bytes(speech.content)
    assert 2.0 < len(samples) / rate < 10.0
    assert float(np.sqrt(np.mean(samples**2))) > 0.02
    assert word_error_rate(text, transcriber.transcribe(samples, rate)) < 0.2


def test_cli_serves_the_gateway_and_refuses_bad_setups(network, tmp_path, capsys):
    start_gateway(network, tmp_path, {"honest": 0.8})  # writes the validator state
    wallets = str(network.root / "wallets")
    common = ["--wallet-path", wallets, "--chain-path", str(network.chain.path)]
    nowhere = ["--api-key", KEY, "--state", str(tmp_path / "nothing")]
    no_permit = ["--api-key", KEY, "--state", str(tmp_path)]
    refusals = {
        "needs API keys": ["--wallet", "gateway", "--state", str(tmp_path)],
        "no validator state": ["--wallet", "gateway", *nowhere],
        "needs a validator permit": ["--wallet", "miner-0", *no_permit],
        "rate above 0": ["--wallet", "gateway", *no_permit, "--rate", "0"],
        "as the gateway database": ["--wallet", "gateway", *no_permit, "--db", str(tmp_path)],
    }
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database\n" * 100)
    refusals["file is not a database"] = refusals["as the gateway database"][:-1] + [
        str(not_sqlite)
    ]
    for reason, argv in refusals.items():
        assert main(["gateway", *common, *argv]) == 2
        assert reason in capsys.readouterr().err

    port, log_path = free_port(), tmp_path / "cli.jsonl"
    args = ["gateway", "--wallet", "gateway", *common, *no_permit, "--port", str(port)]
    args += ["--db", str(tmp_path / "gateway.sqlite")]
    with chorus_process(*args, "--log-file", str(log_path)):
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, 60)
        r = speak(url, "Served by the command line.")
    assert r.status_code == 200 and is_mp3(r.content)
    assert log_lines(log_path)[0]["miner_uid"] == network.uids["honest"]


def test_oversized_body_is_413(network, tmp_path):
    server, _ = start_gateway(network, tmp_path, {"honest": 0.8}, max_body_bytes=1000)
    with server:
        r = speak(server.url, "word " * 300)
    assert r.status_code == 413 and "1000-byte limit" in r.json()["error"]["message"]

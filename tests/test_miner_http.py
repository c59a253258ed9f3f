"""The miner over real HTTP on 127.0.0.1: every refusal, and honest service."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from chorus import audio
from chorus.auth import AccessPolicy, create_wallet, sign
from chorus.errors import CallerError
from chorus.miner import Miner, MinerSettings, create_app
from chorus.piper import PiperTTS
from tests.servers import Net, ThreadServer, make_net

TEXT = "The museum opens at nine thirty on the fourth of July."


@pytest.fixture(scope="module")
def piper_backend():
    return PiperTTS()


@dataclass
class CallerNet(Net):
    """``make_net``'s network with two more validators that miners refuse."""

    poor: object = None  # validator permit, too little stake
    banned: object = None  # rich validator, blacklisted


@dataclass
class MinerServer:
    url: str
    hotkey: str


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> CallerNet:
    tmp = tmp_path_factory.mktemp("net")
    wallets = str(tmp / "wallets")
    poor, banned = create_wallet("poor", path=wallets), create_wallet("banned", path=wallets)
    net = CallerNet(**vars(make_net(tmp)), poor=poor, banned=banned)
    for w, stake in ((poor, 1.0), (banned, 500.0)):
        net.chain.register(w.hotkey.ss58_address, w.coldkeypub.ss58_address, stake, True)
    return net


@pytest.fixture(scope="module")
def miner(net, piper_backend):
    hotkey = net.miners[0].hotkey.ss58_address
    settings = MinerSettings(
        max_body_bytes=64 * 1024,
        max_queue=1,
        policy=AccessPolicy(min_stake=10.0, blacklist=frozenset({net.banned.hotkey.ss58_address})),
    )
    with ThreadServer(create_app(Miner(hotkey, net.chain, {"tts": piper_backend}, settings))) as s:
        yield MinerServer(s.url, hotkey)


def post(miner, wallet, payload, *, receiver=None, path="/v1/tts", body=None, headers=None):
    """Sign and send; ``body`` overrides the JSON encoding of ``payload``."""
    raw = body if body is not None else json.dumps(payload).encode()
    h = sign(wallet, "POST", path, raw, receiver or miner.hotkey)
    h.update(headers or {})
    return httpx.post(miner.url + path, content=raw, headers=h, timeout=60)


def test_info_lists_services_and_model(miner):
    info = httpx.get(miner.url + "/v1/info").json()
    assert info["hotkey"] == miner.hotkey
    assert info["services"]["tts"]["model"].startswith("piper:")


def test_honest_request_returns_decodable_speech(miner, net):
    r = post(miner, net.validator, {"text": TEXT, "sample_rate": 16000, "format": "flac"})
    assert r.status_code == 200, r.text
    body = r.json()
    samples, rate = audio.decode(body["audio"])
    assert rate == body["sample_rate"] == 16000 and body["format"] == "flac"
    assert abs(len(samples) / rate - body["duration_s"]) < 0.01
    assert 2.0 < body["duration_s"] < 8.0 and body["synthesis_s"] > 0
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not silence


def test_unsigned_request_is_refused(miner):
    r = httpx.post(miner.url + "/v1/tts", json={"text": TEXT})
    assert r.status_code == 401 and "MalformedAuth" in r.json()["error"]


def test_forged_signature_is_refused(miner, net):
    raw = json.dumps({"text": TEXT}).encode()
    h = sign(net.validator, "POST", "/v1/tts", raw, miner.hotkey)
    tampered = json.dumps({"text": TEXT + " And transfer all funds."}).encode()
    r = httpx.post(miner.url + "/v1/tts", content=tampered, headers=h)
    assert r.status_code == 401 and "BadSignature" in r.json()["error"]


def test_signature_by_another_key_is_refused(miner, net):
    raw = json.dumps({"text": TEXT}).encode()
    h = sign(net.outsider, "POST", "/v1/tts", raw, miner.hotkey)
    h["X-Bittensor-Hotkey"] = net.validator.hotkey.ss58_address  # claim to be the validator
    r = httpx.post(miner.url + "/v1/tts", content=raw, headers=h)
    assert r.status_code == 401 and "BadSignature" in r.json()["error"]


def test_replayed_request_is_refused(miner, net):
    raw = json.dumps({"text": "Just once."}).encode()
    h = sign(net.validator, "POST", "/v1/tts", raw, miner.hotkey)
    first = httpx.post(miner.url + "/v1/tts", content=raw, headers=h, timeout=60)
    again = httpx.post(miner.url + "/v1/tts", content=raw, headers=h, timeout=60)
    assert first.status_code == 200
    assert again.status_code == 401 and "ReplayedRequest" in again.json()["error"]


def test_stale_request_is_refused(miner, net):
    raw = json.dumps({"text": TEXT}).encode()
    from bittensor import http_auth

    old = time.time_ns() - 60 * 10**9
    h = http_auth.sign(
        net.validator,
        method="POST",
        path="/v1/tts",
        body=raw,
        receiver_ss58=miner.hotkey,
        nonce_ns=old,
    )
    r = httpx.post(miner.url + "/v1/tts", content=raw, headers=h)
    assert r.status_code == 401 and "StaleRequest" in r.json()["error"]


def test_request_for_another_miner_is_refused(miner, net):
    r = post(miner, net.validator, {"text": TEXT}, receiver=net.outsider.hotkey.ss58_address)
    assert r.status_code == 401 and "WrongReceiver" in r.json()["error"]


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("stranger", "not registered"),
        ("outsider", "no validator permit"),
        ("poor", "below the minimum"),
        ("banned", "blacklisted"),
    ],
)
def test_callers_without_standing_are_forbidden(miner, net, who, reason):
    r = post(miner, getattr(net, who), {"text": TEXT})
    assert r.status_code == 403 and reason in r.json()["error"]


def test_oversized_body_is_refused(miner, net):
    r = post(miner, net.validator, None, body=b'{"text": "' + b"a" * 70_000 + b'"}')
    assert r.status_code == 413 and "limit" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"this is not json", "not valid JSON"),
        (b'{"text": 42}', "invalid request"),
        (b'{"text": ""}', "invalid request"),
        (b'{"text": "   "}', "invalid request"),
        (b'{"text": "' + b"word " * 2000 + b'"}', "invalid request"),
        (b'{"text": "hi", "sample_rate": "fast"}', "invalid request"),
        (b'{"text": "hi", "format": "mp3"}', "invalid request"),
        (b'{"text": "hi", "extra": 1}', "invalid request"),
        (b"[1, 2, 3]", "invalid request"),
    ],
)
def test_invalid_requests_get_422_with_reason(miner, net, body, problem):
    r = post(miner, net.validator, None, body=body)
    assert r.status_code == 422, r.text
    assert problem in r.json()["error"]


@pytest.mark.parametrize("text", ["...", "?!", "\U0001f600\U0001f3b5"])
def test_text_with_nothing_to_speak_is_422_with_the_reason(miner, net, text):
    """It would be answered with 0 s of audio, which a gateway reads as a failed miner."""
    r = post(miner, net.validator, {"text": text})
    assert r.status_code == 422, r.text
    assert "must contain a letter or digit" in str(r.json()["detail"])


def test_unknown_voice_is_422(miner, net):
    r = post(miner, net.validator, {"text": TEXT, "voice": "nobody"})
    assert r.status_code == 422 and "unknown voice" in r.json()["error"]


def test_service_not_served_is_404(miner, net):
    r = post(miner, net.validator, {"prompt": "calm piano", "duration": 5}, path="/v1/music")
    assert r.status_code == 404 and "does not serve music" in r.json()["error"]


def test_full_queue_answers_429_and_keeps_serving(miner, net):
    long_text = " ".join([TEXT] * 12)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int) -> int:
                raw = json.dumps({"text": f"{long_text} Number {i}."}).encode()
                h = sign(net.validator, "POST", "/v1/tts", raw, miner.hotkey)
                return (
                    await client.post(miner.url + "/v1/tts", content=raw, headers=h)
                ).status_code

            return await asyncio.gather(*(one(i) for i in range(4)))

    codes = asyncio.run(burst())
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert post(miner, net.validator, {"text": "Still here."}).status_code == 200


# -- clone and music routes ----------------------------------------------------------------


def _b64(samples, rate, fmt="WAV", subtype="PCM_16") -> str:
    import base64
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def media_miner(net, piper_backend):
    from chorus.generation.clone import WorldClone
    from chorus.generation.music import SymbolicMusic

    hotkey = net.miners[0].hotkey.ss58_address
    backends = {
        "tts": piper_backend,
        "clone": WorldClone(tts=piper_backend),
        "music": SymbolicMusic(),
    }
    settings = MinerSettings(
        policy=AccessPolicy(min_stake=10.0, blacklist=frozenset({net.banned.hotkey.ss58_address}))
    )
    with ThreadServer(create_app(Miner(hotkey, net.chain, backends, settings))) as s:
        yield MinerServer(s.url, hotkey)


def _voice(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("bm90IGF1ZGlv", "not a readable"),  # base64 of "not audio"
        ("%%%not base64%%%", "not valid base64"),
        (_b64(np.zeros(0, np.float32), 16000), "at least"),
        (_b64(np.zeros(3600 * 16000, np.float32), 16000, "FLAC"), "at most"),  # an hour
        (_b64(_voice(4, 8000), 8000), "sample rate"),
        (_b64(np.tile(_voice(4)[:, None], (1, 6)), 16000), "channels"),
        (_b64(np.where(np.arange(64000) % 50, _voice(4), np.nan), 16000, subtype="FLOAT"), "NaN"),
        (_b64(np.full(64000, np.inf, np.float32), 16000, subtype="FLOAT"), "NaN"),
        (_b64(np.zeros(64000, np.float32), 16000), "silent"),
    ],
    ids=[
        "corrupt",
        "not-base64",
        "zero-length",
        "hour",
        "8khz",
        "six-channels",
        "nan",
        "inf",
        "silent",
    ],
)
def test_bad_reference_audio_gets_422_with_reason(media_miner, net, reference, problem):
    payload = {"text": "Hello there.", "reference": reference}
    r = post(media_miner, net.validator, payload, path="/v1/clone")
    assert r.status_code == 422, r.text
    assert problem in r.json()["error"]


@pytest.mark.parametrize("duration", [0, 0.5, 61, -3, "long", None])
def test_music_duration_out_of_range_is_422(media_miner, net, duration):
    r = post(
        media_miner, net.validator, {"prompt": "calm piano", "duration": duration}, path="/v1/music"
    )
    assert r.status_code == 422 and "duration" in r.text


def test_music_is_exactly_the_asked_duration(media_miner, net):
    r = post(
        media_miner,
        net.validator,
        {"prompt": "upbeat funk in E minor at 112 BPM", "duration": 4.3},
        path="/v1/music",
    )
    assert r.status_code == 200, r.text
    samples, rate = audio.decode(r.json()["audio"])
    assert rate >= 32000 and abs(len(samples) / rate - 4.3) <= 0.1


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/tts", {"text": TEXT}),
        ("/v1/clone", {"text": TEXT, "reference": "UklGRg=="}),
        ("/v1/music", {"prompt": "calm piano", "duration": 5}),
    ],
)
def test_every_route_refuses_bad_callers_before_any_work(media_miner, net, path, payload):
    served = httpx.get(media_miner.url + "/health").json()["served"]
    raw = json.dumps(payload).encode()
    assert httpx.post(media_miner.url + path, content=raw).status_code == 401
    forged = sign(net.validator, "POST", path, raw + b" ", media_miner.hotkey)
    assert httpx.post(media_miner.url + path, content=raw, headers=forged).status_code == 401
    for who in (net.stranger, net.outsider, net.poor, net.banned):
        r = post(media_miner, who, payload, path=path)
        assert r.status_code == 403, (who, r.text)
    big = post(media_miner, net.validator, None, path=path, body=b"x" * (9 * 1024 * 1024))
    assert big.status_code == 413
    assert httpx.get(media_miner.url + "/health").json()["served"] == served


def test_a_miner_runs_nothing_until_served_and_gives_its_threads_back(tmp_path):
    """Constructing a Miner reads no chain and starts no thread; serving it starts the
    metagraph reads and a fresh generation pool, and the end of serving shuts both down
    (the next serve gets a new pool)."""
    net = make_net(tmp_path)
    miner = Miner(net.miners[0].hotkey.ss58_address, net.chain, {})
    view = miner.gatekeeper.view
    time.sleep(0.3)
    assert view.reads == 0 and not view.ready
    for _ in range(2):
        with ThreadServer(create_app(miner)) as server:
            deadline = time.monotonic() + 10
            while not view.ready:
                assert time.monotonic() < deadline, "the metagraph was never read"
                time.sleep(0.02)
            assert httpx.get(server.url + "/health").json()["ok"]
            assert miner.pool.submit(sum, [1, 2]).result(5) == 3
        with pytest.raises(RuntimeError, match="after shutdown"):
            miner.pool.submit(sum, [1, 2])


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"workers": 0}, "--workers"),
        ({"max_queue": 0}, "--max-queue"),
        ({"max_body_bytes": -1}, "--max-body-bytes"),
    ],
)
def test_settings_a_miner_cannot_serve_with_are_refused(settings, flag):
    with pytest.raises(CallerError, match=f"{flag} must be at least 1"):
        MinerSettings(**settings)

"""Degenerate reference recordings against a real clone miner over signed HTTP and through
the gateway: each is refused with 422 and a reason before the backend does any work, never
a 5xx; real recordings (the voice bank, Piper speech, an exact 2 s cut) are accepted."""

from __future__ import annotations

import base64
import io
import json
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import soundfile as sf

from chorus import audio
from chorus.auth import create_wallet, sign
from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys
from chorus.generation.clone import WorldClone
from chorus.miner import Miner, create_app
from chorus.piper import PiperTTS
from chorus.services.clone import decode_reference, reference_problem
from chorus.store import Answer, ValidatorStore
from chorus.voices import VoiceBank
from tests.servers import ThreadServer, make_net

RATE = 16000
KEY = "fuzz:sk-fuzz-0123456789"
AUTH = {"Authorization": "Bearer sk-fuzz-0123456789"}
TEXT = "Please call Stella and ask her to bring these things."


def wav(x, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV") -> str:
    """Base64 of a real file, written as given: no clipping, NaNs kept (float subtypes)."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x), rate, format=fmt, subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


def seconds(s: float, rate: int = RATE) -> np.ndarray:
    return np.arange(int(s * rate)) / rate


class CountingClone:
    """The real WORLD cloner, counting how often a reference reaches it."""

    def __init__(self, backend: WorldClone):
        self.backend = backend
        self.model = backend.model
        self.calls = 0

    def clone(self, text: str, reference: np.ndarray, reference_rate: int):
        self.calls += 1
        return self.backend.clone(text, reference, reference_rate)


@dataclass
class Setup:
    miner_url: str
    miner_hotkey: str
    gateway_url: str
    validator: object  # wallet
    backend: CountingClone
    log_path: object


@pytest.fixture(scope="module")
def speech(piper: PiperTTS) -> tuple[np.ndarray, int]:
    """About 4 s of Piper speech: an honest reference anywhere Festival is missing."""
    samples, rate = piper.synthesize(
        "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    )
    assert samples.size > 3 * rate
    return samples, rate


@pytest.fixture(scope="module")
def setup(tmp_path_factory, piper) -> Setup:
    tmp = tmp_path_factory.mktemp("fuzz")
    net = make_net(tmp, miners=1)
    hotkey = net.miners[0].hotkey.ss58_address
    backend = CountingClone(WorldClone(tts=piper))
    with ExitStack() as stack:
        miner = stack.enter_context(
            ThreadServer(create_app(Miner(hotkey, net.chain, {"clone": backend})))
        )
        net.chain.serve_axon(hotkey, "127.0.0.1", miner.port)
        wallet = create_wallet("gateway", path=str(tmp / "wallets"))
        net.chain.register(wallet.hotkey.ss58_address, wallet.coldkeypub.ss58_address, 50.0, True)
        store = ValidatorStore(tmp / "state.sqlite")
        uid = net.chain.neuron(hotkey).uid
        store.record_round(1, [Answer(uid, hotkey, "clone", "[slt] A prompt.", 0.9)], alpha=0.0)
        log_path = tmp / "requests.jsonl"
        gateway = Gateway(
            wallet,
            net.chain,
            store,
            load_keys(keys=[KEY]),
            GatewaySettings(timeout_s=60, rate=1000, burst=1000),
            RequestLog(log_path.open("a")),
        )
        server = stack.enter_context(ThreadServer(create_gateway_app(gateway)))
        yield Setup(miner.url, hotkey, server.url, net.validator, backend, log_path)


def to_miner(setup: Setup, reference: str) -> httpx.Response:
    raw = json.dumps({"text": TEXT, "reference": reference}).encode()
    headers = sign(setup.validator, "POST", "/v1/clone", raw, setup.miner_hotkey)
    return httpx.post(setup.miner_url + "/v1/clone", content=raw, headers=headers, timeout=120)


def to_gateway(setup: Setup, reference: str) -> httpx.Response:
    body = {"model": "chorus-clone", "input": TEXT, "reference": reference}
    return httpx.post(setup.gateway_url + "/v1/audio/clone", json=body, headers=AUTH, timeout=120)


def _looped_speech(speech) -> str:
    """20 ms of Piper speech repeated for 3 s: a buzz made of real speech."""
    samples, rate = speech
    grain = samples[rate : rate + int(0.02 * rate)]
    return wav(np.tile(grain, 150), rate)


def _just_short_of_two_seconds(speech) -> str:
    samples, rate = speech
    return wav(samples[: 2 * rate - 1], rate)


t = seconds(3)
square = np.sign(np.sin(2 * np.pi * 150 * t))
rng = np.random.default_rng(0)

# id -> (reference, words the reason must contain). Every one is refused by the cheap
# check in chorus.services.clone.reference_problem (or the decoder) before any analysis.
# A reference is a string, or a function of Piper speech (samples, rate) for those cut
# from real speech.
DEGENERATE = {
    "dc-full-scale": (wav(np.ones(t.size)), "constant level"),
    "dc-negative-full-scale": (wav(-np.ones(t.size)), "constant level"),
    "one-sample-repeated": (wav(np.full(t.size, 0.3)), "constant level"),
    "square-150hz": (wav(0.9 * square), "level is steady"),
    "square-full-scale": (wav(np.where(square >= 0, 1.0, -1.0)), "level is steady"),
    "square-2hz": (wav(np.where(np.sin(2 * np.pi * 2 * t) >= 0, 0.99, -0.99)), "s of it is sound"),
    "square-gated-3hz": (wav(0.9 * square * (np.sin(2 * np.pi * 3 * t) > 0)), "one shape"),
    "square-swelling": (wav(0.9 * square * np.linspace(0, 1, t.size)), "one shape"),
    "alternating-full-scale": (wav(np.tile([1.0, -1.0], t.size // 2)), "speech band"),
    "alternating-48khz": (wav(np.tile([1.0, -1.0], 3 * 24000), 48000), "speech band"),
    "denormals": (wav(np.full(t.size, 1e-40, np.float32), subtype="FLOAT"), "silent"),
    "denormal-noise": (
        wav((rng.standard_normal(t.size) * 1e-39).astype(np.float32), subtype="FLOAT"),
        "silent",
    ),
    "silence-one-click": (wav(np.r_[np.zeros(24000), [1.0], np.zeros(23999)]), "s of it is sound"),
    "nan": (
        wav(np.r_[np.full(10, np.nan), np.zeros(t.size)].astype(np.float32), subtype="FLOAT"),
        "NaN",
    ),
    "inf": (wav(np.r_[np.zeros(t.size), [np.inf]].astype(np.float32), subtype="FLOAT"), "infinite"),
    "float-beyond-full-scale": (
        wav(
            (8 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32),
            subtype="FLOAT",
        ),
        "outside [-1, 1]",
    ),
    "very-low-noise": (wav(rng.normal(0, 3e-4, t.size)), "too quiet"),
    "steady-white-noise": (wav(np.clip(rng.normal(0, 0.2, t.size), -1, 1)), "level is steady"),
    "sine-220hz": (wav(0.5 * np.sin(2 * np.pi * 220 * t)), "level is steady"),
    "pulse-train": (wav((np.arange(t.size) % 160 == 0) * 0.99), "level is steady"),
    "stereo-cancelling": (
        wav(np.stack([np.sin(2 * np.pi * 220 * t), -np.sin(2 * np.pi * 220 * t)], axis=1) * 0.5),
        "silent",
    ),
    "speech-20ms-looped": (_looped_speech, "level is steady"),
    "dc-exactly-2s": (wav(np.full(2 * RATE, 0.99)), "constant level"),
    "square-exactly-2s": (wav(0.9 * square[: 2 * RATE]), "level is steady"),
    "click-exactly-2s": (wav(np.r_[np.zeros(RATE), [1.0], np.zeros(RATE - 1)]), "s of it is sound"),
    "speech-one-sample-short-of-2s": (_just_short_of_two_seconds, "1.9999"),
}


@pytest.mark.parametrize(("reference", "reason"), DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_reference_is_refused_with_a_reason_before_any_work(
    setup, speech, reference, reason
):
    if callable(reference):
        reference = reference(speech)
    calls = setup.backend.calls
    r = to_miner(setup, reference)
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"] and r.json()["error"].startswith("reference audio refused")
    g = to_gateway(setup, reference)
    assert g.status_code == 422, g.text
    assert reason in g.json()["error"]["message"]
    assert g.json()["error"]["type"] == "invalid_request_error"
    assert setup.backend.calls == calls  # refused before the cloner saw it
    line = json.loads(setup.log_path.read_text().splitlines()[-1])
    assert line["status"] == 422 and line["attempts"] == 0  # no miner was asked


def test_noise_that_passes_the_check_is_still_4xx_from_the_backend(setup):
    """Swelling noise is not caught by the cheap check; the cloner finds no voiced speech
    in it and the caller still gets 422 with that reason (never a 500), at once."""
    swell = np.clip((1 + np.sin(2 * np.pi * 4 * t)) / 2 * rng.normal(0, 0.2, t.size), -1, 1)
    reference = wav(swell)
    assert reference_problem(*audio.decode(reference)) is None
    r = to_miner(setup, reference)
    assert r.status_code == 422 and "no voiced speech" in r.json()["error"]
    g = to_gateway(setup, reference)
    assert g.status_code == 422 and "no voiced speech" in g.json()["error"]["message"]
    line = json.loads(setup.log_path.read_text().splitlines()[-1])
    assert line["attempts"] == 1  # the miner's refusal ended the request: no failover


def test_real_recordings_are_accepted(speech):
    """Every built-in bank clip as the validator sends it (FLAC), each also cut to exactly
    2 s; Piper speech at its own rate and at 48 kHz."""
    samples, rate = speech
    accepted = [wav(samples, rate), wav(audio.resample(samples, rate, 48000), 48000)]
    accepted.append(wav(samples[: 2 * rate], rate))  # exactly at the 2 s boundary
    bank = VoiceBank.builtin()
    for name in bank.voices:
        for path in bank.recordings(name):
            clip, clip_rate = audio.read(path)
            accepted.append(audio.encode(clip, clip_rate, "flac"))
            middle = clip.size // 2
            accepted.append(audio.encode(clip[middle - clip_rate : middle + clip_rate], clip_rate))
    for reference in accepted:
        decoded, _ = decode_reference(reference)
        assert decoded.size > 0
    if not bank.voices:
        pytest.skip("Festival voices missing: only Piper speech was checked")


def test_real_references_are_cloned_over_http_and_through_the_gateway(setup, speech):
    samples, rate = speech
    r = to_miner(setup, wav(samples[: 2 * rate], rate))  # exactly 2 s
    assert r.status_code == 200, r.text
    cloned, cloned_rate = audio.decode(r.json()["audio"])
    assert cloned.size > cloned_rate and np.isfinite(cloned).all()
    bank = VoiceBank.builtin()
    reference = audio.encode(*bank.reference(bank.voices[0])) if bank.voices else wav(*speech)
    g = to_gateway(setup, reference)
    assert g.status_code == 200, g.text
    assert g.content[:4] == b"RIFF"


def test_an_operators_voice_folder_is_screened_like_a_miner_would(tmp_path, speech, caplog):
    """A validator's ``--voices`` recordings that every miner would refuse are left out at
    start-up with the reason; a folder with nothing usable is refused."""
    from chorus.errors import CallerError
    from chorus.services.clone import _voice_bank

    samples, rate = speech
    audio.write(tmp_path / "good" / "speech.wav", samples, rate)
    audio.write(tmp_path / "good" / "tone.wav", 0.5 * np.sin(2 * np.pi * 220 * t), RATE)
    audio.write(tmp_path / "hum.wav", 0.5 * np.sin(2 * np.pi * 50 * t), RATE)
    bank = _voice_bank(str(tmp_path))
    assert bank.voices == ["good"] and [p.name for p in bank.recordings("good")] == ["speech.wav"]
    assert "tone.wav left out" in caplog.text and "level is steady" in caplog.text

    only_bad = tmp_path / "bad"
    audio.write(only_bad / "click.wav", np.r_[np.zeros(RATE), [1.0], np.zeros(RATE)], RATE)
    with pytest.raises(CallerError, match="no usable reference recordings.*click.wav"):
        _voice_bank(str(only_bad))

"""The validator against hostile and broken miners, all real HTTP servers on 127.0.0.1.

Every bad answer must score zero (with its reason recorded) while the honest miner keeps
earning and the loop finishes its rounds on time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chorus import audio
from chorus.miner import Miner, create_app
from chorus.piper import PiperTTS
from chorus.store import StoredAnswer, ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import Net, ThreadServer, make_net


def wav_b64(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


def answer(b64: str, rate: int = 22050, seconds: float = 2.0) -> dict:
    return {
        "audio": b64,
        "format": "wav",
        "sample_rate": rate,
        "duration_s": seconds,
        "model": "bad",
        "synthesis_s": 0.1,
    }


class RecordingTTS(PiperTTS):
    """An honest backend that remembers its answers so that a copycat can serve them."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, tuple[np.ndarray, int]] = {}
        self.ready = threading.Condition()

    def synthesize(self, text, voice=None):
        out = super().synthesize(text, voice)
        with self.ready:
            self.last[text] = out
            self.ready.notify_all()
        return out


def bad_app(kind: str, honest: RecordingTTS, released: threading.Event) -> FastAPI:
    """``released``: set when the test is done, so that a hanging answer ends and its
    server stops at once rather than after its shutdown wait."""
    app = FastAPI()
    first: dict[str, str] = {}
    own = PiperTTS() if kind == "replayer" else None

    @app.get("/health")
    async def health():
        return {"ok": True}

    @app.post("/v1/tts")
    async def tts(request: Request):
        text = (await request.json())["text"]
        noise = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32)
        if kind == "not_audio":
            return answer(base64.b64encode(b"definitely not a wav file").decode())
        if kind == "truncated":
            return answer(wav_b64(noise, 22050)[:5001])
        if kind == "nan":
            bad = noise.copy()
            bad[::100] = np.nan
            return answer(wav_b64(bad, 22050, "FLOAT"))
        if kind == "low_rate":
            return answer(wav_b64(noise[:8000], 4000), rate=4000)
        if kind == "ten_minutes":
            return answer(wav_b64(np.zeros(600 * 8000, np.float32), 8000), 8000, 600.0)
        if kind == "huge":
            chunk = b"x" * (1 << 20)
            return StreamingResponse((chunk for _ in range(200)), media_type="application/json")
        if kind == "hang":
            for _ in range(1200):  # 120 s, past any deadline, or until released
                if released.is_set():
                    break
                await asyncio.sleep(0.1)
            return JSONResponse({"error": "too late"}, status_code=500)
        if kind == "error500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if kind == "garbage":
            return Response(b'{"audio": "AAAA", "format": ', media_type="application/json")
        if kind == "copycat":

            def steal():
                with honest.ready:
                    honest.ready.wait_for(lambda: text in honest.last, timeout=60)
                return honest.last.get(text)

            stolen = await asyncio.to_thread(steal)
            if stolen is None:
                return JSONResponse({"error": "nothing to copy"}, status_code=500)
            samples, rate = stolen
            return answer(audio.encode(samples, rate, "flac"), rate, len(samples) / rate) | {
                "format": "flac"
            }
        if kind == "replayer":
            if "cached" not in first:
                samples, rate = await asyncio.to_thread(own.synthesize, text)
                first["cached"] = audio.encode(samples, rate)
            return answer(first["cached"])
        raise AssertionError(kind)

    return app


KINDS = [
    "not_audio",
    "truncated",
    "nan",
    "low_rate",
    "ten_minutes",
    "huge",
    "hang",
    "error500",
    "garbage",
    "copycat",
    "replayer",
]


@dataclass
class HostileNet:
    """The network, and the kind of miner behind each uid."""

    net: Net
    by_uid: dict[int, str]


@pytest.fixture(scope="module")
def hostile_net(tmp_path_factory) -> HostileNet:
    tmp = tmp_path_factory.mktemp("hostile")
    net = make_net(tmp, miners=2 + len(KINDS))
    copied = RecordingTTS()
    released = threading.Event()
    hotkeys = [w.hotkey.ss58_address for w in net.miners]
    apps = [
        create_app(Miner(hotkeys[0], net.chain, {"tts": PiperTTS()})),
        create_app(Miner(hotkeys[1], net.chain, {"tts": copied})),
        *(bad_app(kind, copied, released) for kind in KINDS),
    ]
    by_uid, servers = {}, []
    with ExitStack() as stack:
        for hotkey, app, kind in zip(hotkeys, apps, ["honest", "copied", *KINDS], strict=True):
            server = stack.enter_context(ThreadServer(app))
            servers.append(server)
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
            by_uid[net.chain.neuron(hotkey).uid] = kind
        yield HostileNet(net, by_uid)
        released.set()
        for server in servers:  # all stop at once, not one after another
            server.server.should_exit = True


def test_every_bad_answer_scores_zero_and_the_loop_goes_on(hostile_net, tts_evaluator, tmp_path):
    store = ValidatorStore(tmp_path / "state.sqlite")
    # Every round waits this long on the hanging miner; honest answers take 3-6 s here.
    settings = ValidatorSettings(timeout_s=15, alpha=0.5, weights_interval_blocks=1, seed=11)
    net = hostile_net.net
    validator = Validator(net.validator, net.chain, store, {"tts": tts_evaluator}, settings)
    asyncio.run(validator.run(rounds=2))
    assert store.last_round() == 2

    results: dict[str, list[StoredAnswer]] = {}
    for a in store.answers(limit=100):
        results.setdefault(hostile_net.by_uid[a.uid], []).append(a)
    assert all(a.score > 0.5 and a.error is None for a in results["honest"])
    for kind in KINDS:
        rounds = sorted(results[kind], key=lambda a: a.round)
        judged = rounds[1:] if kind == "replayer" else rounds  # its first answer is honest
        assert all(a.score == 0.0 for a in judged), (kind, judged)
    errors = {k: results[k][0].error or "" for k in KINDS}
    assert "bad audio" in errors["not_audio"] and "bad audio" in errors["truncated"]
    assert "NaN" in errors["nan"] and "sample rate" in errors["low_rate"]
    assert "at most" in errors["ten_minutes"] and errors["huge"] == "answer too large"
    assert errors["hang"] == "timeout" and "HTTP 500" in errors["error500"]
    assert "not a valid audio response" in errors["garbage"]
    # The copycat and the miner it copies cannot be told apart: neither earns.
    for kind in ("copycat", "copied"):
        assert all("identical to uid" in (a.error or "") for a in results[kind]), kind
    replay = max(results["replayer"], key=lambda a: a.round)
    assert "replay of an answer from round 1" in replay.error

    scores = store.scores()
    honest_uid = next(u for u, k in hostile_net.by_uid.items() if k == "honest")
    assert max(scores, key=lambda u: scores[u].score) == honest_uid

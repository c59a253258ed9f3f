"""The gateway as OpenAI's clients use it, against real Piper and music miners on
127.0.0.1: MP3 by default, every response format decoded and transcribed, speed, the
voice list, instructions and model names, streaming that starts before the last sentence
is asked for, a sentence failing over mid-answer, music in every format, and usage per
key and per miner (at ``/v1/usage`` and on the dashboard)."""

from __future__ import annotations

import io
import json
import re
import time

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from chorus import degrade
from chorus.dashboard import create_dashboard_app
from chorus.generation.music import SymbolicMusic
from chorus.protocol import MAX_TEXT_CHARS, not_blank
from chorus.services.tts import split_sentences
from chorus.text import word_error_rate
from tests.gateway_net import KEYS, GatewayNet, RecordingTTS, auth, gateway_net
from tests.servers import ThreadServer

TEXT = "Please bring the blue book to the kitchen table before dinner."
SENTENCES = (
    "The morning train was late again.",
    "Nobody on the platform seemed surprised.",
    "A man in a grey coat read his newspaper.",
    "Then the bells rang and the doors opened.",
)


@pytest.mark.parametrize(
    "text",
    [
        "Hello there, my friend. " + "!" * 20 + " And then some more words here.",
        "!" * 18 + " " + "?" * 14 + " A real sentence comes after them.",
        "x" * (MAX_TEXT_CHARS - 10) + " " + "!" * 30,  # cut at the limit: "!!!..." alone
        "A sentence that is long enough. " + "?!" * 8 + " ...",
    ],
)
def test_the_gateway_never_asks_a_miner_for_punctuation_alone(text: str) -> None:
    assert split_sentences("... ?!") == []  # nothing a voice could speak
    pieces = split_sentences(text)
    assert pieces and all(len(p) <= MAX_TEXT_CHARS for p in pieces)
    for piece in pieces:
        not_blank(piece)  # what a miner holds each piece to (a 422 otherwise)
    # no word is lost
    assert re.findall(r"\w+", text) == re.findall(r"\w+", " ".join(pieces))


@pytest.fixture(scope="module")
def net(tmp_path_factory, piper):
    """``main`` serves TTS (recorded, and slowed or broken on demand) and music and is
    ranked first; ``backup`` serves TTS only, ranked second."""
    from chorus.piper import PiperTTS

    main = RecordingTTS(piper)
    miners = {
        "main": ({"tts": main, "music": SymbolicMusic()}, {"tts": 0.9, "music": 0.8}),
        "backup": ({"tts": PiperTTS(seed=1)}, {"tts": 0.5}),
    }
    with gateway_net(tmp_path_factory.mktemp("gwopenai"), miners) as gw:
        gw.main = main  # type: ignore[attr-defined]
        yield gw


@pytest.fixture
def main(net: GatewayNet) -> RecordingTTS:
    """The main miner's TTS backend, reset for one test."""
    backend: RecordingTTS = net.main  # type: ignore[attr-defined]
    backend.delay, backend.fail_on = 0.0, None
    with backend.lock:
        backend.calls.clear()
    return backend


def client(net: GatewayNet, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=net.url + "/v1", api_key=KEYS[who], max_retries=0)


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Any answer as (mono float, rate): soundfile for mp3/opus/flac/wav, PyAV for aac,
    and pcm as OpenAI documents it (16-bit little-endian mono at 24 kHz)."""
    if fmt == "pcm":
        data = data[: len(data) // 2 * 2]
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, 24000
    if fmt == "aac":
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
            return np.concatenate(frames).astype(np.float32), stream.rate
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def assert_speaks(samples: np.ndarray, rate: int, text: str, transcriber) -> None:
    assert float(np.sqrt(np.mean(samples**2))) > 0.02
    heard = transcriber.transcribe(samples, rate)
    assert word_error_rate(text, heard) < 0.2, heard


def test_default_response_is_mp3_of_the_input(net, main, transcriber):
    speech = client(net).audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert int(speech.response.headers["x-chorus-miner-uid"]) == net.uids["main"]
    assert speech.response.headers["x-chorus-miner-score"] == "0.900"
    with sf.SoundFile(io.BytesIO(speech.content)) as f:
        assert (f.format, f.subtype, f.samplerate) == ("MP3", "MPEG_LAYER_III", 24000)
    samples, rate = decode(speech.content, "mp3")
    assert 2.0 < len(samples) / rate < 10.0
    assert_speaks(samples, rate, TEXT, transcriber)


@pytest.mark.parametrize(
    ("fmt", "media", "magic"),
    [
        ("opus", "audio/ogg", b"OggS"),
        ("aac", "audio/aac", b"\xff\xf1"),
        ("flac", "audio/flac", b"fLaC"),
        ("wav", "audio/wav", b"RIFF"),
        ("pcm", "audio/pcm", b""),
    ],
    ids=["opus", "aac", "flac", "wav", "pcm"],
)
def test_every_format_decodes_to_the_input(net, main, transcriber, fmt, media, magic):
    speech = client(net).audio.speech.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format=fmt
    )
    assert speech.response.headers["content-type"] == media
    assert speech.content.startswith(magic)
    samples, rate = decode(speech.content, fmt)
    assert rate == 24000
    assert 2.0 < len(samples) / rate < 10.0
    assert_speaks(samples, rate, TEXT, transcriber)


def test_speed_stretches_time_and_keeps_the_pitch(net, main, transcriber):
    durations, pitches = {}, {}
    for speed in (0.5, 1.0, 2.0):
        speech = client(net).audio.speech.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm", speed=speed
        )
        samples, rate = decode(speech.content, "pcm")
        durations[speed] = len(samples) / rate
        pitches[speed] = degrade.median_f0(samples, rate)
        if speed != 1.0:
            assert_speaks(samples, rate, TEXT, transcriber)
    assert durations[0.5] / durations[1.0] == pytest.approx(2.0, rel=0.05)
    assert durations[2.0] / durations[1.0] == pytest.approx(0.5, rel=0.05)
    for speed in (0.5, 2.0):  # a time stretch, not a tape played faster
        assert pitches[speed] == pytest.approx(pitches[1.0], rel=0.1)
    bad = httpx.post(
        net.url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": TEXT, "speed": 4.5},
        headers=auth(),
    )
    assert bad.status_code == 400 and "speed" in bad.json()["error"]["message"]


def test_voices_names_models_and_instructions(net, main):
    voices = httpx.get(net.url + "/v1/audio/voices", headers=auth()).json()["data"]
    by_type: dict[str, list[str]] = {}
    for v in voices:
        by_type.setdefault(v["type"], []).append(v["id"])
    assert {"alloy", "echo", "nova", "shimmer", "marin", "cedar"} <= set(by_type["builtin"])
    assert by_type["miner"] == ["joe"]  # what the Piper miners list in /v1/info
    c = client(net)
    for model, voice in (("tts-1", "ash"), ("tts-1-hd", "joe"), ("chorus-tts", "coral")):
        speech = c.audio.speech.create(
            model=model,
            voice=voice,
            input="Good evening.",
            instructions="Speak like a sports commentator.",  # accepted, and ignored
            response_format="wav",
        )
        assert speech.content[:4] == b"RIFF"
    # an OpenAI name means the miner's default voice; a miner voice is passed on by name
    assert [voice for _, _, voice in main.calls] == [None, "joe", None]
    with pytest.raises(openai.BadRequestError, match="stream_format"):
        c.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", stream_format="sse")


@pytest.mark.parametrize("fmt", ["mp3", "opus", "pcm"])
def test_streaming_starts_before_the_last_sentence_is_asked_for(net, main, transcriber, fmt):
    """Four sentences from a miner taking 0.4 s each: the first bytes reach the official
    client's streaming response before the gateway has even asked for the last sentence,
    what arrived by then already decodes, and the whole stream is the whole text."""
    main.delay = 0.4
    text = " ".join(SENTENCES)
    pieces: list[tuple[float, bytes]] = []
    start = time.perf_counter()
    with client(net).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format=fmt
    ) as response:
        for piece in response.iter_bytes():
            pieces.append((time.perf_counter(), piece))
    total = time.perf_counter() - start
    asked = {text: t for t, text, _ in main.calls}
    assert list(asked) == list(SENTENCES)  # one request a sentence, in order
    first_byte, last_asked = pieces[0][0], asked[SENTENCES[-1]]
    print(
        f"\n{fmt}: first bytes after {first_byte - start:.2f} s, last sentence asked at"
        f" {last_asked - start:.2f} s, whole answer after {total:.2f} s"
    )
    assert first_byte < last_asked
    early = b"".join(p for t, p in pieces if t < last_asked)
    samples, rate = decode(early, fmt)
    assert len(samples) / rate > 1.0  # a playable head of the stream
    whole = b"".join(p for _, p in pieces)
    samples, rate = decode(whole, fmt)
    assert_speaks(samples, rate, text, transcriber)


def test_a_sentence_fails_over_mid_answer(net, main, transcriber):
    """The main miner breaks on the third sentence: that one (and the rest) come from the
    backup miner; the stream is whole, and the log and usage name both miners."""
    main.fail_on = "grey coat"
    text = " ".join(SENTENCES)
    speech = client(net, "bob").audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="flac"
    )
    samples, rate = decode(speech.content, "flac")
    assert_speaks(samples, rate, text, transcriber)
    line = json.loads(net.log_path.read_text().splitlines()[-1])
    assert line["miner_uids"] == [net.uids["main"], net.uids["backup"]]
    assert line["status"] == 200 and line["chunks"] == 4
    used = httpx.get(net.url + "/v1/usage", headers=auth("bob")).json()
    assert {m["uid"] for m in used["by_miner"]} >= {net.uids["main"], net.uids["backup"]}


def test_a_stream_with_no_miner_left_is_cut_short(net, main):
    """The same break with no miner to fail over to (one attempt a sentence): the status
    was sent with the first sentence, so the stream is cut short; the client sees an
    incomplete answer, never a silently shorter one, and the log says why."""
    main.fail_on = "grey coat"
    net.gateway.settings.max_attempts = 1
    got = bytearray()
    try:
        stream = client(net).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=" ".join(SENTENCES), response_format="pcm"
        )
        # httpx2's RemoteProtocolError, in openai 3.x
        with pytest.raises(Exception, match="incomplete chunked read"), stream as response:
            assert response.status_code == 200
            for piece in response.iter_bytes():
                got += piece
    finally:
        net.gateway.settings.max_attempts = 3
    assert len(got) / 2 / 24000 > 1.0  # the first two sentences came
    line = json.loads(net.log_path.read_text().splitlines()[-1])
    assert line["status"] == 503 and line["error"].startswith("cut short after")
    assert "every miner tried failed" in line["error"]


def test_music_in_every_format_with_its_duration(net, main):
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        r = httpx.post(
            net.url + "/v1/audio/music",
            json={
                "prompt": "calm piano in A minor at 80 bpm",
                "duration": 4,
                "response_format": fmt,
            },
            headers=auth(),
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert int(r.headers["x-chorus-miner-uid"]) == net.uids["main"]
        samples, rate = decode(r.content, fmt)
        assert len(samples) / rate == pytest.approx(4.0, abs=0.2), fmt
        assert float(np.sqrt(np.mean(samples**2))) > 0.01


def test_usage_per_key_and_miner_at_v1_usage_and_on_the_dashboard(net, main):
    """Carol's requests and seconds, per miner; no key sees another's usage."""
    seconds = 0.0
    for text in ("One sentence for the record.", "And another one, a little longer."):
        speech = client(net, "carol").audio.speech.create(
            model="tts-1", voice="alloy", input=text, response_format="pcm"
        )
        seconds += len(speech.content) / 2 / 24000
    music = httpx.post(
        net.url + "/v1/audio/music",
        json={
            "prompt": "funk groove in E minor at 112 bpm",
            "duration": 3,
            "response_format": "wav",
        },
        headers=auth("carol"),
        timeout=60,
    )
    seconds += sf.info(io.BytesIO(music.content)).duration
    used = httpx.get(net.url + "/v1/usage", headers=auth("carol")).json()
    assert used["key"] == "carol" and used["requests"] == 3 and used["failed"] == 0
    assert used["seconds"] == pytest.approx(seconds, abs=0.05)
    (miner,) = used["by_miner"]
    assert (miner["uid"], miner["hotkey"]) == (net.uids["main"], net.hotkeys["main"])
    assert miner["requests"] == 3
    routes = {r["route"]: r["requests"] for r in used["by_route"]}
    assert routes == {"/v1/audio/speech": 2, "/v1/audio/music": 1}
    later = httpx.get(
        net.url + "/v1/usage", params={"since": time.time() + 60}, headers=auth("carol")
    )
    assert later.json()["requests"] == 0
    assert httpx.get(net.url + "/v1/usage").status_code == 401

    app = create_dashboard_app(net.store, gateway_db=net.db_path)
    with ThreadServer(app) as dashboard:
        board = httpx.get(dashboard.url + "/api/usage").json()
        page = httpx.get(dashboard.url + "/").text
    keys = {row["key"]: row for row in board["by_key"]}
    assert keys["carol"]["requests"] == 3
    assert keys["carol"]["seconds"] == pytest.approx(seconds, abs=0.05)
    assert (
        "<h2>Gateway usage</h2>" in page and '<tr class="by-key"><td>carol</td><td>3</td>' in page
    )
    assert f"{net.uids['main']} <span" in page

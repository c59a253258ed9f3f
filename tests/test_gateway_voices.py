"""Your own voices at the gateway, against a real Piper + WORLD clone miner on 127.0.0.1:
upload a recording (multipart, as curl or OpenAI's client sends it), speak with it through
``/v1/audio/speech``, list, read and delete it; another key can neither see nor use it
(404); recordings a clone miner would refuse are refused on upload with the reason."""

from __future__ import annotations

import io

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from chorus import audio, degrade, formats
from chorus.generation.clone import WorldClone
from chorus.text import word_error_rate
from chorus.voices import VoiceBank
from tests.gateway_net import KEYS, auth, gateway_net

TEXT = "Please bring the blue book to the kitchen table before dinner."


@pytest.fixture(scope="module")
def net(tmp_path_factory, piper):
    miners = {
        "cloner": ({"tts": piper, "clone": WorldClone(tts=piper)}, {"tts": 0.9, "clone": 0.7})
    }
    with gateway_net(tmp_path_factory.mktemp("gwvoices"), miners) as gw:
        yield gw


@pytest.fixture(scope="module")
def reference(piper) -> tuple[np.ndarray, int]:
    """A voice pitched well above Piper's, so a clone of it is told from the stock voice
    by pitch alone: the installed bank voice highest above Piper (at least 40 Hz; with
    the Debian voices, Festival's Czech or Italian women), else Piper pitched up."""
    samples, rate = piper.synthesize("Please call Stella and ask her to bring these things.")
    stock = degrade.median_f0(samples, rate)
    bank = VoiceBank.builtin()
    by_pitch = sorted((degrade.median_f0(*bank.reference(name)), name) for name in bank.voices)
    if by_pitch and by_pitch[-1][0] >= stock + 40:
        return bank.reference(by_pitch[-1][1])
    return degrade.pitch_shift(samples, rate, 1.6), rate


def wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upload(url: str, data: bytes, who: str = "alice", name: str | None = "me", filename="me.wav"):
    fields = {"name": name} if name else None
    return httpx.post(
        url + "/v1/voices", files={"file": (filename, data)}, data=fields, headers=auth(who)
    )


def test_upload_speak_list_and_delete_a_voice(net, reference, transcriber, piper):
    ref, rate = reference
    c = openai.OpenAI(base_url=net.url + "/v1", api_key=KEYS["alice"], max_retries=0)
    # OpenAI's client uploads to /v1/audio/voices with its own field names
    made = c.audio.voices.create(
        audio_sample=("mine.wav", wav(ref, rate), "audio/wav"), consent="cons_local", name="mine"
    )
    assert made.id.startswith("voice_") and made.name == "mine" and made.type == "audio_sample"
    # curl's way: multipart to /v1/voices
    r = upload(net.url, wav(ref, rate), name=None, filename="second take.wav")
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["name"] == "second take" and second["duration_s"] == pytest.approx(
        len(ref) / rate, abs=0.01
    )

    listed = httpx.get(net.url + "/v1/voices", headers=auth()).json()["data"]
    assert [v["id"] for v in listed] == [made.id, second["id"]]
    everything = httpx.get(net.url + "/v1/audio/voices", headers=auth()).json()["data"]
    assert {v["id"] for v in everything if v["type"] == "audio_sample"} == {made.id, second["id"]}
    one = httpx.get(f"{net.url}/v1/voices/{made.id}", headers=auth()).json()
    assert one["id"] == made.id and one["sample_rate"] == rate

    # Spoken in that voice by the clone miner: OpenAI's voice object, or the id as a name.
    spoken = {}
    for voice in ({"id": made.id}, second["id"]):
        speech = c.audio.speech.create(model="tts-1", voice=voice, input=TEXT)
        assert speech.response.headers["x-chorus-service"] == "clone"
        assert int(speech.response.headers["x-chorus-miner-uid"]) == net.uids["cloner"]
        samples, out_rate = sf.read(io.BytesIO(speech.content), dtype="float32")
        heard = transcriber.transcribe(samples, out_rate)
        assert word_error_rate(TEXT, heard) < 0.25, heard
        spoken[str(voice)] = samples
    # it is the uploaded voice, not the stock one: its pitch is the reference's
    clone_f0 = degrade.median_f0(spoken[second["id"]], 24000)
    stock_f0 = degrade.median_f0(*piper.synthesize(TEXT))
    ref_f0 = degrade.median_f0(ref, rate)
    assert abs(clone_f0 - ref_f0) < abs(stock_f0 - ref_f0) / 2, (clone_f0, ref_f0, stock_f0)

    deleted = c.audio.voices.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    gone = httpx.delete(f"{net.url}/v1/voices/{second['id']}", headers=auth())
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert httpx.get(net.url + "/v1/voices", headers=auth()).json()["data"] == []
    with pytest.raises(openai.NotFoundError, match="no voice"):
        c.audio.speech.create(model="tts-1", voice={"id": made.id}, input=TEXT)
    assert httpx.get(f"{net.url}/v1/voices/{made.id}", headers=auth()).status_code == 404
    assert httpx.delete(f"{net.url}/v1/voices/{made.id}", headers=auth()).status_code == 404


def test_no_key_sees_or_uses_another_keys_voice(net, reference):
    mine = upload(net.url, wav(*reference), who="carol").json()["id"]
    url = f"{net.url}/v1/voices/{mine}"
    speak = {"model": "tts-1", "input": TEXT, "voice": mine, "response_format": "wav"}
    refused = {
        "get": httpx.get(url, headers=auth("bob")),
        "delete": httpx.delete(url, headers=auth("bob")),
        "speak": httpx.post(net.url + "/v1/audio/speech", json=speak, headers=auth("bob")),
        "speak by object": httpx.post(
            net.url + "/v1/audio/speech", json={**speak, "voice": {"id": mine}}, headers=auth("bob")
        ),
    }
    for what, r in refused.items():
        assert r.status_code == 404, what
        assert r.json()["error"]["message"] == f"no voice '{mine}' for this key"
    bobs = httpx.get(net.url + "/v1/audio/voices", headers=auth("bob")).json()["data"]
    assert mine not in {v["id"] for v in bobs}
    assert httpx.get(net.url + "/v1/voices", headers=auth("bob")).json()["data"] == []
    # still carol's, and still hers to use
    assert httpx.get(url, headers=auth("carol")).status_code == 200
    assert httpx.get(url).status_code == 401
    ok = httpx.post(net.url + "/v1/audio/speech", json=speak, headers=auth("carol"), timeout=60)
    assert ok.status_code == 200 and ok.content[:4] == b"RIFF"


def test_recordings_in_other_containers_are_accepted(net, reference):
    """MP3 and Ogg/Opus (libsndfile), and AAC in ADTS (ffmpeg's decoder) all upload."""
    ref, rate = reference
    for fmt in ("mp3", "opus", "aac"):
        data = formats.encode(ref, rate, fmt)
        r = upload(net.url, data, who="bob", filename=f"voice.{fmt}")
        assert r.status_code == 201, (fmt, r.text)
        assert r.json()["duration_s"] == pytest.approx(len(ref) / rate, abs=0.15)


def _tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not audio", "not an audio file"),
        ("too short", "at least 2 s"),
        ("too long", "at most 30 s"),
        ("wrong rate", "sample rate 8000 Hz is outside 16000-48000 Hz"),
        ("DC", "constant level"),
        ("silence", "silent"),
        ("steady tone", "steady"),
    ],
    ids=["not-audio", "too-short", "too-long", "wrong-rate", "DC", "silence", "steady-tone"],
)
def test_bad_recordings_are_refused_with_a_reason(net, reference, case, reason):
    ref, rate = reference
    data = {
        "not audio": b"this is a text file, not a recording\n" * 50,
        "too short": wav(ref[: int(1.5 * rate)], rate),
        "too long": wav(np.tile(ref, 8)[: int(31 * rate)], rate),
        "wrong rate": wav(audio.resample(ref, rate, 8000), 8000),
        "DC": wav(np.full(3 * rate, 0.25, np.float32), rate),
        "silence": wav(np.zeros(3 * rate, np.float32), rate),
        "steady tone": wav(_tone(rate, 3.0), rate),
    }[case]
    r = upload(net.url, data, who="bob")
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"]["message"]


def test_uploads_that_are_not_a_form_are_refused(net):
    raw = httpx.post(
        net.url + "/v1/voices", content=b"RIFF....", headers={**auth(), "Content-Type": "audio/wav"}
    )
    assert raw.status_code == 400 and "multipart/form-data" in raw.json()["error"]["message"]
    empty = httpx.post(
        net.url + "/v1/voices", data={"name": "nothing"}, files={"x": ("a", b"")}, headers=auth()
    )
    assert empty.status_code == 400 and "no recording" in empty.json()["error"]["message"]
    huge = httpx.post(
        net.url + "/v1/voices",
        files={"file": ("big.wav", b"\0" * (17 * 1024 * 1024))},
        headers=auth(),
    )
    assert huge.status_code == 413

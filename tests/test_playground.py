"""The gateway's playground page in headless Chromium against a real local network: with
an API key typed in (and kept across a reload), speech plays from the best miner, an
uploaded voice is listed and spoken in, and music plays; each answer names its miner and
score. Audio must really load and play: a duration, and a ``playing`` event with the clock
moving (autoplay allowed by a Chromium flag)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import soundfile as sf
from playwright.sync_api import Page, sync_playwright

from chorus.generation.clone import WorldClone
from chorus.generation.music import SymbolicMusic
from chorus.voices import VoiceBank
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.gateway_net import KEYS, gateway_net

ARGS = [*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"]  # plays what it fetched


@pytest.fixture(scope="module")
def net(tmp_path_factory, piper):
    backends = {"tts": piper, "clone": WorldClone(tts=piper), "music": SymbolicMusic()}
    scores = {"tts": 0.9, "clone": 0.7, "music": 0.8}
    with gateway_net(tmp_path_factory.mktemp("gwplay"), {"miner": (backends, scores)}) as gw:
        yield gw


@pytest.fixture(scope="module")
def recording(tmp_path_factory, piper) -> Path:
    """A voice to upload: a Festival speaker where installed, else Piper's own."""
    bank = VoiceBank.builtin()
    samples, rate = (
        bank.reference(bank.voices[0])
        if bank.voices
        else piper.synthesize("Please call Stella and ask her to bring these things.")
    )
    path = tmp_path_factory.mktemp("voice") / "my voice.wav"
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    path.write_bytes(buf.getvalue())
    return path


def watch(page: Page, player: str) -> None:
    """Note when ``player`` starts playing (set before the click that starts it)."""
    page.evaluate(
        """(id) => { const a = document.getElementById(id); a.dataset.playing = "";
        a.addEventListener("playing", () => a.dataset.playing = "yes"); }""",
        player,
    )


def assert_plays(page: Page, player: str) -> float:
    """The player's audio loaded (a duration) and plays (``playing`` fired, clock moving);
    its duration in seconds."""
    page.wait_for_function(
        """(id) => { const a = document.getElementById(id);
        return a.dataset.playing === "yes" && a.duration > 0 && isFinite(a.duration)
            && a.currentTime > 0.2 && !a.error; }""",
        arg=player,
        timeout=30_000,
    )
    return page.evaluate("(id) => document.getElementById(id).duration", player)


def answered(page: Page, info: str) -> dict[str, str]:
    page.wait_for_function(
        "(id) => document.getElementById(id).dataset.uid", arg=info, timeout=60_000
    )
    return page.evaluate("(id) => ({...document.getElementById(id).dataset})", info)


def test_playground_speaks_clones_and_composes_in_chromium(net, recording):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(net.url + "/")
            assert page.title() == "chorus playground"

            # a wrong key says so; the right one loads the voices and is remembered
            page.fill("#key", "sk-not-a-key")
            page.wait_for_function("document.getElementById('speech-error').textContent")
            assert "invalid API key" in page.inner_text("#speech-error")
            page.fill("#key", KEYS["alice"])
            page.wait_for_function("document.querySelectorAll('#voice option').length > 10")
            page.reload()
            assert page.input_value("#key") == KEYS["alice"]
            page.wait_for_function("document.querySelectorAll('#voice option').length > 10")
            voices = page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")
            assert {"alloy", "nova", "joe"} <= set(voices)

            # speech: played while it streams in, from the best miner, with its score
            page.fill("#text", "Hello from the playground. This sentence comes second.")
            watch(page, "speech-audio")
            page.click("#speak")
            info = answered(page, "speech-info")
            assert (int(info["uid"]), info["score"]) == (net.uids["miner"], "0.900")
            assert 2.0 < assert_plays(page, "speech-audio") < 10.0
            assert page.inner_text("#speech-error") == ""

            # upload a voice, then speak in it
            page.set_input_files("#voice-file", str(recording))
            page.fill("#voice-name", "Tester")
            page.click("#upload")
            page.wait_for_function("document.getElementById('voice-status').textContent")
            assert 'uploaded "Tester" as voice_' in page.inner_text("#voice-status")
            chosen = page.input_value("#voice")
            assert chosen.startswith("voice_")
            page.fill("#text", "This is my own voice.")
            page.evaluate("document.getElementById('speech-info').dataset.uid = ''")
            watch(page, "speech-audio")
            page.click("#speak")
            assert int(answered(page, "speech-info")["uid"]) == net.uids["miner"]
            assert assert_plays(page, "speech-audio") > 0.8

            # music from a prompt
            page.fill("#music-prompt", "an upbeat funk groove in E minor at 112 bpm")
            page.fill("#music-duration", "4")
            watch(page, "music-audio")
            page.click("#compose")
            info = answered(page, "music-info")
            assert (int(info["uid"]), info["score"]) == (net.uids["miner"], "0.800")
            assert assert_plays(page, "music-audio") == pytest.approx(4.0, abs=0.3)

            page.wait_for_function(
                "document.getElementById('usage').textContent.includes('4 requests')"
            )
            assert errors == []
        finally:
            browser.close()

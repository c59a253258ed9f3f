"""The dashboard over a real validator's state, checked in headless Chromium: the page lists
the network's miners and its audio players load playable audio."""

from __future__ import annotations

import asyncio
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from chorus.chain.local import LocalChain
from chorus.dashboard import create_dashboard_app
from chorus.generation.tts import DegradedTTS
from chorus.miner import Miner, create_app
from chorus.services.clone import CloneResult
from chorus.services.tts import MOS, SpeechResult
from chorus.store import Answer, ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, free_port, make_net

CHROMIUM = os.environ.get("CHORUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Validated:
    """A validator's store after its rounds, the chain, the uids of the honest, degraded
    and dead miners, and the validator's own uid."""

    store: ValidatorStore
    chain: LocalChain
    uids: list[int]
    validator_uid: int


@pytest.fixture(scope="module")
def validated(tmp_path_factory, piper, tts_evaluator) -> Validated:
    """Two rounds of a real validator over an honest, a degraded and a dead miner."""
    tmp = tmp_path_factory.mktemp("dashnet")
    net = make_net(tmp, miners=3)
    honest, degraded, dead = (w.hotkey.ss58_address for w in net.miners)
    # Slower speech, so the validator's copy detector never mistakes it for the honest one.
    backends = ((honest, piper), (degraded, DegradedTTS(length_scale=1.1)))
    store = ValidatorStore(tmp / "state" / "state.sqlite", tmp / "state" / "samples")
    settings = ValidatorSettings(timeout_s=20, alpha=0.5, weights_interval_blocks=1, seed=11)
    validator = Validator(net.validator, net.chain, store, {"tts": tts_evaluator}, settings)
    with ExitStack() as stack:
        for hotkey, backend in backends:
            app = create_app(Miner(hotkey, net.chain, {"tts": backend}))
            server = stack.enter_context(ThreadServer(app))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
        net.chain.serve_axon(dead, "127.0.0.1", free_port())
        asyncio.run(validator.run(rounds=2))
    uids = [net.chain.neuron(h).uid for h in (honest, degraded, dead)]
    me = net.chain.neuron(validator.hotkey).uid
    return Validated(store, net.chain, uids, me)


def test_page_lists_miners_and_its_audio_plays_in_chromium(validated):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    app = create_dashboard_app(validated.store, validated.chain, validated.validator_uid)
    with ThreadServer(app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            rows = page.locator("#leaderboard tr.miner")
            assert [int(u) for u in rows.evaluate_all("rs => rs.map(r => r.dataset.uid)")] == (
                validated.uids
            )
            assert page.locator("svg.chart polyline").count() >= 2 * len(validated.uids)
            assert page.locator("#timings td", has_text="tts").count() == 1
            players = page.locator("audio")
            assert players.count() >= 4  # two rounds, two miners that answered
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio')].every("
                "a => a.readyState >= 2 && a.duration > 0.5 && !a.error)",
                timeout=20_000,
            )
        finally:
            browser.close()


def test_leaderboard_json_carries_the_chains_weights(validated):
    app = create_dashboard_app(validated.store, validated.chain, validated.validator_uid)
    with ThreadServer(app) as server:
        board = httpx.get(server.url + "/api/leaderboard").json()
    honest, degraded, dead = validated.uids
    assert [row["uid"] for row in board] == [honest, degraded, dead]
    # exactly what this validator last set on the chain (chorus.incentive decides how much
    # the degraded miner gets, down to nothing), and nothing for a miner never heard from
    on_chain = validated.chain.weights()[validated.validator_uid]
    assert {row["uid"]: row["weight"] for row in board} == {
        uid: on_chain.get(uid, 0.0) for uid in validated.uids
    }
    assert board[0]["weight"] > board[1]["weight"] and board[2]["weight"] == 0
    assert sum(row["weight"] for row in board) == pytest.approx(1.0)
    # The TTS columns, averaged over each miner's answers; the dead miner has none.
    assert board[0]["columns"]["WER"] <= 0.2
    assert board[0]["columns"]["MOS"] > board[1]["columns"]["MOS"]
    assert board[2]["columns"] == {}


def test_samples_are_served_only_from_the_samples_folder(validated):
    store = validated.store
    (store.path.parent / "secret.wav").write_bytes(b"RIFF not for you")
    name = next(a.sample for a in store.answers() if a.sample)
    with ThreadServer(create_dashboard_app(store)) as server:
        ok = httpx.get(f"{server.url}/samples/{name}")
        refused = [
            httpx.get(server.url + path)
            for path in (
                "/samples/..%2Fsecret.wav",
                "/samples/%2e%2e%2fstate.sqlite",
                "/samples/..%5Csecret.wav",
                "/samples/nothing.wav",
                "/samples/.hidden.wav",
            )
        ]
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/flac"
    assert ok.content[:4] == b"fLaC"
    assert [r.status_code for r in refused] == [404] * len(refused)


def test_empty_state_says_so(tmp_path):
    store = ValidatorStore(tmp_path / "state.sqlite")
    with ThreadServer(create_dashboard_app(store)) as server:
        page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "No miner has been scored yet" in page.text


def test_leaderboard_columns_come_from_each_services_results(tmp_path):
    """WER is a column of tts and of clone (averaged over both), MOS of tts alone, and
    speaker similarity of clone alone; the page shows each."""
    store = ValidatorStore(tmp_path / "state.sqlite")
    speech = SpeechResult(score=0.8, wer=0.1, mos=MOS(p808=4.0, ovrl=3.2, sig=3.5, bak=4.1))
    clone = CloneResult(score=0.5, wer=0.3, speaker_similarity=0.75)
    answers = [
        Answer(1, "hk-1", "tts", "Say this.", 0.8, result=speech),
        Answer(1, "hk-1", "clone", "[slt] Say that.", 0.5, result=clone),
    ]
    store.record_round(1, answers, alpha=0.0)
    with ThreadServer(create_dashboard_app(store)) as server:
        (row,) = httpx.get(server.url + "/api/leaderboard").json()
        page = httpx.get(server.url + "/").text
    assert row["columns"] == {
        "WER": pytest.approx(0.2),
        "MOS": pytest.approx(4.0),
        "similarity": pytest.approx(0.75),
    }
    assert row["services"] == {"tts": pytest.approx(0.8), "clone": pytest.approx(0.5)}
    assert "<th>similarity</th>" in page and "<td>0.750</td>" in page

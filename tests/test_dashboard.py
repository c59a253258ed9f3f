"""The dashboard over a real validator's state, checked in headless Chromium: the page lists
the network's miners and its audio players load playable audio."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import sync_playwright

from chorus.dashboard import create_dashboard_app
from chorus.generation.tts import DegradedTTS
from chorus.miner import Miner, create_app
from chorus.store import ValidatorStore
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


@pytest.fixture(scope="module")
def validated(tmp_path_factory, piper, tts_evaluator):
    """Two rounds of a real validator over an honest, a degraded and a dead miner."""
    tmp = tmp_path_factory.mktemp("dashnet")
    net = make_net(tmp, miners=3)
    honest, degraded, dead = (w.hotkey.ss58_address for w in net.miners)
    servers = [
        ThreadServer(create_app(Miner(honest, net.chain, {"tts": piper}))),
        # Slower speech, so the validator's copy detector never mistakes it for the honest one.
        ThreadServer(
            create_app(Miner(degraded, net.chain, {"tts": DegradedTTS(length_scale=1.1)}))
        ),
    ]
    for hotkey, server in zip((honest, degraded), servers, strict=True):
        server.__enter__()
        net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
    net.chain.serve_axon(dead, "127.0.0.1", free_port())
    store = ValidatorStore(tmp / "state" / "state.sqlite", tmp / "state" / "samples")
    settings = ValidatorSettings(timeout_s=20, alpha=0.5, weights_interval_blocks=1, seed=11)
    validator = Validator(net.validator, net.chain, store, {"tts": tts_evaluator}, settings)
    try:
        asyncio.run(validator.run(rounds=2))
    finally:
        for server in servers:
            server.__exit__()
    uids = [net.chain.neuron(h).uid for h in (honest, degraded, dead)]
    me = net.chain.neuron(validator.hotkey).uid
    return SimpleNamespace(store=store, chain=net.chain, uids=uids, validator_uid=me)


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
    assert board[0]["weight"] > board[1]["weight"] > 0 and board[2]["weight"] == 0
    assert sum(row["weight"] for row in board) == pytest.approx(1.0)


def test_samples_are_served_only_from_the_samples_folder(validated):
    store = validated.store
    (store.path.parent / "secret.wav").write_bytes(b"RIFF not for you")
    name = next(a["sample"] for a in store.answers() if a["sample"])
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

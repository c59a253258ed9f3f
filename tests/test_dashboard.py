"""The dashboard over a real validator's state, checked in headless Chromium: the page lists
the network's miners and its audio players load playable audio."""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from chorus.chain import Epoch
from chorus.chain.local import LocalChain
from chorus.dashboard import create_dashboard_app
from chorus.generation.tts import DegradedTTS
from chorus.miner import Miner, create_app
from chorus.scoring.quality import MOS
from chorus.services.clone import CloneResult
from chorus.services.tts import SpeechResult
from chorus.store import Answer, ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.servers import ThreadServer, free_port, make_net


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
            # an epoch comes every 360 blocks of 1 s: this run may or may not have seen one
            epoch = page.locator("#epoch").inner_text()
            assert re.fullmatch(r"no epoch yet \(block \d+\)|last epoch at block \d+, .*", epoch)
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
        epoch = httpx.get(server.url + "/api/epoch")
    assert page.status_code == 200 and "No miner has been scored yet" in page.text
    # no chain: no epoch, and a dash for this validator's trust
    assert "no epoch yet (no chain given)" in page.text
    assert 'id="validator-trust">–</b>' in page.text
    assert epoch.status_code == 200 and epoch.json() is None


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


# -- the chain's last epoch ---------------------------------------------------------------

STAKES = {"validator-a": 90.0, "validator-b": 10.0}
# Validator A (90 % of the stake) weighs the miners 3:1, B the other way round.
WEIGHTS = {"validator-a": {2: 0.75, 3: 0.25}, "validator-b": {2: 0.25, 3: 0.75}}


@dataclass
class Epoched:
    """A local chain past an epoch that saw both validators' weights, and a store that
    scored its two miners and a uid no longer on the chain."""

    chain: LocalChain
    store: ValidatorStore
    set_at: int  # the block by which both validators had set their weights


@pytest.fixture
def epoched(tmp_path) -> Epoched:
    chain = LocalChain(tmp_path / "chain.sqlite", block_seconds=0.05, tempo=2)
    for hotkey, stake in STAKES.items():
        chain.register(hotkey, "cold", stake, validator_permit=True)  # uids 0, 1
    for hotkey in ("miner-2", "miner-3"):
        chain.register(hotkey, "cold")  # uids 2, 3
    time.sleep(0.15)  # weights set in a miner's registration block would not count
    for hotkey, weights in WEIGHTS.items():
        chain.set_weights(hotkey, weights)
    set_at = chain.block()
    deadline = time.monotonic() + 20
    while (epoch := chain.last_epoch()) is None or epoch.block <= set_at:
        assert time.monotonic() < deadline, "the local chain ran no epoch"
        time.sleep(0.05)
    store = ValidatorStore(tmp_path / "state.sqlite")
    answers = [
        Answer(2, "miner-2", "tts", "Say this.", 0.9),
        Answer(3, "miner-3", "tts", "Say this.", 0.4),
        Answer(7, "deregistered", "tts", "Say this.", 0.1),
    ]
    store.record_round(1, answers, alpha=0.0)
    return Epoched(chain, store, set_at)


# Worked out by hand from chorus.yuma: consensus is A's weights (the stake-weighted
# median, A holding 90 %), so B's weights are clipped to (0.25, 0.25): B's validator trust
# is 0.5, A's 1. Ranks are 0.9 * 0.75 + 0.1 * 0.25 = 0.7 and 0.9 * 0.25 + 0.1 * 0.25 = 0.25,
# so the incentives are 0.7 / 0.95 = 14/19 and 5/19. An epoch pays 2 blocks x 1 alpha less
# the owner's 18 % = 1.64, half to the miners by incentive.
INCENTIVE = {2: 14 / 19, 3: 5 / 19}
EMISSION = {uid: 1.64 * share / 2 for uid, share in INCENTIVE.items()}
VALIDATOR_TRUST = {0: 1.0, 1: 0.5}


def epoch_at(chain: LocalChain, block: int) -> Epoch:
    return next(e for e in chain.epochs() if e.block == block)


def test_leaderboard_json_carries_each_miners_incentive_and_emission(epoched):
    app = create_dashboard_app(epoched.store, epoched.chain, validator_uid=1)
    with ThreadServer(app) as server:
        board = httpx.get(server.url + "/api/leaderboard").json()
        epoch = httpx.get(server.url + "/api/epoch").json()
    rows = {row["uid"]: row for row in board}
    assert sorted(rows) == [2, 3, 7]
    for uid in (2, 3):
        assert rows[uid]["incentive"] == pytest.approx(INCENTIVE[uid])
        assert rows[uid]["emission"] == pytest.approx(EMISSION[uid])
        assert rows[uid]["weight"] == pytest.approx(WEIGHTS["validator-b"][uid])
    # uid 7 is not on the chain: nothing is known of it (its weight from B is nothing)
    assert (rows[7]["incentive"], rows[7]["emission"], rows[7]["weight"]) == (None, None, 0.0)
    # /api/epoch is the chain's own epoch, as Epoch.to_json gives it
    assert epoch["block"] > epoched.set_at
    assert epoch == epoch_at(epoched.chain, epoch["block"]).to_json()
    trust = {s["uid"]: s["validator_trust"] for s in epoch["neurons"]}
    assert trust == pytest.approx({**VALIDATOR_TRUST, 2: 0.0, 3: 0.0})


def test_page_shows_the_epoch_and_this_validators_trust(epoched):
    for uid, hotkey in enumerate(STAKES):
        app = create_dashboard_app(epoched.store, epoched.chain, validator_uid=uid)
        with ThreadServer(app) as server:
            page = httpx.get(server.url + "/").text
        block = int(re.search(r'id="epoch-block">(\d+)<', page).group(1))
        me = epoch_at(epoched.chain, block).standing(uid)
        assert me.hotkey == hotkey and me.validator_trust == pytest.approx(VALIDATOR_TRUST[uid])
        assert me.dividends > 0 and me.emission > 0
        assert f'id="validator-trust">{VALIDATOR_TRUST[uid]:.3f}</b>' in page
        assert f'id="dividends">{me.dividends:.3f}</span>' in page
        assert f'id="emission">{me.emission:.4f}</span>' in page
        assert f"this validator (uid {uid})" in page and "no epoch yet" not in page
        # both validators are listed, this one marked
        assert re.findall(r'<tr class="validator( me)?" data-uid="(\d)"', page) == [
            (" me" if uid == 0 else "", "0"),
            (" me" if uid == 1 else "", "1"),
        ]
    # the leaderboard: score, weight (B's), incentive, emission; dashes for uid 7
    miners = re.findall(r'<tr class="miner" data-uid="(\d)">(.*?)</tr>', page)
    assert [uid for uid, _ in miners] == ["2", "3", "7"]
    for uid, row in miners:
        # rank, uid, then (past the hotkey's cell) score, weight, incentive, emission
        cells = re.findall(r"<td>(?:<b>)?([^<]*)", row)[2:6]
        if uid == "7":
            assert cells[1:] == ["0.000", "–", "–"]
        else:
            u = int(uid)
            expected = [f"{WEIGHTS['validator-b'][u]:.3f}", f"{INCENTIVE[u]:.3f}"]
            assert cells[1:] == [*expected, f"{EMISSION[u]:.4f}"]
    assert "<th>weight</th>" in page and ">incentive</th>" in page and ">emission</th>" in page


def test_page_without_a_validator_uid_lists_the_validators(epoched):
    with ThreadServer(create_dashboard_app(epoched.store, epoched.chain)) as server:
        page = httpx.get(server.url + "/").text
    assert "pass --validator-uid" in page and 'id="validator-trust">–</b>' in page
    assert re.findall(r'<tr class="validator" data-uid="(\d)"', page) == ["0", "1"]
    assert "<td>1.000</td>" in page and "<td>0.500</td>" in page  # their validator trust


def test_no_epoch_yet_shows_dashes(tmp_path):
    chain = LocalChain(tmp_path / "chain.sqlite", block_seconds=0.05, tempo=65535)
    chain.register("validator", "cold", 10.0, validator_permit=True)
    chain.register("miner", "cold")
    store = ValidatorStore(tmp_path / "state.sqlite")
    store.record_round(1, [Answer(1, "miner", "tts", "Say this.", 0.5)], alpha=0.0)
    with ThreadServer(create_dashboard_app(store, chain, validator_uid=0)) as server:
        page = httpx.get(server.url + "/").text
        (row,) = httpx.get(server.url + "/api/leaderboard").json()
        epoch = httpx.get(server.url + "/api/epoch")
    assert epoch.status_code == 200 and epoch.json() is None
    assert (row["incentive"], row["emission"], row["weight"]) == (None, None, 0.0)
    assert re.search(r"no epoch yet \(block \d+\)", page)
    assert 'id="validator-trust">–</b>' in page and 'id="emission">–</span>' in page
    assert 'id="validators"' not in page


def test_health_shows_fault_counts_and_lost_weight_commits(tmp_path):
    """The validator never stops for a fault; the page says how many and which commits
    a commit-reveal chain dropped at the reveal."""
    from chorus.chain import WeightCommit
    from chorus.chain.local import LocalChain

    class CommitRevealChain(LocalChain):
        def weight_commits(self) -> list[WeightCommit]:
            return [
                WeightCommit("hk", 0, 90, 7, 100, {1: 65535}, "lost", "no validator permit"),
                WeightCommit("hk", 0, 120, 9, 130, {1: 65535}),
            ]

    store = ValidatorStore(tmp_path / "state.sqlite", tmp_path / "samples")
    store.set_meta("faults", json.dumps({"chain": 3, "scoring": 0, "weights": 1, "round": 0}))
    store.set_meta("last_fault", "1764640000 chain TypeError: boom")
    app = create_dashboard_app(store, CommitRevealChain(tmp_path / "chain.sqlite"), 0)
    with ThreadServer(app) as server:
        page = httpx.get(f"{server.url}/").text
        health = httpx.get(f"{server.url}/health").json()
    assert "chain 3 · scoring 0 · weights 1 · round 0" in page
    assert "TypeError: boom" in page and "2025-12-02" in page
    assert "<tr class='bad'><td>0</td><td>90</td><td>100</td><td>lost</td>" in page
    assert "no validator permit" in page and "<td>pending</td>" in page
    assert health["faults"] == {"chain": 3, "scoring": 0, "weights": 1, "round": 0}

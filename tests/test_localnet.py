"""Several validators on the local chain: lazy validators, agreement, what `chorus chain`
shows after epochs, and one whole local network run end to end."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chorus.chain.local import LocalChain
from chorus.localnet import agreement, lazy_weights
from tests.cli import run_chorus


def _subnet(path, tempo=2):
    """Two validators (stake 3:1) and three miners on a fast clock."""
    chain = LocalChain(path, block_seconds=0.05, tempo=tempo)
    chain.register("v-big", "ck", 300.0, True)
    chain.register("v-small", "ck", 100.0, True)
    for m in ("m-a", "m-b", "m-c"):
        chain.register(m, "ck")
    # weights set in a miner's registration block count for nothing (the chain's rule that
    # masks weights meant for a uid's previous owner): let a few blocks pass
    time.sleep(0.15)
    return chain


def _wait_epoch(chain, after):
    deadline = time.monotonic() + 5
    while (e := chain.last_epoch()) is None or e.block <= after:
        assert time.monotonic() < deadline, "no epoch came"
        time.sleep(0.05)
    return e


def test_random_lazy_validator_weights_every_miner_and_only_miners(tmp_path):
    chain = _subnet(tmp_path / "c.sqlite")
    weights = lazy_weights("random", chain, random.Random(1))
    assert set(weights) == {2, 3, 4}  # validators (uids 0, 1) hold permits: not miners
    assert len(set(weights.values())) == 3 and all(0 <= w < 1 for w in weights.values())


def test_copying_lazy_validator_sets_the_last_consensus(tmp_path):
    chain = _subnet(tmp_path / "c.sqlite")
    assert lazy_weights("copy", chain, random.Random(1)) is None  # nothing to copy yet
    chain.set_weights("v-big", {2: 0.7, 3: 0.3})
    chain.set_weights("v-small", {2: 0.2, 3: 0.8})
    _wait_epoch(chain, chain.block())
    # consensus is the stake-weighted median: v-big's 3/4 of the stake decides both
    copied = lazy_weights("copy", chain, random.Random(1))
    assert copied == pytest.approx({2: 0.7, 3: 0.3})


def test_agreement_is_spearman_over_miners():
    weights = {"a": {1: 0.6, 2: 0.3, 3: 0.1}, "b": {1: 0.5, 2: 0.4, 3: 0.1}, "c": {3: 1.0}}
    pairs = {(x.a, x.b): x for x in agreement(weights, [1, 2, 3])}
    by_pair = {k: x.spearman for k, x in pairs.items()}
    assert by_pair[("a", "b")] == pytest.approx(1.0)
    # overlap: min(0.6, 0.5) + min(0.3, 0.4) + min(0.1, 0.1)
    assert pairs[("a", "b")].overlap == pytest.approx(0.9)
    # c ranks 3 first and ties 1 and 2: ranks (1.5, 1.5, 3) against (3, 2, 1)
    assert by_pair[("a", "c")] == pytest.approx(-0.866, abs=1e-3)
    # a validator with no weights yet has no ranking to compare
    assert agreement({"a": weights["a"], "d": {}}, [1, 2, 3])[0].spearman is None


def test_chain_show_and_epochs_report_yuma_results(tmp_path):
    path = tmp_path / "c.sqlite"
    # Commands that do not depend on each other run side by side (each is mostly start-up).
    with ThreadPoolExecutor(3) as pool:
        on_bittensor = pool.submit(run_chorus, "chain", "epochs", "--chain", "bittensor",
                                   "--netuid", "1")  # fmt: skip
        r = run_chorus("chain", "init", "--chain-path", str(path), "--block-seconds", "0.05",
                       "--tempo", "2", "--yuma", "2", root=tmp_path)  # fmt: skip
        assert r.returncode == 0 and "tempo 2 blocks, Yuma 2" in r.stdout, r.stderr
        chain = _subnet(path)
        shown = json.loads(run_chorus("chain", "show", "--json", "--chain-path", str(path)).stdout)
        # epochs came (the command takes longer than a tempo) but nobody has set weights:
        # no incentive, and the validators are paid by stake, 3:1, as on the chain
        rows = shown["neurons"]
        assert shown["epoch_block"] is not None and rows[2]["incentive"] == 0.0
        assert rows[0]["emission"] == pytest.approx(3 * rows[1]["emission"]) and rows[0]["emission"]
        chain.set_weights("v-big", {2: 0.9, 3: 0.1})
        chain.set_weights("v-small", {2: 0.1, 3: 0.9})
        epoch = _wait_epoch(chain, chain.block())
        show_text = pool.submit(run_chorus, "chain", "show", "--chain-path", str(path))
        history_json = pool.submit(run_chorus, "chain", "epochs", "--json", "--chain-path",
                                   str(path))  # fmt: skip
        shown = json.loads(run_chorus("chain", "show", "--json", "--chain-path", str(path)).stdout)
        assert shown["epoch_block"] >= epoch.block
        fields = {"stake", "validator_permit", "rank", "trust", "consensus", "incentive",
                  "dividends", "emission", "validator_trust"}  # fmt: skip
        assert all(fields <= row.keys() for row in shown["neurons"])
        by_uid = {row["uid"]: row for row in shown["neurons"]}
        # the big validator decides: consensus (0.9, 0.1), the small one is clipped to it
        assert by_uid[2]["consensus"] == pytest.approx(0.9) and by_uid[3]["consensus"] == 0.1
        assert by_uid[0]["validator_trust"] == pytest.approx(1.0)
        assert by_uid[1]["validator_trust"] == pytest.approx(0.2)
        # ranks: 0.75 * 0.9 + 0.25 * 0.1 = 0.7 and 0.75 * 0.1 + 0.25 * 0.1 = 0.1
        assert by_uid[2]["incentive"] == pytest.approx(0.7 / 0.8)
        assert sum(r["incentive"] for r in shown["neurons"]) == pytest.approx(1.0)
        text = show_text.result().stdout
        assert "last epoch at block" in text and "vtrust" in text
        history = json.loads(history_json.result().stdout)
        assert [e["block"] for e in history] == sorted(e["block"] for e in history)
        assert history[-1]["block"] >= epoch.block and len(history[-1]["neurons"]) == 5
        r = on_bittensor.result()
        assert r.returncode == 2 and "chain show" in r.stderr


def test_chain_init_refuses_bad_settings(tmp_path):
    r = run_chorus("chain", "init", "--chain-path", str(tmp_path / "c"), "--tempo", "0")
    assert r.returncode == 2 and "tempo" in r.stderr and "Traceback" not in r.stderr


def test_localnet_pays_the_honest_miner_and_trusts_honest_validators(tmp_path):
    """Two honest validators (stakes 1000 and 600, their own prompts) and one setting
    random weights, three miners (piper, degraded, hang), TTS only, three rounds: Yuma
    gives the honest miner the incentive and the random validator less trust."""
    report = tmp_path / "report.json"
    r = run_chorus(
        "localnet", "--miners", "3", "--validators", "2", "--lazy-validator", "random",
        "--rounds", "3", "--services", "tts", "--timeout", "5", "--out", str(tmp_path / "net"),
        "--port", "18611", "--report", str(report),
        root=tmp_path, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["honest_incentive_share"] >= 0.8, out
    by_name = {v["name"]: v for v in out["validators"]}
    honest = [by_name["validator-0"], by_name["validator-1"]]
    assert [v["stake"] for v in honest] == [1000.0, 600.0]
    assert all(v["validator_trust"] >= 0.9 for v in honest), out
    assert by_name["validator-random"]["validator_trust"] < min(
        v["validator_trust"] for v in honest
    )
    assert out["agreement"][0]["spearman"] is not None and out["agreement"][0]["spearman"] > 0.4
    assert "honest miners' share of the miners' incentive" in r.stdout

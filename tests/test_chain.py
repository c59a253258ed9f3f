"""The local chain: registration, axons, weights and the block clock, in a real SQLite file."""

from __future__ import annotations

import math

import pytest

from chorus.chain import ChainError
from chorus.chain.local import LocalChain


@pytest.fixture
def chain(tmp_path):
    return LocalChain(tmp_path / "chain.sqlite", block_seconds=0.05)


def test_register_assigns_lowest_free_uid_and_updates_in_place(chain):
    a = chain.register("hk-a", "ck-a", 10.0, True)
    b = chain.register("hk-b", "ck-b")
    assert (a.uid, b.uid) == (0, 1)
    again = chain.register("hk-a", "ck-a", 25.0, True)
    assert again.uid == 0 and again.stake == 25.0 and len(chain.neurons()) == 2


def test_serve_axon_publishes_url(chain):
    chain.register("hk-m", "ck")
    assert chain.neuron("hk-m").url is None
    chain.serve_axon("hk-m", "127.0.0.1", 8091)
    assert chain.neuron("hk-m").url == "http://127.0.0.1:8091"
    with pytest.raises(ChainError, match="not registered"):
        chain.serve_axon("hk-unknown", "127.0.0.1", 1)


def test_weights_are_normalised_and_need_a_permit(chain):
    v = chain.register("hk-v", "ck", 100.0, True)
    chain.register("hk-m", "ck")
    chain.set_weights("hk-v", {1: 3.0, 2: 1.0, 3: math.nan, 4: -2.0})
    assert chain.weights() == {v.uid: {1: 0.75, 2: 0.25}}
    with pytest.raises(ChainError, match="no validator permit"):
        chain.set_weights("hk-m", {0: 1.0})


def test_block_clock_advances_and_persists(tmp_path):
    import time

    chain = LocalChain(tmp_path / "c.sqlite", block_seconds=0.05)
    first = chain.block()
    time.sleep(0.2)
    reopened = LocalChain(tmp_path / "c.sqlite")
    assert reopened.block() >= first + 3


def test_negative_stake_is_refused(chain):
    with pytest.raises(ChainError, match="non-negative"):
        chain.register("hk", "ck", -1.0)

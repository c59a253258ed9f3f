"""Yuma epochs on the local chain (a real SQLite file): when they run, what they store,
and how registrations, permits and weights between epochs show up in them.

Most tests drive the block clock by hand (``clock``) so the block each call happens in
is exact; the chain only reads the time through ``time.time()`` in chorus.chain.local.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from chorus.chain import ChainError
from chorus.chain import local as local_chain
from chorus.chain.local import LocalChain
from chorus.yuma import OWNER_CUT


class Clock:
    """A stand-in for the ``time`` module: ``time()`` is whatever the test says (the
    chain's genesis is the moment the file is created, so block b is ``goto(b)``)."""

    def __init__(self) -> None:
        self.genesis = 1_000_000.0
        self.now = self.genesis

    def time(self) -> float:
        return self.now

    def goto(self, block: int) -> None:
        self.now = self.genesis + block + 0.5  # mid-block, with block_seconds=1

    def __getattr__(self, name):  # anything else the module might use
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(local_chain, "time", c)
    return c


def make_chain(path, tempo=10, yuma_version=3) -> LocalChain:
    return LocalChain(path, block_seconds=1.0, tempo=tempo, yuma_version=yuma_version)


def test_epochs_run_every_tempo_blocks_and_are_stored(tmp_path, clock):
    chain = make_chain(tmp_path / "c.sqlite", tempo=10)
    chain.register("v", "ck", 100.0, True)
    chain.register("m", "ck")
    clock.goto(1)
    chain.set_weights("v", {1: 1.0})
    assert chain.epochs() == []
    clock.goto(35)
    assert chain.run_due_epochs() == 3
    assert chain.run_due_epochs() == 0
    assert [e.block for e in chain.epochs()] == [10, 20, 30]
    clock.goto(39)
    assert chain.run_due_epochs() == 0
    clock.goto(40)
    assert chain.last_epoch().block == 40  # reading runs what is due
    # stored in the file: another handle (another process) sees the same epochs
    again = LocalChain(tmp_path / "c.sqlite")
    assert [e.block for e in again.epochs()] == [10, 20, 30, 40]
    assert [e.block for e in again.epochs(limit=2)] == [30, 40]
    assert again.last_epoch().standing(1).incentive == pytest.approx(1.0)


def test_missed_epochs_are_caught_up_to_a_limit(tmp_path, clock):
    chain = make_chain(tmp_path / "c.sqlite", tempo=1)
    chain.register("v", "ck", 1.0, True)
    clock.goto(local_chain.MAX_CATCH_UP + 50)
    assert chain.run_due_epochs() == local_chain.MAX_CATCH_UP
    blocks = [e.block for e in chain.epochs()]
    assert blocks == list(range(51, local_chain.MAX_CATCH_UP + 51))


def test_last_epoch_reflects_the_weights(tmp_path, clock):
    """One validator weighs miners 3:1. I = [.75, .25], C = the weights, trust 1,
    vtrust 1, D = 1; 10 blocks emit 10: owner 1.8, validator 8.2/2, miners 4.1 * I."""
    chain = make_chain(tmp_path / "c.sqlite", tempo=10)
    chain.register("v", "ck", 100.0, True)
    chain.register("m1", "ck")
    chain.register("m2", "ck")
    clock.goto(1)
    chain.set_weights("v", {1: 3.0, 2: 1.0})
    clock.goto(10)
    e = chain.last_epoch()
    assert e.block == 10
    v, m1, m2 = e.standing(0), e.standing(1), e.standing(2)
    assert (v.hotkey, m1.hotkey, m2.hotkey) == ("v", "m1", "m2")
    assert (m1.incentive, m2.incentive) == pytest.approx((0.75, 0.25))
    assert (m1.consensus, m2.consensus) == pytest.approx((0.75, 0.25))
    assert (m1.trust, m2.trust) == pytest.approx((1.0, 1.0))
    assert (v.dividends, v.validator_trust, v.incentive) == pytest.approx((1.0, 1.0, 0.0))
    assert v.stake == 100.0 and v.validator_permit and not m1.validator_permit
    assert e.owner_emission == pytest.approx(10 * OWNER_CUT)
    assert (v.emission, m1.emission, m2.emission) == pytest.approx((4.1, 3.075, 1.025))
    assert sum(s.emission for s in e.neurons) + e.owner_emission == pytest.approx(10.0)
    assert chain.bonds() == {0: pytest.approx({1: 0.075, 2: 0.025})}  # .1 * W (Yuma 3)


def test_weights_set_after_an_epoch_block_do_not_change_that_epoch(tmp_path, clock):
    chain = make_chain(tmp_path / "c.sqlite", tempo=10)
    chain.register("v", "ck", 100.0, True)
    chain.register("m1", "ck")
    chain.register("m2", "ck")
    clock.goto(1)
    chain.set_weights("v", {1: 1.0})
    clock.goto(12)  # epoch 10 is due but nobody has touched the chain since
    chain.set_weights("v", {2: 1.0})  # runs epoch 10 first, with the old weights
    chain.register("m3", "ck")  # nor does a registration after its block show in it
    clock.goto(25)
    e10, e20 = chain.epochs()
    assert (e10.block, e20.block) == (10, 20)
    assert (e10.standing(1).incentive, e10.standing(2).incentive) == (1.0, 0.0)
    assert (e20.standing(1).incentive, e20.standing(2).incentive) == (0.0, 1.0)
    assert e10.standing(3) is None and e20.standing(3).hotkey == "m3"


@pytest.mark.parametrize("yuma_version", [3, 2])
def test_a_validator_whose_permit_is_removed_stops_counting(tmp_path, clock, yuma_version):
    """V0 (stake 40) backs miner 2, V1 (stake 60) miner 3: in epoch 10 V1's miner has
    the consensus. V1 is registered again without a permit at block 12; from epoch 20
    its weights, stake and bonds stop counting: V0's miner gets everything and V1 earns
    nothing, under either bond model."""
    chain = make_chain(tmp_path / "c.sqlite", tempo=10, yuma_version=yuma_version)
    chain.register("v0", "ck", 40.0, True)
    chain.register("v1", "ck", 60.0, True)
    chain.register("m2", "ck")
    chain.register("m3", "ck")
    clock.goto(1)
    chain.set_weights("v0", {2: 1.0})
    chain.set_weights("v1", {3: 1.0})
    clock.goto(12)  # epoch 10 is due, not yet run: the permit still counts in it
    chain.register("v1", "ck", 60.0, validator_permit=False)
    clock.goto(20)
    e10, e = chain.epochs()
    assert (e10.block, e.block) == (10, 20)
    assert e10.standing(1).validator_permit
    assert (e10.standing(2).incentive, e10.standing(3).incentive) == (0.0, 1.0)
    assert e10.standing(1).dividends == pytest.approx(1.0)
    assert not e.standing(1).validator_permit
    assert (e.standing(2).incentive, e.standing(3).incentive) == (1.0, 0.0)
    assert (e.standing(0).validator_trust, e.standing(1).validator_trust) == (1.0, 0.0)
    assert (e.standing(0).dividends, e.standing(1).dividends) == (1.0, 0.0)
    assert e.standing(1).emission == 0.0
    assert 1 not in chain.bonds()


def test_a_new_hotkey_in_a_freed_uid_starts_from_nothing(tmp_path, clock):
    """V backs miner M (uid 1). M deregisters and N registers into uid 1 at block 22.
    Epoch 30: V's weights predate N, so they are ignored: N's incentive is 0, M's old
    bonds are gone, and with no usable weights V is paid by stake (8.2 of 10). Once V
    weighs uid 1 again (block 31), epoch 40 pays N and V's bond on it starts afresh at
    .1 * 1 (what a first epoch gives, with nothing inherited from M's .19)."""
    chain = make_chain(tmp_path / "c.sqlite", tempo=10)
    chain.register("v", "ck", 100.0, True)
    chain.register("m", "ck")
    clock.goto(1)
    chain.set_weights("v", {1: 1.0})
    clock.goto(20)
    assert chain.last_epoch().standing(1).incentive == 1.0
    assert chain.bonds()[0][1] == pytest.approx(0.19)  # .1 + .9 * .1 after two epochs
    clock.goto(22)
    chain.deregister("m")
    assert chain.bonds() == {}
    assert chain.register("n", "ck").uid == 1
    clock.goto(30)
    e = chain.last_epoch()
    assert e.block == 30
    assert (e.standing(1).hotkey, e.standing(1).incentive, e.standing(1).emission) == ("n", 0, 0)
    assert e.standing(0).emission == pytest.approx(8.2)
    assert chain.bonds() == {}
    clock.goto(31)
    chain.set_weights("v", {1: 1.0})
    clock.goto(40)
    e = chain.last_epoch()
    assert e.standing(1).incentive == 1.0
    assert chain.bonds() == {0: {1: pytest.approx(0.1)}}


def test_concurrent_callers_run_each_epoch_once(tmp_path, clock):
    """Eight handles on the same file (as eight processes would have) race to run the
    due epochs, three times over. Each epoch runs exactly once: the counts they report
    add up to the epochs due, every block appears once, and the bond (1 - .9^k after k
    epochs with the same weights, Yuma 3) shows no epoch was applied twice."""
    path = tmp_path / "c.sqlite"
    chain = make_chain(path, tempo=1)
    chain.register("v", "ck", 100.0, True)
    chain.register("m", "ck")
    clock.goto(1)
    chain.set_weights("v", {1: 1.0})  # epoch 1 ran first, without these weights
    handles = [LocalChain(path) for _ in range(8)]
    counts: list[int] = []
    errors: list[BaseException] = []
    for upto in (41, 42, 80):
        clock.goto(upto)
        barrier = threading.Barrier(len(handles))

        def run(handle, barrier=barrier):
            try:
                barrier.wait()
                counts.append(handle.run_due_epochs())
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(h,)) for h in handles]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert sum(counts) == 79  # blocks 2..80
    blocks = [e.block for e in chain.epochs()]
    assert blocks == list(range(1, 81))
    assert chain.bonds()[0][1] == pytest.approx(1 - 0.9**79)


def test_settings_persist_across_reopening(tmp_path, clock):
    path = tmp_path / "c.sqlite"
    LocalChain(path, block_seconds=2.0, tempo=7, yuma_version=2)
    reopened = LocalChain(path)
    assert reopened.tempo == 7
    assert reopened.params().yuma == 2
    clock.goto(21)  # 2 s blocks: block 10
    assert reopened.block() == 10
    LocalChain(path, tempo=9, yuma_version=3)  # given again, they change
    reopened = LocalChain(path)
    assert (reopened.tempo, reopened.params().yuma) == (9, 3)


@pytest.mark.parametrize("yuma_version, bonds", [(3, [0.1, 0.1]), (2, [0.75, 0.25])])
def test_the_yuma_version_decides_the_bond_model(tmp_path, clock, yuma_version, bonds):
    """Two validators (stake 3:1) both back the one miner. Yuma 3 bonds: .1 * W each;
    Yuma 2 bonds: the miner's stake-weighted shares."""
    path = tmp_path / "c.sqlite"
    make_chain(path, yuma_version=yuma_version)
    chain = LocalChain(path)  # the version comes from the file
    chain.register("v0", "ck", 75.0, True)
    chain.register("v1", "ck", 25.0, True)
    chain.register("m", "ck")
    clock.goto(1)
    chain.set_weights("v0", {2: 1.0})
    chain.set_weights("v1", {2: 1.0})
    clock.goto(10)
    chain.run_due_epochs()
    assert chain.bonds() == {0: {2: pytest.approx(bonds[0])}, 1: {2: pytest.approx(bonds[1])}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tempo": 0},
        {"tempo": -5},
        {"tempo": 65536},
        {"yuma_version": 1},
        {"yuma_version": 4},
        {"yuma_version": 0},
        {"block_seconds": 0},
        {"block_seconds": -1.0},
        {"block_seconds": float("nan")},
    ],
)
def test_bad_settings_raise_chain_error_and_change_nothing(tmp_path, kwargs):
    path = tmp_path / "c.sqlite"
    with pytest.raises(ChainError):
        LocalChain(path, **kwargs)
    assert not path.exists()
    LocalChain(path, tempo=5, yuma_version=2)
    with pytest.raises(ChainError):
        LocalChain(path, **kwargs)
    reopened = LocalChain(path)
    assert (reopened.tempo, reopened.params().yuma) == (5, 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"tempo": 2.5}, {"tempo": True}, {"yuma_version": 3.0}, {"block_seconds": math.inf}],
)
def test_non_integer_settings_raise_chain_error(tmp_path, kwargs):
    path = tmp_path / "c.sqlite"
    with pytest.raises(ChainError):
        LocalChain(path, **kwargs)


def test_epochs_follow_the_wall_clock(tmp_path):
    """Without the stand-in clock: 20 ms blocks, an epoch every 2 blocks."""
    chain = LocalChain(tmp_path / "c.sqlite", block_seconds=0.02, tempo=2)
    chain.register("v", "ck", 1.0, True)
    deadline = time.monotonic() + 2.0
    while chain.block() < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    blocks = [e.block for e in chain.epochs()]
    assert len(blocks) >= 2
    assert all(b % 2 == 0 for b in blocks) and blocks == sorted(set(blocks))
    assert blocks[-1] <= chain.block()


def test_changing_the_tempo_runs_no_burst_of_past_epochs(tmp_path):
    """Re-opening with a new tempo anchors epochs at now: none for blocks gone by."""
    path = tmp_path / "c.sqlite"
    LocalChain(path, block_seconds=0.01, tempo=360).register("v", "ck", 1.0, True)
    time.sleep(0.3)  # ~30 blocks: under the old tempo, no epoch was due
    before = LocalChain(path).block()  # opening without a tempo changes nothing
    chain = LocalChain(path, tempo=3)
    # not the ~10 epochs a tempo of 3 would owe since block 0; a bound taken before the
    # reopening, so a slow machine that lets blocks pass after it cannot fail the test
    assert before >= 20
    assert all(e.block > before for e in chain.epochs())


def test_a_new_block_length_keeps_the_current_block(tmp_path):
    path = tmp_path / "c.sqlite"
    before = LocalChain(path, block_seconds=0.01).block()
    time.sleep(0.2)
    moved = LocalChain(path).block()
    assert moved >= before + 10
    slower = LocalChain(path, block_seconds=10.0)
    assert moved <= slower.block() <= moved + 1  # not rescaled back to ~0

"""Yuma Consensus (chorus.yuma) on small matrices whose results can be checked by hand,
plus worked cases traced to subtensor's own tests and to Opentensor's Yuma simulation.

Conventions in the hand computations: uids are validators first, then miners; ``S`` is
the normalised active stake, ``W`` the masked row-normalised weights, ``C`` the consensus
(per miner, the largest weight that validators holding at least kappa of the stake give
it), ``I`` the incentive and ``D`` the dividends. ``alpha = 1 - bonds_moving_average``
is 0.1 with the defaults. Most tests set ``owner_cut=0`` so emission is (I + D) / 2.
"""

from __future__ import annotations

import numpy as np
import pytest

from chorus.yuma import (
    OWNER_CUT,
    EpochInput,
    YumaParams,
    consensus,
    epoch,
    normalize,
    weighted_median,
)

NO_CUT3 = YumaParams(owner_cut=0.0)
NO_CUT2 = YumaParams(owner_cut=0.0, yuma=2)
BOTH = pytest.mark.parametrize("params", [NO_CUT3, NO_CUT2], ids=["yuma3", "yuma2"])
KAPPA = 32767 / 65535  # subtensor's default Kappa (u16) as a fraction


def state(
    stake,
    weights,
    *,
    permit=None,
    last_update=None,
    registered=None,
    bonds=None,
    block=1000,
    tempo=100,
    emission=1.0,
) -> EpochInput:
    """An epoch input; by default validators are those with stake, every neuron was
    registered at block 0 and set its weights the block before the epoch."""
    stake = np.asarray(stake, dtype=float)
    n = len(stake)
    return EpochInput(
        block=block,
        tempo=tempo,
        stake=stake,
        validator_permit=np.asarray(stake > 0 if permit is None else permit, dtype=bool),
        weights=np.asarray(weights, dtype=float),
        bonds=np.zeros((n, n)) if bonds is None else np.asarray(bonds, dtype=float),
        last_update=np.full(n, block - 1) if last_update is None else np.asarray(last_update),
        registered=np.zeros(n, dtype=int) if registered is None else np.asarray(registered),
        emission=emission,
    )


def approx(x, abs=1e-9):  # noqa: A002
    return pytest.approx(np.asarray(x, dtype=float), abs=abs)


# -- the cases the issue asks for -------------------------------------------------


@BOTH
def test_unanimous_validators(params):
    """Three validators (stake 5:3:2) all weigh miners 3, 4 as 3:1, i.e. W = [.75, .25].

    C = [.75, .25] (everyone agrees), nothing is clipped: vtrust = 1, trust = 1,
    I = [.75, .25]. Every validator holds the same bonds shape, so D = stake share
    [.5, .3, .2] under both bond models. Yuma 3 bonds: alpha * W = [.075, .025] per row;
    Yuma 2 bonds: per miner, the stake shares [.5, .3, .2].
    """
    w = np.zeros((5, 5))
    w[:3, 3:] = [3.0, 1.0]
    r = epoch(state([50, 30, 20, 0, 0], w), params)
    assert r.consensus == approx([0, 0, 0, 0.75, 0.25])
    assert r.validator_trust == approx([1, 1, 1, 0, 0])
    assert r.trust == approx([0, 0, 0, 1, 1])
    assert r.incentive == approx([0, 0, 0, 0.75, 0.25])
    assert r.dividends == approx([0.5, 0.3, 0.2, 0, 0])
    assert r.emission == approx([0.25, 0.15, 0.1, 0.375, 0.125])
    if params.yuma == 3:
        assert r.bonds[:3, 3:] == approx([[0.075, 0.025]] * 3)
    else:
        assert r.bonds[:3, 3:] == approx([[0.5, 0.5], [0.3, 0.3], [0.2, 0.2]])


def test_unanimous_emission_with_the_owner_cut():
    """Same as above with the default 18% owner cut and 10 units: the owner gets 1.8,
    miners and validators split the other 8.2 half and half."""
    w = np.zeros((5, 5))
    w[:3, 3:] = [3.0, 1.0]
    r = epoch(state([50, 30, 20, 0, 0], w, emission=10.0))
    assert OWNER_CUT == 0.18
    assert r.owner_emission == pytest.approx(1.8)
    assert r.emission == approx(8.2 * np.array([0.25, 0.15, 0.1, 0.375, 0.125]))


@BOTH
def test_one_dissenting_validator_is_clipped(params):
    """Honest V0, V1 (stake .4 each) weigh miners A, B as [.8, .2]; V2 (.2) dissents
    with [.2, .8].

    C_A: .8 is given by 80% of the stake -> .8; C_B: only 20% give .8, all give >= .2
    -> .2. V2 clipped: [min(.2,.8), min(.8,.2)] = [.2, .2] -> vtrust = 0.4 exactly.
    ranks: A = .8*.8 + .2*.2 = .68, B = .8*.2 + .2*.2 = .2 -> I = [17/22, 5/22].
    preranks: A = .68, B = .8*.2 + .2*.8 = .32 -> trust = [1, .625].
    Yuma 3, bonds = .1 * clipped: honest [.08, .02], V2 [.02, .02]; normalised per
    miner A: [4/9, 4/9, 1/9], B: [1/3]*3; per validator honest 4/9*17/22 + 1/3*5/22 =
    83/198, V2 32/198; D ~ stake * that: honest 33.2/72.8 = 83/182, V2 6.4/72.8 = 8/91.
    Yuma 2, bonds = clipped*S normalised per miner: A [8/17, 8/17, 1/17], B [.4, .4, .2];
    D = B @ I: honest 8/22 + 2/22 = 5/11, V2 1/22 + 1/22 = 1/11.
    """
    w = np.zeros((5, 5))
    w[0, 3:] = w[1, 3:] = [0.8, 0.2]
    w[2, 3:] = [0.2, 0.8]
    r = epoch(state([40, 40, 20, 0, 0], w), params)
    assert r.consensus[3:] == approx([0.8, 0.2])
    assert r.validator_trust == approx([1, 1, 0.4, 0, 0])
    assert r.trust[3:] == approx([1, 0.625])
    assert r.incentive[3:] == approx([17 / 22, 5 / 22])
    if params.yuma == 3:
        assert r.dividends[:3] == approx([83 / 182, 83 / 182, 8 / 91])
    else:
        assert r.dividends[:3] == approx([5 / 11, 5 / 11, 1 / 11])
    # the dissenter earns less than its 20% stake share either way
    assert r.dividends[2] < 0.2


@pytest.mark.parametrize(
    "stake, winner",
    [
        ([60, 40], 2),  # the bigger validator's miner wins
        ([40, 60], 3),
    ],
)
def test_stake_weighted_majority_decides_consensus(stake, winner):
    """V0 gives everything to miner 2, V1 to miner 3. Only the miner backed by more than
    half the stake has consensus 1; the other's consensus is 0, so it earns nothing and
    its backer's vtrust is 0."""
    w = np.zeros((4, 4))
    w[0, 2] = w[1, 3] = 1.0
    r = epoch(state([*stake, 0, 0], w), NO_CUT3)
    loser = 5 - winner
    assert r.consensus[winner] == 1.0 and r.consensus[loser] == 0.0
    assert r.incentive[winner] == 1.0 and r.incentive[loser] == 0.0
    assert r.validator_trust[winner - 2] == 1.0 and r.validator_trust[loser - 2] == 0.0


def test_stake_not_head_count_decides_consensus():
    """One validator with 55% of the stake picks miner A (uid 4); three with 15% each
    pick miner B (uid 5). Three of four validators chose B, but A holds the consensus."""
    w = np.zeros((6, 6))
    w[0, 4] = 1.0
    w[1:4, 5] = 1.0
    r = epoch(state([55, 15, 15, 15, 0, 0], w), NO_CUT3)
    assert r.consensus[4:] == approx([1, 0])
    assert r.incentive[4:] == approx([1, 0])
    assert r.validator_trust[:4] == approx([1, 0, 0, 0])


@BOTH
def test_weight_copier_that_copies_a_stable_consensus_earns_like_the_honest(params):
    """Honest V0, V1 (stake .4 each) weigh miners A, B as [.7, .3] every epoch; the
    copier V2 (.2) submits the consensus it saw, which is the same [.7, .3].

    Truth: the copier is indistinguishable from the honest validators: vtrust 1 and
    dividends exactly its stake share (.2) in every epoch, under Yuma 3 and Yuma 2 alike.
    Copying a stable consensus is as profitable as validating.
    """
    n = 5
    bonds = np.zeros((n, n))
    seen = None
    for k in range(1, 6):
        w = np.zeros((n, n))
        w[0, 3:] = w[1, 3:] = [0.7, 0.3]
        w[2] = [0, 0, 0, 0.7, 0.3] if seen is None else seen
        r = epoch(state([40, 40, 20, 0, 0], w, bonds=bonds, block=100 * k), params)
        bonds, seen = r.bonds, r.consensus
        assert r.validator_trust[:3] == approx([1, 1, 1])
        assert r.dividends[:3] == approx([0.4, 0.4, 0.2])


@BOTH
def test_weight_copier_that_lags_a_moving_consensus_earns_less(params):
    """Epoch 1: everyone weighs A, B as [.7, .3]. Epoch 2: the honest V0, V1 (.4 each)
    move to [.3, .7]; the copier V2 (.2) can only submit epoch 1's consensus [.7, .3].

    Epoch 2: C = [.3, .7] (80% of the stake); copier clipped to [.3, .3]: vtrust .6.
    ranks A = .8*.3 + .2*.3 = .3, B = .8*.7 + .2*.3 = .62 -> I = [15/46, 31/46].
    Yuma 3: bonds after epoch 1 are .1*[.7, .3] = [.07, .03] for all; after epoch 2
    honest .1*[.3, .7] + .9*[.07, .03] = [.093, .097], copier [.093, .057]. Per miner
    A: 1/3 each; B: 97/251, 97/251, 57/251. Per validator: honest 4262/11546, copier
    3022/11546; D ~ stake * that: honest 1704.8/4014 = .424714, copier 604.4/4014 = .150573.
    Yuma 2: bonds after epoch 1 are the stake shares; epoch 2's delta for B is
    [.28, .28, .06]/.62, EMA .1*delta + .9*[.4, .4, .2]: copier 0.3/31 + .18; D_copier =
    .2*15/46 + (0.3/31 + .18)*31/46 = 8.88/46 = .193043, honest (1 - that)/2.

    Truth: the lagging copier earns less than its 20% share in the epoch consensus moves:
    75.3% of it under Yuma 3, 96.5% under Yuma 2; the honest earn 106.2% and 100.9% of
    theirs. Yuma 3 punishes the lag much harder.
    """
    n = 5
    w1 = np.zeros((n, n))
    w1[:3, 3:] = [0.7, 0.3]
    r1 = epoch(state([40, 40, 20, 0, 0], w1, block=100), params)
    w2 = np.zeros((n, n))
    w2[:2, 3:] = [0.3, 0.7]
    w2[2] = r1.consensus  # what the copier saw
    r2 = epoch(state([40, 40, 20, 0, 0], w2, bonds=r1.bonds, block=200), params)
    assert r1.consensus[3:] == approx([0.7, 0.3])
    assert r2.consensus[3:] == approx([0.3, 0.7])
    assert r2.validator_trust[:3] == approx([1, 1, 0.6])
    assert r2.incentive[3:] == approx([15 / 46, 31 / 46])
    if params.yuma == 3:
        copier = 604.4 / 4014
        assert r2.dividends[:3] == approx([1704.8 / 4014, 1704.8 / 4014, copier])
        assert copier / 0.2 == pytest.approx(0.752865, abs=1e-6)
    else:
        copier = 8.88 / 46
        assert r2.dividends[:3] == approx([(1 - copier) / 2, (1 - copier) / 2, copier])
        assert copier / 0.2 == pytest.approx(0.965217, abs=1e-6)


@pytest.mark.parametrize(
    "registered, weight_counts, bond_after",
    [
        # re-registered after the weights (850) and since the last epoch (900):
        # weights to it masked, old bond reset -> .1*0 + .9*0 = 0
        (950, False, 0.0),
        (900, False, 0.0),  # registered at block - tempo still counts as recent
        # after the weights but before the last epoch: weights masked, bond kept,
        # decaying: .9 * .5 = .45
        (880, False, 0.45),
        (850, False, 0.45),  # registered in the very block of the weights: masked (<=)
        # before the weights: the weight counts, bond .1*.5 + .9*.5 = .5
        (800, True, 0.5),
    ],
)
def test_miner_replaced_in_its_uid(registered, weight_counts, bond_after):
    """V0 (the only validator) set [0, .5, .5] at block 850 and holds bonds .5 on miners
    1 and 2; uid 2 is then deregistered and someone registers into it. Epoch at block
    1000, tempo 100 (last epoch 900), Yuma 3.

    While its weight is masked V0's weights become [0, 1, 0]: miner 1 gets all the
    incentive and V0's bond on it grows to .1*1 + .9*.5 = .55.
    """
    w = np.array([[0, 0.5, 0.5], [0, 0, 0], [0, 0, 0]])
    bonds = np.array([[0, 0.5, 0.5], [0, 0, 0], [0, 0, 0]])
    r = epoch(
        state(
            [1, 0, 0],
            w,
            bonds=bonds,
            last_update=[850, 0, 0],
            registered=[0, 0, registered],
        ),
        NO_CUT3,
    )
    if weight_counts:
        assert r.weights[0] == approx([0, 0.5, 0.5])
        assert r.incentive == approx([0, 0.5, 0.5])
        assert r.bonds[0, 1] == pytest.approx(0.5)
    else:
        assert r.weights[0] == approx([0, 1, 0])
        assert r.incentive == approx([0, 1, 0])
        assert r.bonds[0, 1] == pytest.approx(0.55)
    assert r.bonds[0, 2] == pytest.approx(bond_after)


@BOTH
def test_weights_and_bonds_of_a_validator_without_permit_are_ignored(params):
    """V0 (stake .5, permit) weighs miner 2; V1 (stake .5, no permit) weighs miner 3 and
    still holds an old bond .5 on it.

    V1's row is masked: W[1] = 0, S = [1, 0, 0, 0], C = [0, 0, 1, 0], I to miner 2 only,
    V1 vtrust 0. Its bonds go (subtensor keeps no bonds for a neuron without a permit),
    so it earns no dividends under either model: D = [1, 0, 0, 0].
    """
    w = np.zeros((4, 4))
    w[0, 2] = w[1, 3] = 1.0
    bonds = np.zeros((4, 4))
    bonds[1, 3] = 0.5
    r = epoch(state([50, 50, 0, 0], w, permit=[1, 0, 0, 0], bonds=bonds), params)
    assert r.weights[1] == approx([0, 0, 0, 0])
    assert r.active_stake == approx([1, 0, 0, 0])
    assert r.consensus == approx([0, 0, 1, 0])
    assert r.incentive == approx([0, 0, 1, 0])
    assert r.validator_trust == approx([1, 0, 0, 0])
    assert r.dividends == approx([1, 0, 0, 0])
    assert r.bonds[1] == approx([0, 0, 0, 0])


@pytest.mark.parametrize(
    "v1_last_update, v1_active",
    [(4999, False), (5000, True)],  # block 10000, activity cutoff 5000
)
def test_inactive_validator_stake_is_ignored(v1_last_update, v1_active):
    """V0 (stake .3, weights at 9999) backs miner 2; V1 (.7) backs miner 3 but last set
    weights at ``v1_last_update``. Inactive means last_update + 5000 < block.

    Inactive V1: S = [1, 0, 0, 0], miner 2 has the consensus and all the incentive, V1's
    (unmasked) weight is clipped to 0 and it earns nothing. Active V1 (the boundary):
    S = [.3, .7, 0, 0] and V1's miner wins.
    """
    w = np.zeros((4, 4))
    w[0, 2] = w[1, 3] = 1.0
    r = epoch(state([30, 70, 0, 0], w, block=10_000, last_update=[9999, v1_last_update, 0, 0]))
    assert bool(r.active[1]) is v1_active
    if v1_active:
        assert r.active_stake == approx([0.3, 0.7, 0, 0])
        assert r.incentive == approx([0, 0, 0, 1])
        assert r.dividends == approx([0, 1, 0, 0])
    else:
        assert r.active_stake == approx([1, 0, 0, 0])
        assert r.consensus == approx([0, 0, 1, 0])
        assert r.incentive == approx([0, 0, 1, 0])
        assert r.validator_trust == approx([1, 0, 0, 0])
        assert r.dividends == approx([1, 0, 0, 0])


def test_self_weights_are_ignored():
    """V0 (stake .6) splits its weight between itself and miner 2; V1 (.4) gives all to
    miner 2. The self-weight is masked before normalising, so V0's row becomes
    [0, 0, 1]: C_2 = 1, both vtrust 1, miner 2 gets all the incentive and V0 none.
    (Counted, it would have made V0's weight .5 and C_2 = .5.)"""
    w = np.array([[0.5, 0, 0.5], [0, 0, 1.0], [0, 0, 0]])
    r = epoch(state([60, 40, 0], w), NO_CUT3)
    assert r.weights[0] == approx([0, 0, 1])
    assert r.consensus == approx([0, 0, 1])
    assert r.validator_trust == approx([1, 1, 0])
    assert r.incentive == approx([0, 0, 1])
    assert r.dividends == approx([0.6, 0.4, 0])


@BOTH
def test_no_weights_pay_the_validators_by_stake(params):
    """Nobody set weights: I = D = 0, and the chain pays the whole (post-cut) emission to
    the active validators by stake: stake 3:1 -> [.75, .25] of 8.2 with the 18% cut."""
    p = YumaParams(yuma=params.yuma)
    r = epoch(state([30, 10, 0], np.zeros((3, 3)), emission=10.0), p)
    assert r.incentive == approx([0, 0, 0])
    assert r.dividends == approx([0, 0, 0])
    assert r.emission == approx([6.15, 2.05, 0])
    assert r.owner_emission == pytest.approx(1.8)


def test_no_weights_and_no_active_validator_pay_by_stake():
    """No permits at all (so no active stake): the chain falls back to plain stake."""
    r = epoch(state([30, 10, 0], np.zeros((3, 3)), permit=[0, 0, 0]), NO_CUT3)
    assert r.active_stake == approx([0, 0, 0])
    assert r.emission == approx([0.75, 0.25, 0])


@pytest.mark.parametrize("yuma", [3, 2])
def test_sums_and_ranges_over_random_epochs(yuma):
    """Random subnets (seeded): random stake, permits, sparse weights, activity,
    registrations, hyperparameters and carried-over bonds, three epochs each. After
    every epoch: all scores in [0, 1]; incentive sums to 1 exactly when some active
    validator has a clipped weight left (else 0); dividends sum to 1 exactly when the
    incentive does, and only permitted (under Yuma 3: active) validators get any;
    emission + owner_emission == the epoch's emission; weights are masked as promised."""
    rng = np.random.default_rng(20240 + yuma)
    paid_somebody = 0
    for _ in range(150):
        n = int(rng.integers(2, 13))
        stake = rng.random(n) * (rng.random(n) < 0.7)
        stake[0] += 0.1  # someone holds stake, or the chain pays nobody at all
        permit = rng.random(n) < 0.6
        registered = rng.integers(0, 3000, n) * (rng.random(n) < 0.5)
        params = YumaParams(
            kappa=float(rng.uniform(0.01, 1.0)),
            bonds_moving_average=float(rng.uniform(0, 0.99)),
            bonds_penalty=float(rng.random()),
            activity_cutoff=int(rng.integers(100, 5000)),
            yuma=yuma,
            owner_cut=float(rng.uniform(0, 0.5)),
        )
        bonds = np.zeros((n, n))
        for k in range(3):
            block = 5000 + 360 * k
            weights = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
            last_update = rng.integers(0, block, n)
            total = float(rng.uniform(0.5, 100))
            r = epoch(
                EpochInput(
                    block, 360, stake, permit, weights, bonds, last_update, registered, total
                ),
                params,
            )
            bonds = r.bonds
            for name in (
                "active_stake",
                "consensus",
                "rank",
                "trust",
                "incentive",
                "dividends",
                "validator_trust",
                "bonds",
            ):
                x = getattr(r, name)
                assert np.all(x >= 0) and np.all(x <= 1 + 1e-12), name
            assert np.all(r.emission >= 0) and np.all(r.emission <= total * (1 + 1e-12))
            assert r.emission.sum() + r.owner_emission == pytest.approx(total)
            assert r.owner_emission == pytest.approx(total * params.owner_cut)
            # masking: no self-weight, nothing from neurons without a permit, rows sum to 1 or 0
            assert np.all(np.diag(r.weights) == 0)
            assert np.all(r.weights[~permit] == 0)
            assert np.all(r.weights[last_update[:, None] <= registered[None, :]] == 0)
            sums = r.weights.sum(axis=1)
            assert np.all(np.isclose(sums, 1) | (sums == 0))
            assert np.all(r.consensus <= r.weights.max(axis=0, initial=0) + 1e-12)
            anyone = (r.validator_trust * r.active_stake).sum() > 0
            assert r.incentive.sum() == pytest.approx(1.0 if anyone else 0.0)
            assert r.dividends.sum() == pytest.approx(1.0 if anyone else 0.0)
            assert np.all(r.dividends[~permit] == 0)
            if yuma == 3:
                assert np.all(r.dividends[r.active_stake == 0] == 0)
            if not anyone:  # validators paid by (active) stake
                by = r.active_stake if r.active_stake.any() else normalize(stake)
                assert r.emission == approx(total * (1 - params.owner_cut) * by)
            paid_somebody += anyone
    assert paid_somebody > 100  # the cases mostly exercise the full path


# -- weighted median -------------------------------------------------------------


def test_weighted_median_at_and_around_the_kappa_boundary():
    """The result is the largest score v that validators holding at least kappa of the
    stake give (stake(score >= v) >= kappa). With a 50/50 split between .2 and .8 the
    upper score still has exactly half the stake: at kappa .5 (and the chain's default
    32767/65535, just under it) the median is .8; just over .5 it drops to .2."""
    stake, score = np.array([1.0, 1.0]), np.array([0.2, 0.8])
    assert weighted_median(stake, score, 0.5) == 0.8
    assert weighted_median(stake, score, KAPPA) == 0.8
    assert weighted_median(stake, score, 0.5 + 1e-9) == 0.2
    # 51% on the low score: the high one lacks half the stake even at the default kappa
    assert weighted_median(np.array([0.51, 0.49]), score, KAPPA) == 0.2
    assert weighted_median(np.array([0.49, 0.51]), score, KAPPA) == 0.8
    # kappa at the extremes: 1 -> the lowest score anyone gives, ~0 -> the highest
    assert weighted_median(np.array([1.0, 1, 1]), np.array([0.9, 0.3, 0.6]), 1.0) == 0.3
    assert weighted_median(np.array([1.0, 1, 1]), np.array([0.9, 0.3, 0.6]), 1e-9) == 0.9
    assert weighted_median(np.array([1.0, 1, 1]), np.array([0.9, 0.3, 0.6]), 0.0) == 0.9


def test_weighted_median_counts_zero_scores_and_ignores_zero_stake():
    """A validator that gives a miner nothing pulls its median down; one with no stake
    has no say at all; with no stake anywhere the median is 0."""
    assert weighted_median(np.array([0.6, 0.4]), np.array([0.0, 0.7]), KAPPA) == 0.0
    assert weighted_median(np.array([0.0, 0.4]), np.array([0.0, 0.7]), KAPPA) == 0.7
    assert weighted_median(np.array([0.0, 0.0]), np.array([0.3, 0.7]), KAPPA) == 0.0
    assert weighted_median(np.array([]), np.array([]), KAPPA) == 0.0


def test_weighted_median_with_kappa_one_never_loses_the_lowest_score():
    """Ten validators of stake .1: their normalised stake sums to 1 - 1e-16 in floating
    point, which once made kappa = 1 fall off the end and return 0. The chain (and now
    this) returns the lowest score."""
    score = np.arange(1, 11) / 10
    assert weighted_median(np.full(10, 0.1), score, 1.0) == 0.1
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 20))
        stake, score = rng.random(n) + 1e-3, rng.random(n)
        assert weighted_median(stake, score, 1.0) == score.min()


# -- worked cases from subtensor (opentensor/subtensor, pallets/subtensor/src/tests) --
#
# The chain runs in I32F32 fixed point and stores results as u16 (x * 65535, floored);
# weights are stored max-upscaled to u16 (u16::MAX/4 = 16383, ...). We feed the same
# u16 weights, compare u16-scaled results within one tick where the chain floors once,
# and within a few ticks for bonds that the chain floors again every epoch.

U16 = 65535


def _max_upscaled(bonds: np.ndarray) -> np.ndarray:
    """Yuma 2 bonds as the chain stores them: each miner's column scaled to max 65535."""
    top = bonds.max(axis=0)
    return np.divide(bonds * U16, top, out=np.zeros_like(bonds), where=top > 0)


@pytest.mark.parametrize(
    "stake, score, expected",
    [
        ([0.51], [1.0], 1.0),
        ([0.49, 0.51], [0.5, 1.0], 1.0),
        ([0.51, 0.49], [0.5, 1.0], 0.5),
        ([0.49, 0.0, 0.51], [0.5, 0.7, 1.0], 1.0),
        ([0.49, 0.01, 0.5], [0.5, 0.7, 1.0], 0.7),
        ([0.49, 0.51, 0.0], [0.5, 0.7, 1.0], 0.7),
        ([0.0, 0.49, 0.51], [0.5, 0.7, 1.0], 1.0),
        ([0.0, 0.49, 0.0, 0.51], [0.5, 0.5, 1.0, 1.0], 1.0),
        ([0.0, 0.49, 0.0, 0.51, 0.0], [0.5, 0.5, 1.0, 1.0, 0.5], 1.0),
        ([0.2] * 5, [0.8, 0.2, 1.0, 0.6, 0.4], 0.6),
        ([0.1] * 10, [0.8, 0.8, 0.2, 0.2, 1.0, 1.0, 0.6, 0.6, 0.4, 0.4], 0.6),
    ],
)
def test_subtensor_math_weighted_median(stake, score, expected):
    """opentensor/subtensor pallets/subtensor/src/tests/math.rs::test_math_weighted_median
    (the fixed cases; majority 0.51)."""
    assert weighted_median(np.array(stake), np.array(score), 0.51) == expected


def test_subtensor_math_weighted_median_random_property():
    """opentensor/subtensor tests/math.rs::test_math_weighted_median, random part: for
    100 validators (distinct scores, or runs of equal scores with 0/1 stake) and each
    majority, the result is a score at which the cumulative stake first reaches
    1 - majority (taken in any order of the validators)."""
    rng = np.random.default_rng(11)
    for majority in [0.0, 0.0000001, 0.25, 0.49, 0.5, 0.51, 0.9999999, 1.0]:
        for allow_equal in (False, True):
            if allow_equal:
                stake = rng.integers(0, 2, 100).astype(float)
                stake[0] = 1.0
                score = np.cumsum(rng.integers(0, 2, 100)).astype(float)
            else:
                stake, score = np.ones(100), np.arange(100.0)
            stake = normalize(stake)
            minority = max(1.0 - majority, 0.0)
            cum = np.cumsum(stake)
            medians = set()
            first = int(np.argmax(cum >= minority - 1e-12))
            medians.add(score[first])
            if abs(cum[first] - minority) < 1e-12 and first + 1 < 100:  # tie: next counts
                medians.update(score[first + 1 :][stake[first + 1 :] > 0][:1])
            for _ in range(5):
                order = rng.permutation(100)
                assert weighted_median(stake[order], score[order], majority) in medians


def test_subtensor_math_weighted_median_col():
    """opentensor/subtensor tests/math.rs::test_math_weighted_median_col."""
    w = np.array([0.0, 0.1, 0.0, 0.0, 0.2, 0.4, 0.0, 0.3, 0.1, 0.0, 0.4, 0.5]).reshape(4, 3)
    s = np.array([0.0, 0.75, 0.25, 0.0])
    assert consensus(s, w, 0.24) == approx([0, 0.3, 0.4])
    assert consensus(s, w, 0.26) == approx([0, 0.2, 0.4])
    assert consensus(s, w, 0.76) == approx([0, 0.2, 0.1])
    w = np.array([0.0, 0.1, 0.0, 0.0, 0.2, 0.4, 0.0, 0.3, 0.1, 0.0, 0.0, 0.5]).reshape(4, 3)
    assert consensus(np.array([0.0, 0.3, 0.2, 0.5]), w, 0.51) == approx([0, 0, 0.4])
    assert consensus(np.zeros(2), np.zeros((2, 2)), 0.5) == approx([0, 0])


def test_subtensor_epoch_test_bonds():
    """opentensor/subtensor pallets/subtensor/src/tests/epoch.rs::test_bonds (original
    Yuma = our yuma=2; Kappa 32767, BondsMovingAverage 900_000, BondsPenalty u16::MAX,
    tempo 1). Validators 0..3 (stake 1:2:3:4) weigh servers 4..7 as u16
    [16383, 32767, 49149, 65535]; then one by one validators 0, 1, 2 switch to
    self-weight only (masked: their bonds decay), and validator 2 finally backs server 7
    alone. The test asserts the stored bonds after each epoch: per miner scaled to a max
    of 65535 and floored to u16, and read back as such by the next epoch (Yuma 2
    normalises them per miner again). Storing ours the same way, we match every asserted
    value within one tick (the chain's I32F32 divisions round a little lower)."""
    n = 8
    stake = np.array([1, 2, 3, 4, 0, 0, 0, 0], dtype=float)
    w = np.zeros((n, n))
    w[:4, 4:] = [16383, 32767, 49149, 65535]
    last_update = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    params = YumaParams(kappa=KAPPA, bonds_moving_average=0.9, bonds_penalty=1.0, yuma=2)
    bonds = np.zeros((n, n))
    # block, what changes before the epoch, column checked, the test's asserted bonds
    steps = [
        (1, None, 4, [16383, 32767, 49151, 65535]),
        (2, 0, 4, [14582, 32767, 49151, 65535]),
        (3, 1, 4, [12603, 28321, 49151, 65535]),
        (4, 2, 7, [12602, 28320, 49150, 65535]),
        (5, "val3->srv4", 7, [10951, 24609, 49150, 65535]),
        (6, None, 7, [9559, 21482, 49150, 65535]),
        (7, None, 7, [8376, 18824, 49150, 65535]),
    ]
    for block, change, col, expected in steps:
        if change == "val3->srv4":
            w[2] = 0
            w[2, 7] = U16
            last_update[2] = block - 1
        elif change is not None:
            w[change] = 0
            w[change, change] = U16  # self-weight only
            last_update[change] = block - 1
        r = epoch(
            EpochInput(
                block,
                1,
                stake,
                np.ones(n, dtype=bool),
                w,
                bonds,
                last_update,
                np.zeros(n, dtype=int),
            ),
            params,
        )
        bonds = np.floor(_max_upscaled(r.bonds))  # stored as the chain stores them
        assert np.all(np.abs(bonds[:4, col] - expected) <= 1), (block, bonds[:4, col], expected)
    # the log of the last asserted epoch: I = [0, 0, 0, 1] on servers, D (1e-4)
    assert r.incentive[4:] == approx([0, 0, 0, 1])
    assert r.dividends[:4] == approx([0.0590361361, 0.1326722752, 0.3464062694, 0.4618853189], 1e-4)


def test_subtensor_epoch_test_active_stake():
    """opentensor/subtensor tests/epoch.rs::test_active_stake (yuma=2, all four neurons
    stake 1 with permits, activity cutoff 5000). Validators 0, 1 weigh servers 2, 3
    equally at block 1; at block 5002 only validator 0 refreshes its weights (validator
    1 is now inactive), at 5003 validator 1 does too. Asserted u16 dividends, emissions
    (of 1e9) and max-upscaled bonds: D0 = floor(.5*65535) = 32767, then .55 -> 36044 and
    .45 -> 29490 (EMA .1*1 + .9*.5), then .545 -> 35716 / .455 -> 29818."""
    n = 4
    stake, permit = np.ones(n), np.ones(n, dtype=bool)
    w = np.zeros((n, n))
    w[0, 2:] = w[1, 2:] = U16 // 2
    last_update = np.array([1, 1, 0, 0])
    params = YumaParams(yuma=2, owner_cut=0.0)

    def run(block, bonds):
        return epoch(
            EpochInput(block, 1, stake, permit, w, bonds, last_update, np.zeros(n, int), 1e9),
            params,
        )

    r = run(1, np.zeros((n, n)))
    assert r.dividends[:2] * U16 == approx([32767, 32767], 1.0)
    assert r.emission == approx([250_000_000] * 4, 10)
    assert _max_upscaled(r.bonds)[:2, 2:] == approx([[U16, U16], [U16, U16]], 1.0)

    last_update[0] = 5002
    r = run(5002, np.floor(_max_upscaled(r.bonds)))  # the u16 bonds the chain stored
    assert r.active.tolist() == [True, False, False, False]
    assert r.dividends[:2] * U16 == approx([36044, 29490], 1.0)
    assert r.emission[:2] == approx([274_999_999, 224_999_999], 10)
    assert _max_upscaled(r.bonds)[:2, 2:] == approx([[U16, U16], [53619, 53619]], 1.0)

    last_update[1] = 5002
    r = run(5003, np.floor(_max_upscaled(r.bonds)))
    assert r.dividends[:2] * U16 == approx([35716, 29818], 1.0)
    assert r.emission[:2] == approx([272_501_132, 227_498_866], 2000)  # 1132 rao of rounding
    assert _max_upscaled(r.bonds)[1, 2:] == approx([54712, 54712], 1.0)


def test_subtensor_epoch_test_outdated_weights():
    """opentensor/subtensor tests/epoch.rs::test_outdated_weights (yuma=2, tempo 0).
    Validators 0, 1 weigh servers 2, 3 as 2:1 (u16 2*(65535/3), 65535/3); the servers
    self-weigh. Then server 3 is replaced by a new key (registered at block 1, no stake,
    no permit) and only validator 0 sets weights again (block 2): validator 1's weight to
    uid 3 is outdated, C = [0, 0, 2/3, 0], I = [0, 0, 1, 0]. Asserted: D0 = 32767 (u16),
    E0 = 250_000_000 (of 1e9), bonds[0][2] = bonds[0][3] = 65535 (max-upscaled)."""
    n = 4
    w = np.zeros((n, n))
    w[:2, 2:] = [2 * (U16 // 3), U16 // 3]
    w[2, 2] = w[3, 3] = U16
    p = YumaParams(yuma=2, owner_cut=0.0)
    r = epoch(
        EpochInput(1, 0, np.ones(n), np.ones(n, bool), w, np.zeros((n, n)), [1] * 4, [0] * 4, 1e9),
        p,
    )
    assert r.incentive[2:] == approx([2 / 3, 1 / 3], 1e-4)
    assert r.emission == approx([250_000_000, 250_000_000, 333_331_637, 166_668_361], 2000)
    w[3] = 0  # the new key in uid 3 has set no weights
    r = epoch(
        EpochInput(
            2,
            0,
            np.array([1.0, 1, 1, 0]),
            np.array([1, 1, 1, 0], bool),
            w,
            r.bonds,
            np.array([2, 1, 1, 1]),
            np.array([0, 0, 0, 1]),
            1e9,
        ),
        p,
    )
    assert r.consensus == approx([0, 0, 2 / 3, 0], 1e-4)
    assert r.incentive == approx([0, 0, 1, 0])
    assert r.dividends[0] * U16 == pytest.approx(32767, abs=1.0)
    assert r.emission[0] == pytest.approx(250_000_000, abs=10)
    assert _max_upscaled(r.bonds)[0, 2:] == approx([U16, U16], 1.0)


def test_subtensor_epoch_test_zero_weights():
    """opentensor/subtensor tests/epoch.rs::test_zero_weights: a validator (stake 1) and
    a server (stake 0). No weights, then server self-weight only, then validator weights
    set in the block the server's uid is re-registered (outdated): each time the whole
    1e9 goes to the validator by stake. Fresh weights at block 3: 5e8 each."""
    p = YumaParams(yuma=2, owner_cut=0.0)
    stake = np.array([1.0, 0.0])

    def run(block, w, permit, last_update, registered, bonds):
        return epoch(
            EpochInput(block, 65534, stake, permit, w, bonds, last_update, registered, 1e9), p
        )

    none = np.zeros((2, 2))
    r = run(0, none, np.array([0, 0], bool), [0, 0], [0, 0], none)  # no permits issued yet
    assert r.emission == approx([1e9, 0])
    permit = np.array([1, 0], bool)
    r = run(1, np.array([[0, 0], [0, U16]]), permit, [0, 1], [0, 0], r.bonds)
    assert r.emission == approx([1e9, 0])
    to_server = np.array([[0, U16], [0, 0]])
    r = run(2, to_server, permit, [2, 1], [0, 2], r.bonds)
    assert r.emission == approx([1e9, 0])
    r = run(3, to_server, permit, [3, 1], [0, 2], r.bonds)
    assert r.emission == approx([5e8, 5e8])


def test_subtensor_epoch_test_10_graph():
    """opentensor/subtensor tests/epoch.rs::test_10_graph: ten neurons of stake 1 that
    only self-weigh: consensus, incentive and dividends 0, emission 99999999 (0.1 of
    1e9, floored) each."""
    r = epoch(state(np.ones(10), np.eye(10) * U16, emission=1e9), NO_CUT3)
    assert r.consensus == approx(np.zeros(10))
    assert r.incentive == approx(np.zeros(10))
    assert r.dividends == approx(np.zeros(10))
    assert r.emission == approx(np.full(10, 99_999_999), 1.0)


def test_subtensor_epoch_test_yuma_3_liquid_alpha_disabled():
    """opentensor/subtensor tests/consensus.rs (tests/epoch.rs in older versions)
    ::test_yuma_3_liquid_alpha_disabled (Yuma3On,
    liquid alpha off, BondsMovingAverage 975_000 -> alpha .025, BondsPenalty 0, Kappa
    32767). Validators A, B, C (stake 33, 33, 34) back server 1 (uid 3); in epoch 2 C
    alone moves to server 2 (uid 4), then back. Targets: dividends (asserted by the Rust
    test within 1e-3) and bonds on uids 2..4 (listed there too, but its check skips them;
    we check them, they hold within 1e-4). Closed form: A's bond to server 1 after k
    epochs is 1 - .975^k; C's after epoch 2 is .975 * (1 - .975^2) to server 1, .025 to
    server 2."""
    targets_bonds = [
        [[0.0, 0.0250, 0.0], [0.0, 0.0250, 0.0], [0.0, 0.0250, 0.0]],
        [[0.0, 0.0494, 0.0], [0.0, 0.0494, 0.0], [0.0, 0.0494, 0.0]],
        [[0.0, 0.0731, 0.0], [0.0, 0.0731, 0.0], [0.0, 0.0481, 0.0250]],
        [[0.0, 0.0963, 0.0], [0.0, 0.0963, 0.0], [0.0, 0.0719, 0.0244]],
        [[0.0, 0.1189, 0.0], [0.0, 0.1189, 0.0], [0.0, 0.0951, 0.0238]],
        [[0.0, 0.1409, 0.0], [0.0, 0.1409, 0.0], [0.0, 0.1178, 0.0232]],
    ]
    targets_dividends = [
        [0.3300, 0.3300, 0.3400, 0.0, 0.0],
        [0.3300, 0.3300, 0.3400, 0.0, 0.0],
        [0.3734, 0.3734, 0.2532, 0.0, 0.0],
        [0.3611, 0.3611, 0.2779, 0.0, 0.0],
        [0.3541, 0.3541, 0.2919, 0.0, 0.0],
        [0.3495, 0.3495, 0.3009, 0.0, 0.0],
    ]
    params = YumaParams(
        kappa=KAPPA, bonds_moving_average=0.975, bonds_penalty=0.0, yuma=3, owner_cut=0.0
    )
    n = 5
    stake = np.array([33, 33, 34, 0, 0], dtype=float)
    permit = np.array([1, 1, 1, 0, 0], dtype=bool)  # max_allowed_validators 3
    bonds = np.zeros((n, n))
    for k, (tb, td) in enumerate(zip(targets_bonds, targets_dividends, strict=True)):
        block = k + 2  # weights set in block k + 1, epoch in the next
        w = np.zeros((n, n))
        if k == 2:
            w[0, 3] = w[1, 3] = w[2, 4] = U16
        else:
            w[:3, 3] = U16
        r = epoch(
            EpochInput(
                block, 1, stake, permit, w, bonds, [block - 1] * 3 + [0, 0], np.zeros(n, int)
            ),
            params,
        )
        bonds = r.bonds
        assert r.dividends == approx(td, 1e-3)
        assert r.bonds[:3, 2:] == approx(tb, 1e-4)
    assert bonds[0, 3] == pytest.approx(1 - 0.975**6)


# -- Opentensor's Yuma simulation ----------------------------------------------------


@pytest.mark.parametrize("yuma", [3, 2])
def test_yuma_simulation_case_14_one_epoch_switch(yuma):
    """Case 14 of Opentensor's Yuma simulation (github.com/bactensor/yuma-simulation,
    src/yuma_simulation/_internal/cases.py: "All validators support Server 1, one of them
    switches to Server 2 for one epoch"): stakes .33/.33/.34, 40 epochs, validator 3
    backs server 2 only in epoch 20. Its Yuma 3 (``yumas.py::Yuma3``, liquid alpha off,
    bond_moving_avg .975, bonds bought with the unclipped weights = our bonds_penalty 0)
    reduces here to closed forms, as does its original Yuma (``yumas.py::Yuma``):

    Server 1 keeps consensus 1 (>= 66% of the stake) and all the incentive throughout.
    Yuma 3: B_v,1 = 1 - .975^(e+1) for the loyal; validator 3's drops to .975 * B at
    epoch 20 and then climbs back, B_3,2 = .025 * .975^(e-20). D = normalise(S * B_.,1).
    Yuma 2 (alpha .025): bonds to server 1 stay the stake shares except validator 3's,
    .975 * .34 at epoch 20 (the others take up .025 * .5 each), D = bonds_.,1.
    """
    a, keep = 0.025, 0.975
    params = YumaParams(bonds_moving_average=keep, bonds_penalty=0.0, yuma=yuma, owner_cut=0)
    n = 5
    stake = np.array([0.33, 0.33, 0.34, 0, 0])
    bonds = np.zeros((n, n))
    b3 = b3_to_2 = 0.0
    for e in range(40):
        w = np.zeros((n, n))
        w[:3, 3] = 1.0
        if e == 20:
            w[2] = [0, 0, 0, 0, 1.0]
        r = epoch(state(stake, w, bonds=bonds, block=100 * (e + 1)), params)
        bonds = r.bonds
        assert r.incentive[3:] == approx([1, 0])
        if yuma == 3:
            b_loyal = 1 - keep ** (e + 1)
            b3 = keep * b3 + (a if e != 20 else 0.0)
            b3_to_2 = a if e == 20 else keep * b3_to_2
            assert bonds[:3, 3] == approx([b_loyal, b_loyal, b3], 1e-12)
            assert bonds[2, 4] == pytest.approx(b3_to_2, abs=1e-12)
            expected = normalize(stake[:3] * np.array([b_loyal, b_loyal, b3]))
        else:  # validator 3's share of server 1's bonds (= its dividends)
            d3 = 0.34 if e < 20 else 0.34 * keep if e == 20 else 0.34 * (1 - a * keep ** (e - 20))
            expected = np.array([(1 - d3) / 2, (1 - d3) / 2, d3])
        assert r.dividends[:3] == approx(expected, 1e-12)
        if e == 20:
            dip = r.dividends[2]
    # validator 3 loses at the switch and has not fully recovered 19 epochs later
    assert dip < r.dividends[2] < 0.34
    if yuma == 3:
        loyal, c = 0.66 * (1 - keep**21), 0.34 * keep * (1 - keep**20)
        assert dip == pytest.approx(c / (loyal + c), abs=1e-12)
    else:
        assert dip == pytest.approx(0.3315, abs=1e-12)

"""The score-to-weight transform pays the best clearly more than the passable."""

from __future__ import annotations

import math

import pytest

from chorus.incentive import weights_from_scores


def test_one_honest_miner_against_three_cheats_keeps_at_least_80_percent():
    # the red team bounds cheap cheats at 60 % of the honest score (music: 30 %)
    for cheats in ([0.27, 0.25, 0.2], [0.54, 0.54, 0.54], [0.5, 0.45, 0.4], [0.54, 0.3, 0.1]):
        weights = weights_from_scores({1: 0.9, **{uid: s for uid, s in enumerate(cheats, 2)}})
        assert weights[1] >= 0.8, weights


def test_two_equally_good_miners_split_evenly():
    assert weights_from_scores({1: 0.9, 2: 0.9}) == {1: 0.5, 2: 0.5}
    near = weights_from_scores({1: 0.90, 2: 0.86})
    assert near[1] == pytest.approx(0.5, abs=0.1) and near[2] == pytest.approx(0.5, abs=0.1)


def test_best_earns_clearly_more_than_the_passable():
    weights = weights_from_scores({1: 0.9, 2: 0.72})  # 80 % of the best
    assert weights[1] > 3 * weights[2]
    proportional = 0.9 / (0.9 + 0.72)
    assert weights[1] > proportional + 0.1


def test_only_ratios_matter_and_weights_sum_to_one():
    a = weights_from_scores({1: 0.9, 2: 0.7, 3: 0.6})
    b = weights_from_scores({1: 0.45, 2: 0.35, 3: 0.3})
    assert a == pytest.approx(b)
    assert sum(a.values()) == pytest.approx(1.0)


def test_nothing_to_pay_for_zero_negative_or_broken_scores():
    assert weights_from_scores({}) == {}
    assert weights_from_scores({1: 0.0, 2: -1.0, 3: math.nan}) == {}
    assert weights_from_scores({1: 0.8, 2: math.inf, 3: 0.0}) == {1: 1.0}

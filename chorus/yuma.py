"""Yuma Consensus: how a subnet's epoch turns validators' weights into pay.

This is the algorithm of subtensor's ``epoch`` (``pallets/subtensor/src/epoch/
run_epoch.rs``, the dense version) in floating point instead of the chain's I32F32 fixed
point, for the local chain to run every ``tempo`` blocks. Each epoch:

1. masks what the chain ignores: stake of validators without a permit or whose last
   weights are older than ``activity_cutoff`` blocks; weights from neurons without a
   permit, to themselves, or to a uid registered again since the weights were set;
2. takes, per miner, the stake-weighted median of the validators' weights at quantile
   ``kappa`` (the *consensus*) and clips every weight above it;
3. pays miners *incentive* = stake-weighted clipped weights (normalised), and
   validators *dividends* through bonds, a moving average of their clipped weights;
4. splits the epoch's emission: the subnet owner's cut first, then the rest between
   incentive and dividends in proportion to their sums (half and half once anyone has
   set weights, as on the chain).

Both bond models are here: ``yuma=3`` (subtensor's ``Yuma3On``) keeps each validator's
bond per miner as its own moving average of clipped weights, unscaled by stake, and
pays dividends by stake times bond-weighted incentive; ``yuma=2`` (the original) keeps
stake-weighted bonds normalised per miner. Liquid alpha (a per-bond moving-average rate)
is off, the chain's default, and not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The subnet owner's share of each epoch's emission on the real network (dTAO): 18%,
# the remaining 82% split between miners (incentive) and validators (dividends).
OWNER_CUT = 0.18


@dataclass(frozen=True)
class YumaParams:
    """The subnet hyperparameters the epoch reads; defaults are subtensor's."""

    kappa: float = 32767 / 65535  # Kappa: the consensus quantile, "0.5" on chain
    bonds_moving_average: float = 0.9  # BondsMovingAverage 900_000 / 1_000_000
    bonds_penalty: float = 1.0  # BondsPenalty 65535/65535: bonds follow clipped weights
    activity_cutoff: int = 5000  # blocks after which a validator's stake stops counting
    yuma: int = 3  # 3: Yuma3On (per-bond EMA); 2: original Yuma (stake-weighted bonds)
    owner_cut: float = OWNER_CUT

    def __post_init__(self) -> None:
        if not 0 < self.kappa <= 1:
            raise ValueError("kappa must be in (0, 1]")
        if not 0 <= self.bonds_moving_average < 1:
            raise ValueError("bonds_moving_average must be in [0, 1)")
        if not 0 <= self.bonds_penalty <= 1:
            raise ValueError("bonds_penalty must be in [0, 1]")
        if self.yuma not in (2, 3):
            raise ValueError("yuma must be 2 or 3")
        if not 0 <= self.owner_cut < 1:
            raise ValueError("owner_cut must be in [0, 1)")


@dataclass(frozen=True)
class EpochInput:
    """One subnet's state at an epoch, by uid (arrays of length n, matrices n x n).

    ``weights[i, j]`` is what validator i last set for uid j (any scale; rows are
    normalised here); ``bonds`` are the previous epoch's ``EpochResult.bonds``.
    ``last_update[i]`` is the block of i's last weights (its registration block if
    none); ``registered[j]`` the block uid j was last registered at.
    """

    block: int
    tempo: int
    stake: np.ndarray
    validator_permit: np.ndarray
    weights: np.ndarray
    bonds: np.ndarray
    last_update: np.ndarray
    registered: np.ndarray
    emission: float = 1.0  # what the epoch pays out in all, before the owner's cut


@dataclass(frozen=True)
class EpochResult:
    """What the chain stores after an epoch (the metagraph's columns), as fractions.

    ``emission`` is each neuron's pay this epoch (incentive + dividends share, in the
    units of ``EpochInput.emission``); ``owner_emission`` is the subnet owner's cut.
    """

    active: np.ndarray
    active_stake: np.ndarray
    weights: np.ndarray  # the masked, row-normalised weights the epoch used
    consensus: np.ndarray
    rank: np.ndarray
    trust: np.ndarray
    incentive: np.ndarray
    dividends: np.ndarray
    validator_trust: np.ndarray
    emission: np.ndarray
    owner_emission: float
    bonds: np.ndarray


def normalize(x: np.ndarray) -> np.ndarray:
    """x / sum(x), or x unchanged when the sum is 0 (the chain's ``inplace_normalize``)."""
    total = x.sum()
    return x / total if total > 0 else x.copy()


def _row_normalize(m: np.ndarray) -> np.ndarray:
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def _col_normalize(m: np.ndarray) -> np.ndarray:
    sums = m.sum(axis=0, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def weighted_median(stake: np.ndarray, score: np.ndarray, kappa: float) -> float:
    """The stake-weighted ``kappa`` quantile of ``score`` as subtensor computes it: the
    value v with stake(score < v) <= 1 - kappa < stake(score <= v), stakes normalised.
    Zero scores count (a validator that gives a miner nothing pulls its median down)."""
    use = stake > 0
    if not use.any():
        return 0.0
    stake, score = normalize(stake[use]), score[use]
    # Never below 0: with kappa = 1 the float sum of the normalised stake can fall just
    # short of 1, and subtensor's search then still ends on the lowest score.
    minority = max(stake.sum() - kappa, 0.0)
    for v in np.unique(score):
        if stake[score < v].sum() <= minority < stake[score <= v].sum():
            return float(v)
    return float(score.max())  # kappa ~ 0: no stake above the minority, the chain takes the top


def consensus(stake: np.ndarray, weights: np.ndarray, kappa: float) -> np.ndarray:
    """Per miner (column), the stake-weighted median of the validators' weights."""
    return np.array([weighted_median(stake, weights[:, j], kappa) for j in range(weights.shape[1])])


def epoch(state: EpochInput, params: YumaParams = YumaParams()) -> EpochResult:  # noqa: B008
    """Run one Yuma epoch over ``state``; see the module docstring for the steps."""
    n = len(state.stake)
    stake = normalize(np.asarray(state.stake, dtype=float).clip(min=0))
    permit = np.asarray(state.validator_permit, dtype=bool)
    last_update = np.asarray(state.last_update, dtype=np.int64)
    registered = np.asarray(state.registered, dtype=np.int64)

    active = last_update + params.activity_cutoff >= state.block
    active_stake = normalize(np.where(active & permit, stake, 0.0))

    w = np.asarray(state.weights, dtype=float).clip(min=0).copy()
    w[~permit, :] = 0.0  # only permitted validators' weights count
    np.fill_diagonal(w, 0.0)  # no self-weight
    w[last_update[:, None] <= registered[None, :]] = 0.0  # set before j was (re)registered
    w = _row_normalize(w)

    preranks = w.T @ active_stake
    cons = consensus(active_stake, w, params.kappa)
    clipped = np.minimum(w, cons[None, :])
    validator_trust = clipped.sum(axis=1)
    ranks = clipped.T @ active_stake
    trust = np.divide(ranks, preranks, out=np.zeros(n), where=preranks > 0)
    incentive = normalize(ranks)

    weights_for_bonds = w + params.bonds_penalty * (clipped - w)
    alpha = 1.0 - params.bonds_moving_average
    recent = state.block - state.tempo <= registered  # bonds in new uids start afresh
    old_bonds = np.asarray(state.bonds, dtype=float).copy()
    old_bonds[:, recent] = 0.0
    # A neuron without a permit holds no bonds: subtensor clears a validator's bonds
    # in the epoch it loses its permit, so they earn it no dividends afterwards.
    old_bonds[~permit, :] = 0.0
    if params.yuma == 3:
        bonds = alpha * weights_for_bonds + (1 - alpha) * old_bonds
        per_validator = _col_normalize(bonds) @ incentive
        dividends = normalize(per_validator * active_stake)
    else:
        delta = _col_normalize(weights_for_bonds * active_stake[:, None])
        bonds = _col_normalize(alpha * delta + (1 - alpha) * _col_normalize(old_bonds))
        dividends = normalize(bonds @ incentive)

    paid = state.emission * (1 - params.owner_cut)
    total = incentive.sum() + dividends.sum()
    if total > 0:
        emission = paid * (incentive + dividends) / total
    else:  # nobody set usable weights: validators are paid by stake, as on the chain
        emission = paid * (active_stake if active_stake.any() else stake)
    return EpochResult(
        active=active,
        active_stake=active_stake,
        weights=w,
        consensus=cons,
        rank=incentive.copy(),
        trust=trust,
        incentive=incentive,
        dividends=dividends,
        validator_trust=validator_trust,
        emission=emission,
        owner_emission=state.emission * params.owner_cut,
        bonds=bonds,
    )

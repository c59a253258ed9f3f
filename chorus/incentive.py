"""From moving-average scores to the weights a validator sets: pay the best clearly more
than the passable.

Weights proportional to scores pay a miner that sends a drone (half the honest score, as
it once earned) 60 % of the emission when three of them face one honest composer. Here each
score is taken relative to the best, raised to ``POWER``, and anything under ``CUTOFF`` of
the best earns nothing::

    w_i  ∝  (s_i / s_best) ** POWER   if s_i >= CUTOFF * s_best, else 0

- two equally good miners split evenly, and near-equals nearly so (0.90 against 0.88, about
  what the moving averages of two equal miners drift apart by: 53/47);
- a miner at 80 % of the best earns a quarter as much (0.8 ** 6 = 0.26);
- the red team bounds every cheap cheat at 60 % of the honest score or less (music: 30 %);
  three such cheats against one honest miner get 12 % between them (0.6 ** 6 = 0.047 each),
  and under half of the best they get nothing at all.

The power is the compromise between those: at 3, three cheats at 60 % would take 39 %.

The transform is scale-free (only ratios to the best matter), so it does not care how
generous a service's scores are overall.
"""

from __future__ import annotations

import math

POWER = 6.0
CUTOFF = 0.5


def weights_from_scores(
    scores: dict[int, float], power: float = POWER, cutoff: float = CUTOFF
) -> dict[int, float]:
    """Normalised weights (summing to 1) for the uids in ``scores``; uids whose score is not
    a positive finite number, or under ``cutoff`` of the best, are left out."""
    valid = {uid: s for uid, s in scores.items() if math.isfinite(s) and s > 0}
    if not valid:
        return {}
    best = max(valid.values())
    raw = {uid: (s / best) ** power for uid, s in valid.items() if s >= cutoff * best}
    total = sum(raw.values())
    return {uid: w / total for uid, w in raw.items()}

"""Scoring: pure functions of (audio, prompt) that return a score in [0, 1] and the
metrics behind it. Evaluators load their models once and are reused for every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Score:
    """One evaluated answer: the score in [0, 1], the metrics behind it, and how long
    the evaluation took. ``reason`` names the gate that zeroed the score, if any."""

    score: float
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": round(float(self.score), 4), **self.metrics}
        out["seconds"] = round(self.seconds, 4)
        if self.reason:
            out["reason"] = self.reason
        return out

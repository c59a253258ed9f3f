"""``chorus redteam``: every scoring rule against a ladder of worse answers and cheap cheats.

For each service, the red team makes seeded challenges with honest answers (the service's
default backend), builds every attack the service declares from each case (noise, band
limits, codecs, robotic speech, replays, click tracks, drones ...), scores everything with
the validator's own evaluators, and checks the service's claims: the honest answer earns
at least ``min_honest_score``, each ladder falls strictly from rung to rung, and no rung
earns more than its ``max_share`` of the honest score. A rule that a few lines of numpy can
satisfy shows up here as a failed check.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chorus.config import check_output_file
from chorus.services import (
    Attack,
    RedTeamCase,
    Service,
    evaluate_round,
    get,
    load_evaluators,
    registry,
)

DEFAULT_CASES = 6
DEFAULT_SEED = 11
HONEST = "honest"


@dataclass
class Rung:
    """One row of the table: the scores a rung earned over the cases."""

    service: str
    name: str
    ladder: str | None
    scores: list[float]
    mean: float
    share: float  # of the honest mean
    max_share: float | None


@dataclass
class ServiceReport:
    """A service's rungs and the claims that fail. ``judged``: the claims are set for the
    mean of DEFAULT_CASES or more (scores vary from case to case: an honest clone earns 0
    to 0.65 by voice), so over fewer a failure is only a hint, and the table says so."""

    service: str
    cases: int
    honest: Rung
    rungs: list[Rung]
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    judged: bool = field(init=False)

    def __post_init__(self) -> None:
        self.judged = self.cases >= DEFAULT_CASES


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def attack_service(service: Service, cases: int, seed: int, runtime) -> ServiceReport:
    """Score the honest answers and every attack on ``cases`` seeded cases."""
    start = time.perf_counter()
    evaluator = load_evaluators([service.name], runtime)[service.name]
    _say(f"[{service.name}] making {cases} honest answers")
    made = service.redteam_cases(cases, seed)
    attacks = service.attacks()
    if not made or not attacks:
        raise ValueError(f"service {service.name!r} declares no red-team cases or attacks")

    def score_all(name: str, answers: list[tuple[np.ndarray, int]]) -> list[float]:
        # A rung's answers as one round, as a validator scores them: the same scores as
        # one by one, for less CPU (Whisper decodes them in one batch).
        items = [(x, rate, c.challenge) for c, (x, rate) in zip(made, answers, strict=True)]
        out = [float(r.score) for r in evaluate_round(evaluator, items)]
        _say(f"[{service.name}] {name:<34} mean {np.mean(out):.3f}")
        return out

    honest_scores = score_all(HONEST, [c.honest for c in made])
    honest_mean = float(np.mean(honest_scores))

    def rung(name: str, ladder: str | None, scores: list[float], max_share: float | None):
        mean = float(np.mean(scores))
        share = mean / honest_mean if honest_mean > 0 else float("nan")
        return Rung(service.name, name, ladder, scores, mean, share, max_share)

    def make_all(attack: Attack) -> list[tuple[np.ndarray, int]]:
        return [_make(attack, case) for case in made]

    rungs = []
    # Each rung's answers are made (WORLD, Piper: one core) while the one before is scored.
    with ThreadPoolExecutor(1) as maker:
        making = maker.submit(make_all, attacks[0])
        for i, attack in enumerate(attacks):
            answers = making.result()
            if i + 1 < len(attacks):
                making = maker.submit(make_all, attacks[i + 1])
            scores = score_all(attack.name, answers)
            rungs.append(rung(attack.name, attack.ladder, scores, attack.max_share))
    report = ServiceReport(service.name, cases, rung(HONEST, None, honest_scores, None), rungs)
    report.failures = check(service, report)
    report.seconds = time.perf_counter() - start
    return report


def _make(attack: Attack, case: RedTeamCase) -> tuple[np.ndarray, int]:
    samples, rate = attack.make(case)
    return np.asarray(samples, dtype=np.float32), int(rate)


def check(service: Service, report: ServiceReport) -> list[str]:
    """The claims that do not hold, in words (empty when all hold)."""
    failures = []
    floor = service.min_honest_score
    if floor is not None and report.honest.mean < floor:
        failures.append(f"honest answers earn {report.honest.mean:.3f} < {floor}")
    ladders: dict[str, list[Rung]] = {}
    for r in report.rungs:
        if r.ladder:
            ladders.setdefault(r.ladder, []).append(r)
        if r.max_share is not None and not r.share <= r.max_share:
            failures.append(f"{r.name} earns {r.share:.0%} of honest (at most {r.max_share:.0%})")
    for ladder, rungs in ladders.items():
        means = [report.honest.mean] + [r.mean for r in rungs]
        if not all(a > b for a, b in zip(means, means[1:], strict=False)):
            shown = " > ".join(f"{m:.3f}" for m in means)
            failures.append(f"ladder {ladder!r} is not strictly decreasing: {shown}")
    return failures


def run(
    services: list[str], cases: int = DEFAULT_CASES, seed: int = DEFAULT_SEED
) -> list[ServiceReport]:
    from chorus.scoring.runtime import ScoringRuntime

    runtime = ScoringRuntime()
    reports = []
    for name in services:
        reports.append(attack_service(get(name), cases, seed, runtime))
    return reports


def markdown(reports: list[ServiceReport], where: str) -> str:
    out = [f"Measured on: {where}.", ""]
    for rep in reports:
        out += [
            f"#### {get(rep.service).title}: {rep.cases} cases ({rep.seconds:.0f} s)",
            "| Rung | Ladder | Mean score | Share of honest | Bound | Holds |",
            "|---|---|---|---|---|---|",
            f"| **honest** | | {rep.honest.mean:.3f} | 100% | "
            f"{_bound(get(rep.service).min_honest_score, absolute=True)} | |",
        ]
        for r in rep.rungs:
            out.append(
                f"| {r.name} | {r.ladder or ''} | {r.mean:.3f} | {r.share:.0%} | "
                f"{_bound(r.max_share)} | {_held(rep, r)} |"
            )
        out.append("")
        if rep.judged:
            out += [f"- fails: {f}" for f in rep.failures] or ["All claims hold."]
        else:
            out.append(f"Claims not judged: {_unjudged(rep)}.")
            out += [f"- would fail: {f}" for f in rep.failures]
        out.append("")
    return "\n".join(out)


def _held(report: ServiceReport, r: Rung) -> str:
    if r.max_share is None:
        return ""
    if not report.judged:
        return "not judged"
    return "yes" if r.share <= r.max_share else "**no**"


def _unjudged(report: ServiceReport) -> str:
    return f"{report.cases} cases, fewer than the {DEFAULT_CASES} they are set for"


def _bound(value: float | None, absolute: bool = False) -> str:
    if value is None:
        return ""
    return f"≥ {value:.2f}" if absolute else f"≤ {value:.0%}"


def main(service: str, cases: int, seed: int, as_json: bool, output: str | None) -> int:
    from chorus.bench import machine, write_report

    names = list(registry()) if service == "all" else [get(service).name]
    if output:
        check_output_file(output, "--output")
    reports = run(names, cases, seed)
    if as_json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        print(markdown(reports, machine()))
    if output:  # one section per service, so a run of one service keeps the others' tables
        for report in reports:
            write_report(Path(output), f"redteam-{report.service}", markdown([report], machine()))
        _say(f"wrote {output}")
    for report in reports:
        told = "claim fails" if report.judged else f"claim not judged ({_unjudged(report)})"
        for line in report.failures:
            _say(f"{told}: {report.service}: {line}")
    return 1 if any(r.failures for r in reports if r.judged) else 0

"""`chorus redteam`'s report, without the models: over fewer cases than the claims are set
for (DEFAULT_CASES), a claim that would fail is shown as not judged, as the exit code (0)
has it, never as a plain "no"; over DEFAULT_CASES it fails, in the table and the exit code.
"""

from __future__ import annotations

import json

import pytest

from chorus import redteam
from chorus.redteam import DEFAULT_CASES, Rung, ServiceReport
from chorus.services import get

TOO_MUCH = "another text earns 50% of honest (at most 10%)"


def _report(cases: int) -> ServiceReport:
    """Honest 0.9, one rung within its bound and one far above it."""
    honest = Rung("tts", redteam.HONEST, None, [0.9] * cases, 0.9, 1.0, None)
    within = Rung("tts", "noise 10 dB SNR", "noise", [0.09] * cases, 0.09, 0.1, 0.6)
    above = Rung("tts", "another text", None, [0.45] * cases, 0.45, 0.5, 0.1)
    report = ServiceReport("tts", cases, honest, [within, above])
    report.failures = redteam.check(get("tts"), report)
    return report


def _main(monkeypatch, capsys, cases: int, as_json: bool = False) -> tuple[int, str, str]:
    monkeypatch.setattr(redteam, "run", lambda names, n, seed: [_report(n)])
    code = redteam.main("tts", cases, redteam.DEFAULT_SEED, as_json, None)
    out, err = capsys.readouterr()
    return code, out, err


def test_claims_over_the_default_cases_are_judged(monkeypatch, capsys) -> None:
    code, out, err = _main(monkeypatch, capsys, DEFAULT_CASES)
    assert code == 1
    assert "| noise 10 dB SNR | noise | 0.090 | 10% | ≤ 60% | yes |" in out, out
    assert "| another text |  | 0.450 | 50% | ≤ 10% | **no** |" in out, out
    assert f"- fails: {TOO_MUCH}" in out and "not judged" not in out, out
    assert f"claim fails: tts: {TOO_MUCH}" in err, err


@pytest.mark.parametrize("cases", [1, DEFAULT_CASES - 1])
def test_claims_over_fewer_cases_are_not_judged(monkeypatch, capsys, cases: int) -> None:
    code, out, err = _main(monkeypatch, capsys, cases)
    assert code == 0
    assert "| another text |  | 0.450 | 50% | ≤ 10% | not judged |" in out, out
    assert "| noise 10 dB SNR | noise | 0.090 | 10% | ≤ 60% | not judged |" in out, out
    assert "**no**" not in out and "fails" not in out and "All claims hold" not in out, out
    assert f"Claims not judged: {cases} cases, fewer than the {DEFAULT_CASES}" in out, out
    assert f"- would fail: {TOO_MUCH}" in out, out
    assert f"claim not judged ({cases} cases" in err and "claim fails" not in err, err


def test_json_says_whether_the_claims_are_judged(monkeypatch, capsys) -> None:
    for cases, judged in ((2, False), (DEFAULT_CASES, True)):
        code, out, _ = _main(monkeypatch, capsys, cases, as_json=True)
        (report,) = json.loads(out)
        assert report["judged"] is judged and report["failures"] == [TOO_MUCH]
        assert code == int(judged)

"""Validator state: the moving average, restarts, samples and a failing disk."""

from __future__ import annotations

import pytest

from chorus.scoring.quality import MOS
from chorus.services import Result
from chorus.services.clone import CloneResult
from chorus.services.music import MusicResult
from chorus.services.tts import SpeechResult
from chorus.store import Answer, ValidatorStore


def answer(uid: int, score: float, hotkey: str | None = None, **kw) -> Answer:
    return Answer(
        uid=uid, hotkey=hotkey or f"hk-{uid}", service="tts", prompt="p", score=score, **kw
    )


def test_moving_average_follows_the_formula(tmp_path):
    store = ValidatorStore(tmp_path / "s.sqlite")
    store.record_round(1, [answer(1, 1.0)], alpha=0.8)
    store.record_round(2, [answer(1, 0.5)], alpha=0.8)
    # 0.8 * (0.8 * 0 + 0.2 * 1.0) + 0.2 * 0.5
    assert store.scores()[1].score == pytest.approx(0.26)
    assert store.last_round() == 2


def test_scores_survive_reopening(tmp_path):
    ValidatorStore(tmp_path / "s.sqlite").record_round(1, [answer(3, 0.9)], alpha=0.5)
    again = ValidatorStore(tmp_path / "s.sqlite")
    assert again.scores()[3].score == pytest.approx(0.45) and again.last_round() == 1


def test_new_hotkey_in_a_uid_starts_from_zero(tmp_path):
    store = ValidatorStore(tmp_path / "s.sqlite")
    store.record_round(1, [answer(2, 1.0, "old")], alpha=0.5)
    store.record_round(2, [answer(2, 1.0, "new")], alpha=0.5)
    assert store.scores()[2].hotkey == "new" and store.scores()[2].score == pytest.approx(0.5)


def test_errors_and_nan_scores_count_as_failures_and_zero(tmp_path):
    store = ValidatorStore(tmp_path / "s.sqlite")
    store.record_round(1, [answer(1, float("nan"), error="timeout")], alpha=0.5)
    s = store.scores()[1]
    assert s.score == 0.0 and s.failed == 1 and s.answered == 0


def test_samples_are_capped(tmp_path):
    store = ValidatorStore(tmp_path / "s.sqlite", tmp_path / "samples", max_samples=3)
    for r in range(1, 6):
        store.record_round(r, [answer(1, 0.5, audio=b"RIFF" + bytes(40))], alpha=0.5)
    assert len(list((tmp_path / "samples").iterdir())) == 3
    kept = [a.sample for a in store.answers() if a.sample]
    assert len(kept) == 3


def test_unwritable_sample_folder_keeps_scores(tmp_path):
    blocker = tmp_path / "samples"
    blocker.write_text("a file where the folder should be")
    store = ValidatorStore(tmp_path / "s.sqlite", blocker)
    store.record_round(1, [answer(1, 0.8, audio=b"RIFF" + bytes(40))], alpha=0.5)
    assert store.scores()[1].score == pytest.approx(0.4)
    assert store.answers()[0].sample is None


def test_results_come_back_typed_by_their_service(tmp_path):
    store = ValidatorStore(tmp_path / "s.sqlite")
    speech = SpeechResult(score=0.7, wer=0.1, transcript="hi", mos=MOS(4.1, 3.2, 3.5, 4.0))
    clone = CloneResult(score=0.4, wer=0.2, speaker_similarity=0.71, copied=0.0)
    music = MusicResult(score=0.9, adherence=0.8, adherence_parts={"duration": 1.0}, key="E minor")
    answers = [
        answer(1, 0.7, result=speech),
        Answer(1, "hk-1", "clone", "p", 0.4, result=clone),
        Answer(1, "hk-1", "music", "p", 0.9, result=music),
        answer(2, 0.0, error="timeout"),
    ]
    store.record_round(1, answers, alpha=0.5)
    by_service = {a.service: a.result for a in store.answers(uid=1)}
    assert by_service == {"tts": speech, "clone": clone, "music": music}
    assert type(by_service["clone"]) is CloneResult and by_service["tts"].mos.p808 == 4.1
    assert store.answers(uid=2)[0].result is None  # nothing was scored
    assert isinstance(by_service["music"], Result)
    summary = {m.uid: m for m in store.summary()}
    assert summary[1].columns == {
        "WER": pytest.approx(0.15),
        "MOS": pytest.approx(4.1),
        "similarity": pytest.approx(0.71),
        "adherence": pytest.approx(0.8),
    }
    assert summary[1].answers == 3 and summary[1].mean_score == pytest.approx(2.0 / 3)
    assert summary[2].failed == 1 and summary[2].columns == {}

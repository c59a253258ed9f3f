"""Batched DNSMOS against the reference ``speechmos.dnsmos.run`` on the same clips."""

from __future__ import annotations

import numpy as np
import pytest
from speechmos import dnsmos as reference

from chorus.audio import resample
from chorus.scoring.quality import RATE, WINDOW_SAMPLES, windows
from chorus.text import spell_out

SENTENCES = [
    "The train to Lisbon leaves at 7:45 and the fare is $23.50.",
    "A gentle breeze carried the smell of fresh bread through the narrow street.",
    "About 4,200 people visited the museum in 1998, nearly 30% more than before.",
]


@pytest.fixture(scope="module")
def clips(piper, degraded) -> dict[str, np.ndarray]:
    """16 kHz clips: a short one that speechmos tiles 16 times into one window, one of
    several windows, and hissy speech. (Lengths keep the slow reference runs few.)"""
    speech = [resample(*piper.synthesize(spell_out(s)), RATE) for s in SENTENCES]
    hissy, rate = degraded.synthesize(spell_out(SENTENCES[0]))
    return {
        "short": speech[0][: int(0.57 * RATE)],
        "several windows": np.concatenate(speech)[: 11 * RATE],
        "degraded": resample(hissy, rate, RATE),
    }


@pytest.mark.parametrize("name", ["short", "several windows"])
def test_matches_speechmos(dnsmos, clips, name: str) -> None:
    clip = np.clip(clips[name], -1.0, 1.0)
    ours = dnsmos.score(clip, RATE)
    theirs = reference.run(clip, RATE)
    for key in ("p808", "ovrl", "sig", "bak"):
        assert ours[key] == pytest.approx(float(theirs[f"{key}_mos"]), abs=0.02), key


def test_windows_follow_speechmos() -> None:
    """Short audio is doubled until it fills a window (6 s becomes 12 s: 3 windows at a 1 s
    hop); speechmos's float arithmetic leaves windows 7-23 one sample short and skips them,
    so 30 s gives 7 windows, not 21."""
    assert windows(np.ones(6 * RATE, np.float32)).shape == (3, WINDOW_SAMPLES)
    assert windows(np.ones(30 * RATE, np.float32)).shape == (7, WINDOW_SAMPLES)
    with pytest.raises(ValueError):
        windows(np.zeros(0, np.float32))


def test_any_rate_and_degraded_speech_scores_lower(dnsmos, piper, clips) -> None:
    speech, rate = piper.synthesize(spell_out(SENTENCES[0]))
    native = dnsmos.score(speech, rate)
    assert native["ovrl"] == pytest.approx(dnsmos.score(resample(speech, rate, RATE), RATE)["ovrl"])
    hissy = dnsmos.score(clips["degraded"], RATE)
    assert native["ovrl"] > hissy["ovrl"] + 0.5 and native["p808"] > hissy["p808"] + 0.5

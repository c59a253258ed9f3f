"""Session-wide fixtures for the real models: each loads once for the whole test run."""

from __future__ import annotations

import pytest

from chorus.generation.tts import DegradedTTS, PiperTTS
from chorus.scoring.asr import Transcriber
from chorus.scoring.quality import DNSMOS
from chorus.scoring.tts import TTSEvaluator


@pytest.fixture(scope="session")
def piper() -> PiperTTS:
    """Seeded, so a failure can be reproduced (miners draw a seed per process)."""
    return PiperTTS(seed=0)


@pytest.fixture(scope="session")
def degraded() -> DegradedTTS:
    """Piper through a telephone band with hiss: intelligible, plainly worse."""
    return DegradedTTS()


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber()


@pytest.fixture(scope="session")
def dnsmos() -> DNSMOS:
    return DNSMOS()


@pytest.fixture(scope="session")
def tts_evaluator(transcriber: Transcriber, dnsmos: DNSMOS) -> TTSEvaluator:
    return TTSEvaluator(transcriber, dnsmos)

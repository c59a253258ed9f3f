"""Session-wide fixtures for the real models: each loads once for the whole test run."""

from __future__ import annotations

import pytest

from chorus.generation.tts import DegradedTTS
from chorus.piper import PiperTTS
from chorus.scoring.asr import Transcriber
from chorus.scoring.quality import DNSMOS
from chorus.scoring.runtime import ScoringRuntime
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
def runtime() -> ScoringRuntime:
    """The scorers' cores and threads, shared like a validator's."""
    runtime = ScoringRuntime()
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def transcriber(runtime: ScoringRuntime) -> Transcriber:
    return Transcriber(runtime)


@pytest.fixture(scope="session")
def dnsmos(runtime: ScoringRuntime) -> DNSMOS:
    return DNSMOS(runtime)


@pytest.fixture(scope="session")
def tts_evaluator(transcriber: Transcriber, dnsmos: DNSMOS) -> TTSEvaluator:
    return TTSEvaluator(transcriber, dnsmos)

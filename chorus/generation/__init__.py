"""Generation backends: one small interface per service, chosen by name.

A miner loads one backend per service at start-up. Each backend is a class with a
``name``, a ``model`` (what ``/v1/info`` reports) and one method:

- tts:   ``synthesize(text, voice=None) -> (samples, rate)``
- clone: ``clone(text, reference, reference_rate) -> (samples, rate)``
- music: ``compose(prompt, duration) -> (samples, rate)``

Backends are registered as "module:Class" strings so that listing them imports nothing
heavy; extra keyword options (for instance ``weights=/path``) go to the constructor.
"""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS: dict[str, dict[str, str]] = {
    "tts": {
        "piper": "chorus.generation.tts:PiperTTS",
        "degraded": "chorus.generation.tts:DegradedTTS",
    },
    "clone": {
        "world": "chorus.generation.clone:WorldClone",
        "neural": "chorus.generation.neural_clone:NeuralClone",
    },
    "music": {
        "symbolic": "chorus.generation.music:SymbolicMusic",
        "musicgen": "chorus.generation.musicgen:MusicGen",
    },
}


class BackendError(ValueError):
    """A backend name or option that does not exist; the message lists what does."""


def load_backend(service: str, name: str, **options: Any) -> Any:
    """Instantiate the backend ``name`` for ``service`` (loads its model once, here)."""
    if service not in BACKENDS:
        raise BackendError(f"unknown service {service!r}; choose from {sorted(BACKENDS)}")
    choices = BACKENDS[service]
    if name not in choices:
        raise BackendError(
            f"unknown {service} backend {name!r}; choose from {sorted(choices) or 'none yet'}"
        )
    module, _, cls = choices[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)

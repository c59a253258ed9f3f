"""A neural voice-cloning path that loads its weights from a local file (``weights=/path``).

What it is, plainly: the WORLD pipeline of ``WorldClone`` (Piper speech, pitch mapping, warp
and equalisation) followed by a small torch network, ``EnvelopeNet``, that predicts a
correction to every frame's coded spectral envelope from that frame's envelope, its pitch and
the reference's speaker embedding. chorus ships no trained weights and no training recipe; the
class exists so that an operator's trained converter (or a heavier model behind the same
``clone`` interface) loads from disk and runs in a miner, and its code path is tested with a
tiny randomly initialised network. Nothing is downloaded.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyworld as pw
import torch
from torch import nn

from chorus.errors import CallerError
from chorus.generation.clone import RATE, VoiceProfile, World, WorldClone

FORMAT = "chorus-envelope-net/1"
WEIGHTS_FILE = "envelope_net.pt"


class WeightsError(CallerError):
    """A weights path that is missing or does not hold an EnvelopeNet checkpoint."""


@dataclass(frozen=True)
class EnvelopeNetConfig:
    envelope_dims: int = 40  # WORLD coded spectral envelope (mel-cepstrum-like) per frame
    speaker_dims: int = 256  # Resemblyzer embedding
    hidden: int = 256
    layers: int = 4
    kernel: int = 5


class EnvelopeNet(nn.Module):
    """Residual 1-D convolutions over frames, conditioned on a speaker embedding."""

    def __init__(self, config: EnvelopeNetConfig):
        super().__init__()
        self.config = config
        c = config
        self.inp = nn.Conv1d(c.envelope_dims + 1, c.hidden, 1)
        self.speaker = nn.Linear(c.speaker_dims, c.hidden)
        self.blocks = nn.ModuleList(
            nn.Conv1d(c.hidden, c.hidden, c.kernel, padding=c.kernel // 2) for _ in range(c.layers)
        )
        self.out = nn.Conv1d(c.hidden, c.envelope_dims, 1)

    def forward(self, envelope: torch.Tensor, log_f0: torch.Tensor, speaker: torch.Tensor):
        """envelope (B, D, T), log_f0 (B, 1, T), speaker (B, S) -> envelope correction (B, D, T)."""
        h = self.inp(torch.cat([envelope, log_f0], dim=1)) + self.speaker(speaker)[:, :, None]
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.out(h)


def save_envelope_net(net: EnvelopeNet, path: str | Path) -> Path:
    """Write a checkpoint (a file, or ``envelope_net.pt`` inside a folder) that
    ``NeuralClone(weights=path)`` loads."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    torch.save({"format": FORMAT, "config": asdict(net.config), "state": net.state_dict()}, path)
    return path


def load_envelope_net(path: str | Path) -> EnvelopeNet:
    """Load a checkpoint written by ``save_envelope_net``; clear errors for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"no EnvelopeNet weights at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != FORMAT:
            raise WeightsError(f"{path} is not a {FORMAT} checkpoint")
        net = EnvelopeNet(EnvelopeNetConfig(**ckpt["config"]))
        net.load_state_dict(ckpt["state"])
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        TypeError,
        KeyError,
        AttributeError,
    ) as e:
        raise WeightsError(f"cannot load EnvelopeNet weights from {path}: {e}") from None
    return net.eval()


class NeuralClone(WorldClone):
    """WorldClone plus a learned per-frame envelope correction loaded from ``weights``."""

    name = "neural"

    def __init__(self, weights: str | Path, device: str = "cpu", **options):
        self.net = load_envelope_net(weights).to(device)
        self.device = device
        super().__init__(**options)
        self.model = f"neural-vc:{Path(weights).name}+{self.tts.model}"

    def map_envelope(self, src: World, profile: VoiceProfile) -> np.ndarray:
        sp = super().map_envelope(src, profile)
        fft_size = (sp.shape[1] - 1) * 2
        dims = self.net.config.envelope_dims
        coded = pw.code_spectral_envelope(np.ascontiguousarray(sp), RATE, dims)
        log_f0 = np.where(src.voiced, np.log(np.maximum(src.f0, 1.0)) - profile.log_f0_mean, 0.0)
        with torch.inference_mode():
            delta = self.net(
                torch.from_numpy(coded.T[None]).float().to(self.device),
                torch.from_numpy(log_f0[None, None]).float().to(self.device),
                torch.from_numpy(profile.embedding[None]).float().to(self.device),
            )
        corrected = coded + delta[0].T.cpu().double().numpy()
        return pw.decode_spectral_envelope(np.ascontiguousarray(corrected), RATE, fft_size)

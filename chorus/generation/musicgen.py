"""MusicGen through `transformers`, from weights the operator already has on disk.

Neural text-to-music sounds less scripted than the symbolic backend but needs a GPU to be
quick, and its weights are not shipped by any package: the operator passes
``weights=/path/to/musicgen`` (a `save_pretrained` folder, e.g. a copy of musicgen-small) and,
if that folder has no tokenizer, ``tokenizer=/path``. Nothing is ever downloaded.
"""

from __future__ import annotations

import math
import threading
import zlib
from pathlib import Path

import numpy as np

from chorus.errors import CallerError
from chorus.generation import BackendError
from chorus.generation.music import master
from chorus.protocol import MAX_MUSIC_SECONDS, MIN_MUSIC_SECONDS


class MusicGen:
    """``compose(prompt, duration)`` with a local MusicGen model (GPU when there is one)."""

    name = "musicgen"
    min_seconds, max_seconds = MIN_MUSIC_SECONDS, MAX_MUSIC_SECONDS

    def __init__(
        self,
        weights: str | None = None,
        tokenizer: str | None = None,
        device: str | None = None,
        guidance_scale: float = 3.0,
        seed: int = 0,
    ) -> None:
        if not weights or not Path(weights).is_dir():
            raise BackendError(
                "musicgen needs weights=/path/to/a local MusicGen model folder "
                f"(got {weights!r}); weights are never downloaded"
            )
        import torch
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = (
            MusicgenForConditionalGeneration.from_pretrained(weights, local_files_only=True)
            .to(self.device)
            .eval()
        )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or weights, local_files_only=True)
        audio = self.net.config.audio_encoder
        self.sample_rate = int(audio.sampling_rate)
        self.frame_rate = float(audio.frame_rate)
        self.model = f"musicgen:{Path(weights).name}"
        self.guidance_scale, self.seed = guidance_scale, int(seed)
        self.lock = threading.Lock()

    def compose(self, prompt: str, duration: float) -> tuple[np.ndarray, int]:
        """``duration`` seconds of mono float32 audio; sampling is seeded by the prompt."""
        if not self.min_seconds <= duration <= self.max_seconds:
            raise CallerError(f"duration must be {self.min_seconds:g}-{self.max_seconds:g} s")
        inputs = self.tokenizer([prompt], return_tensors="pt", padding=True).to(self.device)
        # the delay pattern costs one frame per codebook before audio starts
        frames = math.ceil(duration * self.frame_rate) + self.net.decoder.num_codebooks + 1
        with self.lock, self.torch.inference_mode():
            self.torch.manual_seed(zlib.crc32(prompt.encode()) ^ self.seed)
            out = self.net.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                do_sample=True,
                guidance_scale=self.guidance_scale,
                max_new_tokens=frames,
            )
        samples = out[0].float().mean(dim=0).cpu().numpy()
        return master(samples, self.sample_rate, duration), self.sample_rate

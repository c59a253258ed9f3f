"""Audio arrays, files and the wire encoding (base64 16-bit WAV or FLAC).

Everything inside chorus is mono float32 in [-1, 1] plus a sample rate. Audio travels
between miner and validator as base64 of a real WAV/FLAC file, about a tenth of the
bytes of a JSON list of floats, and it is decoded with strict limits so a hostile peer
cannot make us allocate an hour of audio or feed NaNs into a model.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import soundfile as sf
import soxr

from chorus.errors import CallerError

# The wire formats: what miners answer in and callers send references in.
AudioFormat = Literal["wav", "flac"]
FORMATS: tuple[AudioFormat, ...] = get_args(AudioFormat)
MIN_RATE, MAX_RATE = 8000, 48000  # the sample rates audio may have, asked for or received
# The rate every speech model here works at (Whisper, DNSMOS, Resemblyzer) and WORLD
# analyses speech at: scorers resample an answer to it once.
SPEECH_RATE = 16000
WORLD_FRAME_MS = 5.0  # the frame step of WORLD analysis and resynthesis (degrade, clone)


class AudioError(CallerError):
    """Audio that cannot be decoded or breaks a limit; the message says which."""


@dataclass(frozen=True)
class AudioLimits:
    """What a decoder accepts. Defaults suit speech answers and reference recordings."""

    min_seconds: float = 0.0
    max_seconds: float = 120.0
    min_rate: int = MIN_RATE
    max_rate: int = MAX_RATE
    max_channels: int = 2


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Mix channels down and convert to float32, whatever the input dtype."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    return np.ascontiguousarray(x, dtype=np.float32)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates match."""
    if rate_in == rate_out or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.float32)


def encode_bytes(samples: np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """A mono float array as the bytes of a 16-bit WAV or FLAC file."""
    if fmt not in FORMATS:
        raise AudioError(f"unknown audio format {fmt!r}; use one of {FORMATS}")
    buf = io.BytesIO()
    clipped = np.clip(np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    sf.write(buf, clipped, rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def encode(samples: np.ndarray, rate: int, fmt: str = "wav") -> str:
    """A mono float array as base64 text, ready for a JSON field."""
    return base64.b64encode(encode_bytes(samples, rate, fmt)).decode("ascii")


def decode_bytes(data: bytes, limits: AudioLimits | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC bytes to (mono float32, rate), enforcing ``limits``.

    The header is checked before any samples are read, so an hour-long or six-channel
    file is refused without allocating it.
    """
    limits = limits or AudioLimits()
    if not data:
        raise AudioError("audio is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if not limits.min_rate <= rate <= limits.max_rate:
                raise AudioError(
                    f"sample rate {rate} Hz is outside {limits.min_rate}-{limits.max_rate} Hz"
                )
            if channels > limits.max_channels:
                raise AudioError(f"{channels} channels; at most {limits.max_channels} allowed")
            seconds = frames / rate
            if seconds > limits.max_seconds:
                length = _seconds(seconds, limits.max_seconds, 1)
                raise AudioError(f"audio is {length} s; at most {limits.max_seconds:g} s")
            if seconds < limits.min_seconds:
                length = _seconds(seconds, limits.min_seconds, 2)
                raise AudioError(f"audio is {length} s; at least {limits.min_seconds:g} s")
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except sf.LibsndfileError as e:  # its str() names the buffer object, not the fault
        raise AudioError(f"not a readable WAV/FLAC file ({e.error_string})") from None
    except (RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"not a readable WAV/FLAC file ({e})") from None
    if samples.shape[0] == 0 and limits.min_seconds > 0:
        raise AudioError("audio has no samples")
    mono = to_mono_float(samples)
    if not np.isfinite(mono).all():
        raise AudioError("audio contains NaN or infinite samples")
    return mono, rate


def _seconds(seconds: float, limit: float, digits: int) -> str:
    """``seconds`` to ``digits`` decimals, or to as many as it takes not to read as the
    ``limit`` it breaks (one sample short of 2 s is 1.99994 s, not 2.00 s)."""
    while digits < 9 and round(seconds, digits) == round(limit, digits):
        digits += 1
    return f"{seconds:.{digits}f}"


def decode(text: str, limits: AudioLimits | None = None) -> tuple[np.ndarray, int]:
    """Decode base64 WAV/FLAC text to (mono float32, rate), enforcing ``limits``."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AudioError("audio is not valid base64") from None
    return decode_bytes(data, limits)


def read(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any file libsndfile knows as (mono float32, rate)."""
    if not Path(path).exists():
        raise AudioError(f"no such file: {path}")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"cannot read audio file {path}: {e}") from None
    return to_mono_float(samples), rate


def file_format(path: str | Path, flag: str = "audio file") -> AudioFormat:
    """The format ``write`` uses for ``path``, by its extension (.wav or .flac); any other
    is refused, since a WAV named x.mp3 or x would mislead whoever opens it."""
    fmt = Path(path).suffix.lower().removeprefix(".")
    if fmt not in FORMATS:
        endings = " or ".join(f".{f}" for f in FORMATS)
        raise CallerError(f"{flag} {path} must end in {endings}: chorus writes no other format")
    return fmt


def write(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write a 16-bit WAV or FLAC, chosen by the file extension (``file_format``)."""
    path = Path(path)
    fmt = file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_bytes(samples, rate, fmt))
    return path

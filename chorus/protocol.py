"""The wire protocol between validators (and gateways) and miners.

One pydantic model per request and one shared audio answer. Requests are strict
(unknown fields and wrong types are refused) so that a miner never guesses what a
caller meant; every limit is here so client and server agree on it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request

PROTOCOL_VERSION = "1"
SERVICES = ("tts", "clone", "music")
ROUTES = {"tts": "/v1/tts", "clone": "/v1/clone", "music": "/v1/music"}

MAX_TEXT_CHARS = 1000
MAX_MUSIC_PROMPT_CHARS = 512
MIN_MUSIC_SECONDS = 1.0
MAX_MUSIC_SECONDS = 60.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

AudioFormat = Literal["wav", "flac"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain non-whitespace text")
    return value


class TTSRequest(_Strict):
    """Speak ``text``; ``voice`` picks one of the miner's voices (default: its first)."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    voice: str | None = Field(default=None, max_length=64)
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    format: AudioFormat = "wav"

    _text = field_validator("text")(_not_blank)


class CloneRequest(_Strict):
    """Speak ``text`` in the voice of ``reference`` (base64 WAV or FLAC)."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    reference: str = Field(min_length=1)
    sample_rate: int | None = Field(default=None, ge=8000, le=48000)
    format: AudioFormat = "wav"

    _text = field_validator("text")(_not_blank)


class MusicRequest(_Strict):
    """Compose ``duration`` seconds of music that follows ``prompt``."""

    prompt: str = Field(min_length=1, max_length=MAX_MUSIC_PROMPT_CHARS)
    duration: float = Field(ge=MIN_MUSIC_SECONDS, le=MAX_MUSIC_SECONDS)
    sample_rate: int | None = Field(default=None, ge=32000, le=48000)
    format: AudioFormat = "wav"

    _prompt = field_validator("prompt")(_not_blank)

    @field_validator("duration", mode="before")
    @classmethod
    def _int_is_fine(cls, value: object) -> object:
        # Strict mode would refuse 15 for a float field; a whole number of seconds is fine.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


REQUESTS: dict[str, type[_Strict]] = {
    "tts": TTSRequest,
    "clone": CloneRequest,
    "music": MusicRequest,
}


class AudioResponse(BaseModel):
    """A miner's answer: the audio (base64 file bytes) and what it took to make it."""

    audio: str
    format: AudioFormat
    sample_rate: int
    duration_s: float
    model: str
    synthesis_s: float


class ServiceInfo(BaseModel):
    model: str
    voices: list[str] = []


class InfoResponse(BaseModel):
    """``GET /v1/info``: who this miner is and what it serves."""

    name: str = "chorus-miner"
    version: str
    protocol: str = PROTOCOL_VERSION
    hotkey: str
    services: dict[str, ServiceInfo]


class ErrorResponse(BaseModel):
    """Every refusal carries a reason a human can act on."""

    error: str
    detail: str | list | None = None


class BodyError(Exception):
    """A request body refused while reading it: HTTP ``status`` (413 or 408) and a reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (declared or sent) and a body that
    is not complete within ``timeout_s`` (a client trickling bytes to hold a worker)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyError(413, f"body exceeds the {limit}-byte limit")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        raise BodyError(408, "request body was not received in time") from None
    return b"".join(chunks)

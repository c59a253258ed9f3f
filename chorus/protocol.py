"""The wire protocol between validators (and gateways) and miners.

What every service shares on the wire: the strict base of request models (each service's
own request lives in its descriptor, ``chorus.services``), the one audio answer, the
limits both sides agree on, and the capped body reader. Requests are strict (unknown
fields and wrong types are refused) so that a miner never guesses what a caller meant.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from chorus.audio import AudioFormat, AudioLimits
from chorus.errors import CallerError

RequestT = TypeVar("RequestT", bound=BaseModel)

PROTOCOL_VERSION = "1"

MAX_TEXT_CHARS = 1000
MAX_MUSIC_PROMPT_CHARS = 512
MIN_MUSIC_SECONDS, MAX_MUSIC_SECONDS = 1.0, 60.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
BODY_TIMEOUT_S = 10.0  # a client trickling its body gets 408 instead of holding a worker

# What the gateway answers in (OpenAI's response formats; ``chorus.formats`` encodes them).
ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in Ogg
    "aac": "audio/aac",  # AAC-LC in ADTS
    "pcm": "audio/pcm",  # 16-bit signed little-endian mono, 24 kHz
}
# What validators and gateways accept from miners, and miners from callers as a voice.
ANSWER_LIMITS = AudioLimits(max_seconds=180.0)
REFERENCE_LIMITS = AudioLimits(min_seconds=2.0, max_seconds=30.0, min_rate=16000)


class Strict(BaseModel):
    """Base of every request model: unknown fields and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


def request_from(model: type[RequestT], **values: object) -> RequestT:
    """A request built from values given outside HTTP (the command line), held to the
    limits a miner holds it to: CallerError naming each field and its problem."""
    try:
        return model.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'request'}: {err['msg']}" for err in e.errors()
        )
        raise CallerError(f"{problems} (what a miner accepts)") from None


def has_text(value: str) -> bool:
    """Whether ``value`` holds a letter or digit: whitespace, "...", "?!" or emoji alone
    say nothing a voice could speak."""
    return any(c.isalnum() for c in value)


def not_blank(value: str) -> str:
    """A field validator: text without a letter or digit (`has_text`) says nothing; a miner
    would answer it with silence, so it is the caller's mistake, refused where the request
    is read."""
    if not has_text(value):
        raise ValueError(
            "must contain a letter or digit: spaces, punctuation or emoji alone are no text"
        )
    return value


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


class BodyError(CallerError):
    """A request body refused while reading it: HTTP ``status`` (413 or 408) and a reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason, status)


class GatewayBody(BaseModel):
    """Base of the gateway's public request bodies (OpenAI's shape): each service's body
    says how it becomes that service's miner request.

    ``response_format`` is what the caller gets (WAV unless asked on chorus's own routes,
    as before; OpenAI's speech body defaults to MP3, as OpenAI); miners are always asked
    for ``miner_format`` and the gateway encodes their audio itself. The
    gateway calls ``to_miner`` on ``for_miner()``, a copy whose ``response_format`` is
    ``miner_format``, so a body that passes ``format=self.response_format`` on asks for
    a format miners speak. ``model`` is accepted and ignored: the route picks the service."""

    model_config = ConfigDict(extra="forbid")
    miner_format: ClassVar[AudioFormat] = "flac"

    model: str = Field(default="chorus", max_length=64)
    response_format: ResponseFormat = "wav"

    def to_miner(self) -> BaseModel:
        raise NotImplementedError

    def for_miner(self) -> Self:
        return self.model_copy(update={"response_format": self.miner_format})


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

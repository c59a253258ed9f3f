"""Signed calls to miners, with a deadline and a cap on how much of an answer we read.

A miner is untrusted: its answer might never come, might be 200 MB, or might be
garbage. ``MinerClient.call`` turns every such case into a ``CallResult`` with an
``error`` instead of an exception, so the validator loop can punish and move on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from chorus.auth import sign
from chorus.protocol import AudioResponse
from chorus.services import get

DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024


@dataclass
class CallResult:
    """What came back from one miner: the parsed answer, or why there is none."""

    status: int | None
    latency_s: float
    answer: AudioResponse | None = None
    error: str | None = None


class MinerClient:
    """Sends signed requests from one wallet; share one instance across a round."""

    def __init__(self, wallet, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES):
        self.wallet = wallet
        self.max_answer_bytes = max_answer_bytes
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self, url: str, receiver: str, service: str, request: BaseModel, timeout: float
    ) -> CallResult:
        """POST ``request`` to the route of ``service`` (a registered service's name)."""
        path = get(service).route
        body = request.model_dump_json(exclude_none=True).encode()
        headers = sign(self.wallet, "POST", path, body, receiver)
        headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        status: int | None = None

        async def exchange() -> bytes:
            nonlocal status
            async with self.http.stream(
                "POST", url + path, content=body, headers=headers, timeout=timeout
            ) as response:
                status = response.status_code
                return await self._read_capped(response)

        try:
            # One deadline for the whole exchange: a miner trickling bytes cannot stretch it.
            raw = await asyncio.wait_for(exchange(), timeout)
        except (TimeoutError, httpx.TimeoutException):
            return CallResult(status, time.perf_counter() - start, error="timeout")
        except _TooLarge:
            return CallResult(status, time.perf_counter() - start, error="answer too large")
        except httpx.HTTPError as e:
            return CallResult(status, time.perf_counter() - start, error=f"http: {e!r}"[:300])
        latency = time.perf_counter() - start
        if status != 200:
            return CallResult(status, latency, error=f"HTTP {status}: {_reason(raw)}")
        try:
            answer = AudioResponse.model_validate(json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError, ValidationError):
            return CallResult(status, latency, error="answer is not a valid audio response")
        return CallResult(status, latency, answer=answer)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_answer_bytes:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)


class _TooLarge(Exception):
    pass


def _reason(raw: bytes) -> str:
    try:
        body: Any = json.loads(raw)
        return str(body.get("error", body))[:200]
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace")

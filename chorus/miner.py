"""The miner: a FastAPI app that serves each loaded backend on its own signed route.

Every POST goes through the same gauntlet before any model runs: a size cap while the
body is read (413), a deadline on reading it (408), the btauth signature and the caller's
standing on the chain (401/403), strict JSON validation (422), and a bounded queue (429).
Generation runs in a small thread pool, off the event loop, so ``/health`` and refusals
stay fast while a model works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from chorus import __version__, audio
from chorus.auth import AccessPolicy, AuthFailure, Gatekeeper
from chorus.chain import Chain
from chorus.generation.tts import UnknownVoiceError
from chorus.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    REQUESTS,
    ROUTES,
    AudioResponse,
    BodyError,
    CloneRequest,
    InfoResponse,
    MusicRequest,
    ServiceInfo,
    TTSRequest,
    read_body,
)

log = logging.getLogger("chorus.miner")

REFERENCE_LIMITS = audio.AudioLimits(min_seconds=2.0, max_seconds=30.0, min_rate=16000)


@dataclass
class MinerSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 10.0
    max_queue: int = 8
    workers: int = 1
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    reference_limits: audio.AudioLimits = REFERENCE_LIMITS


class Refusal(Exception):
    """A request refused before or during work: HTTP ``status`` and a reason."""

    def __init__(self, status: int, reason: str, detail: Any = None):
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def _error(status: int, reason: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": reason}
    if detail is not None:
        body["detail"] = detail
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


class Miner:
    """Holds the loaded backends, the gatekeeper and the work queue."""

    def __init__(
        self,
        hotkey: str,
        chain: Chain,
        backends: dict[str, Any],
        settings: MinerSettings | None = None,
    ):
        self.hotkey = hotkey
        self.backends = backends
        self.settings = settings or MinerSettings()
        self.gatekeeper = Gatekeeper(chain, hotkey, self.settings.policy)
        self.pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="generate")
        self.pending = 0
        self.served = 0

    def info(self) -> InfoResponse:
        services = {
            name: ServiceInfo(model=b.model, voices=list(getattr(b, "voices", [])))
            for name, b in self.backends.items()
        }
        return InfoResponse(version=__version__, hotkey=self.hotkey, services=services)

    async def handle(self, service: str, request: Request) -> JSONResponse:
        try:
            try:
                body = await read_body(
                    request, self.settings.max_body_bytes, self.settings.body_timeout_s
                )
            except BodyError as e:
                raise Refusal(e.status, e.reason) from None
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            try:
                self.gatekeeper.check(request.headers, body, request.method, path)
            except AuthFailure as e:
                raise Refusal(e.status, e.reason) from None
            if service not in self.backends:
                raise Refusal(404, f"this miner does not serve {service}")
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise Refusal(422, "body is not valid JSON") from None
            try:
                req = REQUESTS[service].model_validate(payload)
            except ValidationError as e:
                detail = [
                    {"field": ".".join(map(str, err["loc"])), "problem": err["msg"]}
                    for err in e.errors()
                ]
                raise Refusal(422, "invalid request", detail) from None
            if self.pending >= self.settings.max_queue:
                raise Refusal(429, f"miner is busy ({self.pending} requests queued); retry later")
            self.pending += 1
            try:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(self.pool, self.generate, service, req)
            finally:
                self.pending -= 1
            self.served += 1
            return JSONResponse(answer.model_dump())
        except Refusal as e:
            if e.status >= 500:
                log.error("%s request failed: %s", service, e.reason)
            return _error(e.status, e.reason, e.detail)

    def generate(self, service: str, req: Any) -> AudioResponse:
        """Run the backend (in a worker thread) and encode its answer."""
        backend = self.backends[service]
        start = time.perf_counter()
        try:
            if isinstance(req, TTSRequest):
                samples, rate = backend.synthesize(req.text, req.voice)
            elif isinstance(req, CloneRequest):
                try:
                    ref, ref_rate = audio.decode(req.reference, self.settings.reference_limits)
                except audio.AudioError as e:
                    raise Refusal(422, f"reference audio refused: {e}") from None
                if float(np.max(np.abs(ref))) < 1e-4:
                    raise Refusal(422, "reference audio refused: it is silent")
                samples, rate = backend.clone(req.text, ref, ref_rate)
            elif isinstance(req, MusicRequest):
                samples, rate = backend.compose(req.prompt, req.duration)
            else:  # pragma: no cover - REQUESTS and this dispatch are kept in step
                raise Refusal(500, f"no dispatch for {type(req).__name__}")
        except UnknownVoiceError as e:
            raise Refusal(422, str(e)) from None
        except Refusal:
            raise
        except Exception as e:
            log.exception("%s backend failed", service)
            raise Refusal(500, f"{service} generation failed: {type(e).__name__}") from None
        if req.sample_rate and req.sample_rate != rate:
            samples, rate = audio.resample(samples, rate, req.sample_rate), req.sample_rate
        elapsed = time.perf_counter() - start
        return AudioResponse(
            audio=audio.encode(samples, rate, req.format),
            format=req.format,
            sample_rate=rate,
            duration_s=round(len(samples) / rate, 4),
            model=backend.model,
            synthesis_s=round(elapsed, 4),
        )


def create_app(miner: Miner) -> FastAPI:
    app = FastAPI(title="chorus miner", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "pending": miner.pending, "served": miner.served}

    @app.get("/v1/info")
    async def info() -> InfoResponse:
        return miner.info()

    def add_route(service: str) -> None:
        async def route(request: Request) -> JSONResponse:
            return await miner.handle(service, request)

        app.post(ROUTES[service], name=service, response_model=None)(route)

    for service in ROUTES:
        add_route(service)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    return app

"""The miner: a FastAPI app that serves each loaded backend on its own signed route.

Every POST goes through the same gauntlet before any model runs, cheapest first: a size
cap while the body is read (413), a deadline on reading it (408), the claimed caller's
standing in the metagraph (403; a dict lookup, the chain is read in the background), the
btauth signature, freshness and replay checks (401), strict JSON validation (422), and a
bounded queue (429). Generation runs in a small thread pool, off the event loop, so
``/health`` and refusals stay fast while a model works. If the chain has never answered,
callers get 503 with the reason; once it has, an outage only makes the copy older.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bittensor import http_auth
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from chorus import __version__, audio
from chorus.auth import AccessPolicy, Gatekeeper
from chorus.chain import Chain
from chorus.config import check_counts, check_seconds
from chorus.errors import CallerError, ChorusError, InternalError, http_status
from chorus.protocol import (
    BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    AudioResponse,
    InfoResponse,
    ServiceInfo,
    read_body,
)
from chorus.services import Service, registry

log = logging.getLogger("chorus.miner")

MAX_QUEUE = 8  # requests waiting for a worker before the next is refused with 429


@dataclass
class MinerSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S
    max_queue: int = MAX_QUEUE
    workers: int = 1
    policy: AccessPolicy = field(default_factory=AccessPolicy)

    def __post_init__(self) -> None:
        """Refuse settings a miner cannot serve with (CallerError), before any model loads."""
        check_counts(
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-queue", self.max_queue),
            ("--workers", self.workers),
        )
        check_seconds(("body_timeout_s", self.body_timeout_s))


class InvalidRequest(CallerError):
    """A body that breaks its service's schema; ``detail`` lists field and problem."""

    def __init__(self, detail: list[dict[str, str]]):
        super().__init__("invalid request")
        self.detail = detail


def error_response(error: BaseException) -> JSONResponse:
    """The one place a miner turns an exception into HTTP: status by fault, a reason."""
    status = http_status(error)
    reason = error.reason if isinstance(error, ChorusError) else "internal error"
    body: dict[str, Any] = {"error": reason}
    if isinstance(error, InvalidRequest):
        body["detail"] = error.detail
    headers = {"Retry-After": "1"} if status == 429 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(body, status_code=status, headers=headers)


class Miner:
    """Holds the loaded backends (one per service it serves), the gatekeeper and the queue."""

    def __init__(
        self,
        hotkey: str,
        chain: Chain,
        backends: dict[str, Any],
        settings: MinerSettings | None = None,
        gatekeeper: Gatekeeper | None = None,
    ):
        self.hotkey = hotkey
        self.backends = backends
        self.settings = settings or MinerSettings()
        # Nothing runs yet: the app's lifespan starts reading the metagraph in the
        # background (so the first caller finds it) and gives the generation threads back.
        self.gatekeeper = gatekeeper or Gatekeeper(chain, hotkey, self.settings.policy)
        self.pool = self.new_pool()
        self.pending = 0
        self.served = 0

    def new_pool(self) -> ThreadPoolExecutor:
        """The generation threads (started by the first request)."""
        return ThreadPoolExecutor(self.settings.workers, thread_name_prefix="generate")

    def info(self) -> InfoResponse:
        services = {
            name: ServiceInfo(model=b.model, voices=list(getattr(b, "voices", [])))
            for name, b in self.backends.items()
        }
        return InfoResponse(version=__version__, hotkey=self.hotkey, services=services)

    async def handle(self, service: Service, request: Request) -> JSONResponse:
        try:
            # A caller that names itself is judged on its standing before its body is even
            # read; one that names no one is refused after the body (or its deadline: 408).
            claims = http_auth.HEADER_HOTKEY in request.headers
            if claims:
                await self.gatekeeper.admit(request.headers)
            body = await read_body(
                request, self.settings.max_body_bytes, self.settings.body_timeout_s
            )
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if not claims:
                await self.gatekeeper.admit(request.headers)  # 401: no sender
            self.gatekeeper.verify(request.headers, body, request.method, path)
            if service.name not in self.backends:
                raise CallerError(f"this miner does not serve {service.name}", status=404)
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise CallerError("body is not valid JSON") from None
            try:
                req = service.request.model_validate(payload)
            except ValidationError as e:
                raise InvalidRequest(
                    [
                        {"field": ".".join(map(str, err["loc"])), "problem": err["msg"]}
                        for err in e.errors()
                    ]
                ) from None
            if self.pending >= self.settings.max_queue:
                raise CallerError(
                    f"miner is busy ({self.pending} requests queued); retry later", status=429
                )
            self.pending += 1
            try:
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(self.pool, self.generate, service, req)
            finally:
                self.pending -= 1
            self.served += 1
            return JSONResponse(answer.model_dump())
        except ChorusError as e:
            if http_status(e) >= 500:
                log.error("%s request failed: %s", service.name, e.reason)
            return error_response(e)

    def generate(self, service: Service, req: Any) -> AudioResponse:
        """Run the backend (in a worker thread) and encode its answer. A caller's fault
        (a bad reference, an unknown voice) is the caller's; anything else is ours."""
        backend = self.backends[service.name]
        start = time.perf_counter()
        try:
            samples, rate = service.generate(backend, service.challenge(req))
        except ChorusError:
            raise
        except Exception as e:
            log.exception("%s backend failed", service.name)
            raise InternalError(f"{service.name} generation failed: {type(e).__name__}") from None
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
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        miner.gatekeeper.start()  # the metagraph is read in the background while serving
        miner.pool = miner.new_pool()  # a fresh one each time the app is served
        try:
            yield
        finally:
            miner.gatekeeper.close()
            miner.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="chorus miner",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.get("/health")
    async def health() -> dict:
        view = miner.gatekeeper.view
        age = view.age_s
        return {
            "ok": True,
            "pending": miner.pending,
            "served": miner.served,
            "metagraph_age_s": None if age is None else round(age, 1),
            "chain_error": view.error,
        }

    @app.get("/v1/info")
    async def info() -> InfoResponse:
        return miner.info()

    def add_route(service: Service) -> None:
        async def route(request: Request) -> JSONResponse:
            return await miner.handle(service, request)

        app.post(service.route, name=service.name, response_model=None)(route)

    for service in registry().values():
        add_route(service)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(exc)

    return app

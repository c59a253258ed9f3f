"""The public face of the network: an OpenAI-style HTTP API that end users call with an API
key, answered by the best miners the validator has scored.

Miners answer only signed requests from hotkeys with a validator permit, so the gateway
signs with its own registered wallet. For each request it ranks the miners by their recent
scores for that service (from a validator's state DB), calls the best, and fails over to
the next on an error, a timeout or audio that does not decode. Keys are kept only as
SHA-256 digests and compared in constant time; each key has a token bucket; every request
leaves one JSON line in the request log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from chorus import __version__, audio
from chorus.chain import Chain, Neuron
from chorus.client import MinerClient
from chorus.errors import CallerError, ChorusError, http_status
from chorus.protocol import (
    ANSWER_LIMITS,
    BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    MEDIA_TYPES,
    read_body,
)
from chorus.services import Service, registry
from chorus.store import ValidatorStore

SCORE_WINDOW = 20  # a miner's most recent answers per service that rank it
# OpenAI's error types by status, so their clients raise the right exception.
OPENAI_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}


class NoMiners(ChorusError):
    """No miner can serve this now (none scored yet, or every one tried failed)."""

    status = 503


class RateLimited(CallerError):
    """A key over its rate limit; ``wait`` is how long until it may ask again."""

    def __init__(self, wait: float):
        super().__init__(f"rate limit for this key exceeded; retry in {wait:.1f} s", status=429)
        self.wait = wait


def error_response(error: BaseException) -> JSONResponse:
    """The one place the gateway turns an exception into HTTP, in OpenAI's error shape."""
    status = http_status(error)
    message = error.reason if isinstance(error, ChorusError) else "internal error"
    if status in OPENAI_ERROR_TYPES:
        kind = OPENAI_ERROR_TYPES[status]
    else:
        kind = "invalid_request_error" if status < 500 else "service_unavailable"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    headers = (
        {"Retry-After": str(max(1, round(error.wait)))} if isinstance(error, RateLimited) else None
    )
    return JSONResponse(body, status_code=status, headers=headers)


def _first_problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


# -- keys, limits, logs -------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    id: str
    digest: bytes


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(line: str) -> ApiKey:
    """``ID:SECRET``, or a bare ``SECRET`` whose id is derived from its digest."""
    key_id, sep, secret = line.strip().partition(":")
    if not sep:
        secret = key_id
        key_id = "key-" + _digest(secret).hex()[:8]
    if len(secret) < 8:
        raise CallerError(f"API key {key_id!r} is too short (at least 8 characters)")
    return ApiKey(key_id, _digest(secret))


def load_keys(path: str | Path | None = None, keys: list[str] | None = None) -> list[ApiKey]:
    """Keys from a file (one ``ID:SECRET`` a line, ``#`` comments) and from flags."""
    lines = list(keys or [])
    if path is not None:
        text = Path(path).expanduser().read_text()
        lines += [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [parse_key(line) for line in lines]


@dataclass
class TokenBucket:
    """``rate`` requests a second on average, bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst  # a new key may burst at once

    def take(self) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RequestLog:
    """One JSON line per request, flushed at once so a crash loses nothing."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **record})
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


# -- routing ------------------------------------------------------------------------------


@dataclass
class GatewaySettings:
    timeout_s: float = 30.0
    max_attempts: int = 3
    rate: float = 1.0  # requests per second per key
    burst: float = 10.0
    refresh_s: float = 10.0  # how long a ranking of miners is reused
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass
class Served:
    data: bytes
    uid: int
    attempts: int


class Gateway:
    """Ranks miners from the validator's scores and forwards requests to them."""

    def __init__(
        self,
        wallet: Any,
        chain: Chain,
        store: ValidatorStore,
        keys: list[ApiKey],
        settings: GatewaySettings | None = None,
        log: RequestLog | None = None,
    ):
        if not keys:
            raise CallerError("the gateway needs at least one API key")
        self.settings = settings or GatewaySettings()
        if not (self.settings.rate > 0 and self.settings.burst >= 1):
            raise CallerError("the rate limit needs a rate above 0 and a burst of at least 1")
        self.wallet = wallet
        self.hotkey = wallet.hotkey.ss58_address
        self.chain = chain
        self.store = store
        self.keys = keys
        self.log = log or RequestLog(sys.stdout)
        self.buckets: dict[str, TokenBucket] = {}
        self.client: MinerClient | None = None
        self._ranking: dict[str, list[Neuron]] = {}
        self._ranked_at = float("-inf")

    def authenticate(self, header: str | None) -> ApiKey:
        scheme, _, secret = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise CallerError("missing API key: send 'Authorization: Bearer KEY'", status=401)
        digest = _digest(secret.strip())
        found = None
        for key in self.keys:  # compare with every key, so timing says nothing
            if hmac.compare_digest(key.digest, digest):
                found = key
        if found is None:
            raise CallerError("invalid API key", status=401)
        return found

    def admit(self, key: ApiKey) -> None:
        bucket = self.buckets.setdefault(
            key.id, TokenBucket(self.settings.rate, self.settings.burst)
        )
        wait = bucket.take()
        if wait:
            raise RateLimited(wait)

    def ranking(self, service: str) -> list[Neuron]:
        """Miners serving an axon, best recent mean score for ``service`` first; miners the
        validator never scored above zero there are left out."""
        if time.monotonic() - self._ranked_at > self.settings.refresh_s:
            self._ranking = self._rank_all()
            self._ranked_at = time.monotonic()
        return self._ranking.get(service, [])

    def _rank_all(self) -> dict[str, list[Neuron]]:
        neurons = {n.uid: n for n in self.chain.neurons() if n.url and n.hotkey != self.hotkey}
        recent: dict[tuple[str, int], list[float]] = defaultdict(list)
        for a in self.store.answers(limit=5000):
            n = neurons.get(a.uid)
            if n is None or n.hotkey != a.hotkey:
                continue  # gone, or the uid now belongs to someone else
            scores = recent[a.service, a.uid]
            if len(scores) < SCORE_WINDOW:
                scores.append(a.score)
        ranked: dict[str, list[tuple[float, Neuron]]] = defaultdict(list)
        for (service, uid), scores in recent.items():
            mean = statistics.fmean(scores)
            if mean > 0:
                ranked[service].append((mean, neurons[uid]))
        return {s: [n for _, n in sorted(r, key=lambda p: -p[0])] for s, r in ranked.items()}

    async def forward(self, service: str, request: BaseModel, fmt: str) -> Served:
        """Try the best miners in turn until one returns audio that decodes."""
        miners = self.ranking(service)[: self.settings.max_attempts]
        if not miners:
            raise NoMiners(f"no miner has been scored for {service} yet; try again later")
        assert self.client is not None, "the app's lifespan opens the client"
        failures = []
        for attempt, n in enumerate(miners, 1):
            result = await self.client.call(
                n.url, n.hotkey, service, request, self.settings.timeout_s
            )
            if result.status == 422 and result.error:  # the request itself is at fault
                raise CallerError(f"miner refused the request: {result.error}")
            if result.answer is None:
                failures.append(f"uid {n.uid}: {result.error}")
                continue
            try:
                data = base64.b64decode(result.answer.audio, validate=True)
                samples, rate = audio.decode_bytes(data, ANSWER_LIMITS)
            except (ValueError, audio.AudioError) as e:
                failures.append(f"uid {n.uid}: bad audio ({e})")
                continue
            if result.answer.format != fmt:
                data = audio.encode_bytes(samples, rate, fmt)
            return Served(data, n.uid, attempt)
        raise NoMiners("every miner tried failed: " + "; ".join(failures)[:500])


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes while reading it."""
    raw = await read_body(request, limit, BODY_TIMEOUT_S)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CallerError("body is not valid JSON", status=400) from None


def create_gateway_app(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway.client = MinerClient(gateway.wallet)
        try:
            yield
        finally:
            await gateway.client.aclose()

    app = FastAPI(
        title="chorus gateway",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            gateway.authenticate(request.headers.get("authorization"))
        except ChorusError as e:
            return error_response(e)
        data = [
            {"id": f"chorus-{service}", "object": "model", "owned_by": "chorus", "miners": n}
            for service, described in registry().items()
            if described.gateway_body and (n := len(gateway.ranking(service)))
        ]
        return JSONResponse({"object": "list", "data": data})

    async def serve(service: Service, request: Request) -> Response:
        start = time.perf_counter()
        record: dict[str, Any] = {
            "key": None,
            "route": service.gateway_route,
            "miner_uid": None,
            "attempts": 0,
        }
        try:
            key = gateway.authenticate(request.headers.get("authorization"))
            record["key"] = key.id
            gateway.admit(key)
            payload = await _read_json(request, gateway.settings.max_body_bytes)
            assert service.gateway_body is not None
            try:
                body = service.gateway_body.model_validate(payload)
                miner_request = body.to_miner()
            except ValidationError as e:
                raise CallerError(_first_problem(e), status=400) from None
            served = await gateway.forward(service.name, miner_request, body.response_format)
            record.update(miner_uid=served.uid, attempts=served.attempts)
            response: Response = Response(
                served.data,
                media_type=MEDIA_TYPES[body.response_format],
                headers={"X-Chorus-Miner-Uid": str(served.uid)},
            )
        except ChorusError as e:
            record["error"] = e.reason
            response = error_response(e)
        record.update(status=response.status_code, latency_s=round(time.perf_counter() - start, 4))
        gateway.log.write(**record)
        return response

    def add_route(service: Service) -> None:
        async def handler(request: Request) -> Response:
            return await serve(service, request)

        app.post(service.gateway_route, name=service.name, response_model=None)(handler)

    for service in registry().values():
        if service.gateway_route and service.gateway_body:
            add_route(service)
    return app

"""The public face of the network: an OpenAI-style HTTP API that end users call with an API
key, answered by the best miners the validator has scored.

Miners answer only signed requests from hotkeys with a validator permit, so the gateway
signs with its own registered wallet. For each request it ranks the miners by their recent
scores for that service (from a validator's state DB), calls the best, and fails over to
the next on an error, a timeout or audio that does not decode. A miner that refuses the
request itself (400 or 422: the caller's input is at fault, say a reference recording
that is no speech) ends the request at once with that status and the miner's reason:
every other miner would refuse it too. Keys are kept only as
SHA-256 digests and compared in constant time; each key has a token bucket; every request
leaves one JSON line in the request log.

``/v1/audio/speech`` is OpenAI's: six response formats (``chorus.formats``), ``speed``,
OpenAI's voice names, a miner's own voices, and voices the key uploaded
(``/v1/voices``, kept in the gateway's database, ``chorus.gateway_store``), which clone
miners speak in. The input is split into sentences; the first goes to the best miner
(with failover), the rest to the same miner one after another, each asked for while the
one before is encoded and sent, so the answer starts playing after the first sentence.
Every request's seconds of audio, per key and per miner, go into the database
(``/v1/usage``, the dashboard). ``/`` is a playground page (``chorus.playground``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import statistics
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from chorus import __version__, audio, formats
from chorus.chain import Chain, Neuron
from chorus.client import MinerClient
from chorus.config import check_counts, check_seconds
from chorus.errors import CallerError, ChorusError, http_status
from chorus.formats import SPEECH_RATE_OUT, Encoder, media_type
from chorus.gateway_store import GatewayStore, Usage
from chorus.playground import PLAYGROUND
from chorus.protocol import (
    ANSWER_LIMITS,
    BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    REFERENCE_LIMITS,
    AudioFormat,
    read_body,
)
from chorus.services import Service, registry
from chorus.services.clone import BadReference, CloneRequest, check_reference
from chorus.services.tts import OPENAI_VOICE_NAMES, SpeechBody
from chorus.store import ValidatorStore

log = logging.getLogger("chorus.gateway")

SCORE_WINDOW = 20  # a miner's most recent answers per service that rank it
MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # a voice recording: 30 s of 48 kHz 24-bit stereo WAV fits
# Miner statuses that blame the request itself, not the miner: the gateway passes them on
# instead of failing over. A miner that refuses the gateway (401/403), does not serve the
# service (404), takes smaller bodies (413), is busy (429), too slow (408) or broken (5xx)
# is skipped for the next.
CALLER_FAULT_STATUSES = frozenset({400, 422})
# OpenAI's error types by status, so their clients raise the right exception.
OPENAI_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}


class NoMiners(ChorusError):
    """No miner can serve this now (none scored yet, or every one tried failed)."""

    status = 503

    def __init__(self, reason: str, attempts: int = 0):
        super().__init__(reason)
        self.attempts = attempts


class RequestRefused(CallerError):
    """A miner refused the request for the caller's input (``CALLER_FAULT_STATUSES``):
    its status and reason, and which miner said so."""

    def __init__(self, reason: str, status: int, uid: int, attempts: int):
        super().__init__(reason, status=status)
        self.uid = uid
        self.attempts = attempts


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
        raise CallerError(
            f"the secret of API key {key_id!r} has {len(secret)} characters; at least 8"
        )
    return ApiKey(key_id, _digest(secret))


def load_keys(path: str | Path | None = None, keys: list[str] | None = None) -> list[ApiKey]:
    """Keys from a file (one ``ID:SECRET`` a line, ``#`` comments) and from flags. Ids
    and secrets must be unique: usage and limits are kept per id, and a shared secret
    would be counted against whichever id matched first."""
    lines = list(keys or [])
    if path is not None:
        text = Path(path).expanduser().read_text()
        lines += [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    parsed = [parse_key(line) for line in lines]
    ids: set[str] = set()
    owners: dict[bytes, str] = {}
    for key in parsed:
        if key.id in ids:
            raise CallerError(f"API key id {key.id!r} is given twice; give each key its own id")
        ids.add(key.id)
        if key.digest in owners:
            raise CallerError(
                f"API keys {owners[key.digest]!r} and {key.id!r} share a secret; give each its own"
            )
        owners[key.digest] = key.id
    return parsed


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
    max_upload_bytes: int = MAX_UPLOAD_BYTES  # a voice recording, multipart
    voices_refresh_s: float = 60.0  # how long the miners' voice names are reused

    def __post_init__(self) -> None:
        """Refuse settings a gateway cannot serve with (CallerError), before it starts."""
        if not (self.rate > 0 and self.burst >= 1):  # also refuses NaN
            raise CallerError("the rate limit needs a rate above 0 and a burst of at least 1")
        check_seconds(("--timeout", self.timeout_s))
        check_counts(
            ("--max-attempts", self.max_attempts),
            ("max_body_bytes", self.max_body_bytes),
            ("max_upload_bytes", self.max_upload_bytes),
        )


@dataclass
class Served:
    """One miner's decoded audio, who made it (with the score that ranked it), and how
    many miners were asked for it."""

    samples: np.ndarray
    rate: int
    neuron: Neuron
    score: float
    attempts: int

    @property
    def uid(self) -> int:
        return self.neuron.uid

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


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
        db: GatewayStore | None = None,
    ):
        if not keys:
            raise CallerError("the gateway needs at least one API key")
        self.settings = settings or GatewaySettings()  # checked when it was made
        self.wallet = wallet
        self.hotkey = wallet.hotkey.ss58_address
        self.chain = chain
        self.store = store
        self.keys = keys
        self.log = log or RequestLog(sys.stdout)
        self.db = db or GatewayStore()  # in memory: voices and usage last as long as it
        self.buckets: dict[str, TokenBucket] = {}
        self.client: MinerClient | None = None
        self._ranking: dict[str, list[tuple[Neuron, float]]] = {}
        self._ranked_at = float("-inf")
        self._voices: dict[str, int] = {}
        self._voices_at = float("-inf")

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
        return [n for n, _ in self.ranked(service)]

    def ranked(self, service: str) -> list[tuple[Neuron, float]]:
        """``ranking`` with each miner's recent mean score.

        If the chain or the store cannot be read now, the last ranking is kept (and read
        again at the next refresh); with none yet, ``NoMiners`` says why."""
        if time.monotonic() - self._ranked_at > self.settings.refresh_s:
            try:
                self._ranking = self._rank_all()
            except Exception as e:
                if self._ranked_at == float("-inf"):
                    reason = e.reason if isinstance(e, ChorusError) else type(e).__name__
                    raise NoMiners(f"cannot rank miners now: {reason}") from e
                log.warning("keeping the last ranking of miners: %s", e, exc_info=True)
            self._ranked_at = time.monotonic()
        return self._ranking.get(service, [])

    def _rank_all(self) -> dict[str, list[tuple[Neuron, float]]]:
        neurons = {n.uid: n for n in self.chain.neurons() if n.url and n.hotkey != self.hotkey}
        recent: dict[tuple[str, int], list[float]] = defaultdict(list)
        for a in self.store.answers(limit=5000):
            n = neurons.get(a.uid)
            if n is None or n.hotkey != a.hotkey:
                continue  # gone, or the uid now belongs to someone else
            scores = recent[a.service, a.uid]
            if len(scores) < SCORE_WINDOW:
                scores.append(a.score)
        ranked: dict[str, list[tuple[Neuron, float]]] = defaultdict(list)
        for (service, uid), scores in recent.items():
            mean = statistics.fmean(scores)
            if mean > 0:
                ranked[service].append((neurons[uid], mean))
        return {s: sorted(r, key=lambda p: -p[1]) for s, r in ranked.items()}

    async def forward(
        self, service: str, request: BaseModel, prefer: Neuron | None = None
    ) -> Served:
        """Try the best miners in turn (``prefer`` first, if given) until one returns
        audio that decodes; a miner that blames the request (``CALLER_FAULT_STATUSES``)
        ends it with its status and reason. The ranking is read off the event loop: a
        chain read may block."""
        ranked = await asyncio.to_thread(self.ranked, service)
        if prefer is not None:
            score = next((s for n, s in ranked if n.uid == prefer.uid), 0.0)
            ranked = [(prefer, score), *((n, s) for n, s in ranked if n.uid != prefer.uid)]
        miners = ranked[: self.settings.max_attempts]
        if not miners:
            raise NoMiners(f"no miner has been scored for {service} yet; try again later")
        assert self.client is not None, "the app's lifespan opens the client"
        failures = []
        for attempt, (n, score) in enumerate(miners, 1):
            result = await self.client.call(
                n.url, n.hotkey, service, request, self.settings.timeout_s
            )
            if result.status in CALLER_FAULT_STATUSES and result.answer is None:
                reason = _miner_reason(result.error, result.status)
                raise RequestRefused(reason, result.status, n.uid, attempt)
            if result.answer is None:
                failures.append(f"uid {n.uid}: {result.error}")
                continue
            try:
                data = base64.b64decode(result.answer.audio, validate=True)
                samples, rate = audio.decode_bytes(data, ANSWER_LIMITS)
            except (ValueError, audio.AudioError) as e:
                failures.append(f"uid {n.uid}: bad audio ({e})")
                continue
            return Served(samples, rate, n, score, attempt)
        raise NoMiners("every miner tried failed: " + "; ".join(failures)[:500], len(miners))

    async def miner_voices(self) -> dict[str, int]:
        """The voice names the best TTS miners list in ``/v1/info``, with how many of them
        offer each; read at most every ``voices_refresh_s``, a miner that does not answer
        in 3 s left out."""
        if time.monotonic() - self._voices_at < self.settings.voices_refresh_s:
            return self._voices
        assert self.client is not None, "the app's lifespan opens the client"
        http = self.client.http
        ranked = await asyncio.to_thread(self.ranking, "tts")

        async def voices_of(n: Neuron) -> list[str]:
            try:
                r = await http.get(f"{n.url}/v1/info", timeout=3.0)
                voices = r.json()["services"]["tts"]["voices"]
                return [str(v)[:64] for v in voices][:50] if isinstance(voices, list) else []
            except Exception:  # a miner's info is a courtesy: never fail the list for it
                return []

        counts: dict[str, int] = defaultdict(int)
        for names in await asyncio.gather(*(voices_of(n) for n in ranked[:5])):
            for name in set(names):
                counts[name] += 1
        self._voices, self._voices_at = dict(counts), time.monotonic()
        return self._voices


def _miner_reason(error: str | None, status: int) -> str:
    """The reason a miner gave, without the client's ``HTTP <status>: `` prefix."""
    text = error or f"HTTP {status}"
    prefix = f"HTTP {status}: "
    return (text[len(prefix) :] if text.startswith(prefix) else text) or f"HTTP {status}"


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes while reading it."""
    raw = await read_body(request, limit, BODY_TIMEOUT_S)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CallerError("body is not valid JSON", status=400) from None


def _validate(model: type[BaseModel], payload: Any) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise CallerError(_first_problem(e), status=400) from None


def _miner_request(build: Any, *args: Any) -> BaseModel:
    """A miner request from the caller's body; a field miners would refuse is a 400."""
    try:
        return build(*args)
    except ValidationError as e:
        raise CallerError(_first_problem(e), status=400) from None


# -- one request, start to end ------------------------------------------------------------


@dataclass
class Exchange:
    """What one request did, for its log line and its usage rows: who asked, which
    miners made how many seconds of the answer, and how it ended."""

    route: str
    start: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: secrets.token_hex(8))
    key: ApiKey | None = None
    service: str | None = None
    status: int = 200
    error: str | None = None
    attempts: int = 0
    refused_by: int | None = None
    ttfb_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    hotkeys: dict[int, str] = field(default_factory=dict)

    def served(self, s: Served, seconds: float) -> None:
        self.attempts += s.attempts
        self.seconds[s.uid] += seconds
        self.hotkeys[s.uid] = s.neuron.hotkey

    def failed(self, e: BaseException) -> JSONResponse:
        self.status = http_status(e)
        self.error = (
            e.reason if isinstance(e, ChorusError) else f"internal error: {type(e).__name__}"
        )
        if isinstance(e, RequestRefused):
            self.attempts += e.attempts
            self.refused_by = e.uid
        elif isinstance(e, NoMiners):
            self.attempts += e.attempts
        return error_response(e)

    def first_byte(self) -> None:
        if self.ttfb_s is None:
            self.ttfb_s = round(time.perf_counter() - self.start, 4)

    def close(self, gateway: Gateway) -> None:
        """Write the request's log line and, for a known key, its usage rows."""
        uids = list(self.seconds)
        record: dict[str, Any] = {
            "key": self.key.id if self.key else None,
            "route": self.route,
            "miner_uid": uids[0] if uids else self.refused_by,
            "attempts": self.attempts,
        }
        if self.error is not None:
            record["error"] = self.error
        record["status"] = self.status
        record["latency_s"] = round(time.perf_counter() - self.start, 4)
        if self.ttfb_s is not None:
            record["ttfb_s"] = self.ttfb_s
        if uids:
            record["seconds"] = round(sum(self.seconds.values()), 3)
        if len(uids) > 1:
            record["miner_uids"] = uids
        record.update(self.extra)
        gateway.log.write(**record)
        if self.key is None:
            return
        rows = [
            Usage(
                self.request_id,
                self.key.id,
                self.route,
                self.status,
                self.service,
                uid,
                self.hotkeys.get(uid),
                round(seconds, 4),
            )
            for uid, seconds in self.seconds.items()
        ] or [Usage(self.request_id, self.key.id, self.route, self.status, self.service)]
        try:
            gateway.db.record(rows)
        except Exception:  # usage is bookkeeping: a full disk must not fail the answer
            log.exception("could not record usage for %s", self.request_id)


def _headers(served: Served, exchange: Exchange, rate: int) -> dict[str, str]:
    return {
        "X-Chorus-Miner-Uid": str(served.uid),
        "X-Chorus-Miner-Score": f"{served.score:.3f}",
        "X-Chorus-Service": exchange.service or "",
        "X-Chorus-Sample-Rate": str(rate),
        "X-Request-Id": exchange.request_id,
    }


# -- the app ------------------------------------------------------------------------------


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

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> str:
        return PLAYGROUND

    def key_of(request: Request) -> ApiKey:
        return gateway.authenticate(request.headers.get("authorization"))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            key_of(request)
        except ChorusError as e:
            return error_response(e)

        def count() -> dict[str, int]:
            return {
                service: len(gateway.ranking(service))
                for service, described in registry().items()
                if described.gateway_body
            }

        try:
            miners = await asyncio.to_thread(count)  # a chain read may block
        except ChorusError as e:
            return error_response(e)
        data = [
            {"id": f"chorus-{service}", "object": "model", "owned_by": "chorus", "miners": n}
            for service, n in miners.items()
            if n
        ]
        return JSONResponse({"object": "list", "data": data})

    # -- speech: OpenAI's route, streamed sentence by sentence

    async def speech(request: Request) -> Response:
        ex = Exchange(SPEECH_ROUTE)
        try:
            ex.key = key = key_of(request)
            gateway.admit(key)
            body: SpeechBody = _validate(
                SpeechBody, await _read_json(request, gateway.settings.max_body_bytes)
            )
            texts = body.chunks()
            voice_id = body.custom_voice
            if voice_id is not None:
                flac = await asyncio.to_thread(gateway.db.voice_audio, key.id, voice_id)
                if flac is None:
                    raise CallerError(f"no voice {voice_id!r} for this key", status=404)
                ref = base64.b64encode(flac).decode("ascii")
                ex.service = "clone"
                requests: list[BaseModel] = [
                    _miner_request(_clone_request, text, ref, body.miner_format) for text in texts
                ]
            else:
                ex.service = "tts"
                requests = [_miner_request(body.to_miner, text) for text in texts]
            ex.extra = {"format": body.response_format, "chunks": len(requests)}
            first = await gateway.forward(ex.service, requests[0])
        except Exception as e:
            if not isinstance(e, ChorusError):
                log.exception("unexpected error on %s", SPEECH_ROUTE)
            response = ex.failed(e)
            ex.close(gateway)
            return response
        encoder = Encoder(body.response_format, SPEECH_RATE_OUT, streaming=len(requests) > 1)
        return StreamingResponse(
            _speak(gateway, ex, body, requests, first, encoder),
            media_type=media_type(body.response_format),
            headers=_headers(first, ex, encoder.rate),
        )

    app.post(SPEECH_ROUTE, name="speech", response_model=None)(speech)

    # -- every other service's route: one miner request, one answer

    async def serve(service: Service, request: Request) -> Response:
        ex = Exchange(service.gateway_route or "", service=service.name)
        try:
            ex.key = key = key_of(request)
            gateway.admit(key)
            payload = await _read_json(request, gateway.settings.max_body_bytes)
            assert service.gateway_body is not None
            body = _validate(service.gateway_body, payload)
            miner_request = _miner_request(lambda: body.for_miner().to_miner())
            served = await gateway.forward(service.name, miner_request)
            fmt = body.response_format
            data = await asyncio.to_thread(formats.encode, served.samples, served.rate, fmt)
            ex.served(served, served.seconds)
            ex.extra = {"format": fmt}
            response: Response = Response(
                data,
                media_type=media_type(fmt),
                headers=_headers(served, ex, formats.output_rate(fmt, served.rate)),
            )
        except Exception as e:
            if not isinstance(e, ChorusError):
                log.exception("unexpected error on %s", service.gateway_route)
            response = ex.failed(e)
        ex.close(gateway)
        return response

    def add_route(service: Service) -> None:
        async def handler(request: Request) -> Response:
            return await serve(service, request)

        app.post(service.gateway_route, name=service.name, response_model=None)(handler)

    for service in registry().values():
        if service.gateway_route and service.gateway_body and service.gateway_route != SPEECH_ROUTE:
            add_route(service)

    # -- voices

    async def upload_voice(request: Request) -> Response:
        ex = Exchange(request.url.path)
        try:
            ex.key = key = key_of(request)
            gateway.admit(key)
            raw = await read_body(request, gateway.settings.max_upload_bytes, BODY_TIMEOUT_S)
            name, data, consent = await _voice_form(request, raw)
            samples, rate = await asyncio.to_thread(_checked_reference, data)
            flac = await asyncio.to_thread(audio.encode_bytes, samples, rate, "flac")
            voice = await asyncio.to_thread(
                gateway.db.add_voice, key.id, name, flac, len(samples) / rate, rate, consent
            )
            ex.extra = {"voice": voice.id}
            response: Response = JSONResponse(voice.to_json(), status_code=201)
        except Exception as e:
            if not isinstance(e, ChorusError):
                log.exception("unexpected error on %s", request.url.path)
            response = ex.failed(e)
        ex.status = response.status_code
        ex.close(gateway)
        return response

    async def own_voices(request: Request) -> Response:
        try:
            key = key_of(request)
        except ChorusError as e:
            return error_response(e)
        voices = await asyncio.to_thread(gateway.db.voices, key.id)
        return JSONResponse({"object": "list", "data": [v.to_json() for v in voices]})

    async def all_voices(request: Request) -> Response:
        """Every voice this key can name: OpenAI's, the miners' own, and its uploads."""
        try:
            key = key_of(request)
            offered = await gateway.miner_voices()
        except ChorusError as e:
            return error_response(e)
        data: list[dict[str, Any]] = [
            {
                "id": name,
                "object": "audio.voice",
                "type": "builtin",
                "name": name,
                "served_as": "each miner's default voice",
            }
            for name in OPENAI_VOICE_NAMES
        ]
        data += [
            {"id": name, "object": "audio.voice", "type": "miner", "name": name, "miners": n}
            for name, n in sorted(offered.items())
        ]
        voices = await asyncio.to_thread(gateway.db.voices, key.id)
        data += [v.to_json() for v in voices]
        return JSONResponse({"object": "list", "data": data})

    async def one_voice(request: Request, voice_id: str) -> Response:
        try:
            key = key_of(request)
            voice = await asyncio.to_thread(gateway.db.voice, key.id, voice_id)
            if voice is None:
                raise CallerError(f"no voice {voice_id!r} for this key", status=404)
        except ChorusError as e:
            return error_response(e)
        return JSONResponse(voice.to_json())

    async def delete_voice(request: Request, voice_id: str) -> Response:
        try:
            key = key_of(request)
            if not await asyncio.to_thread(gateway.db.delete_voice, key.id, voice_id):
                raise CallerError(f"no voice {voice_id!r} for this key", status=404)
        except ChorusError as e:
            return error_response(e)
        return JSONResponse({"id": voice_id, "object": "audio.voice.deleted", "deleted": True})

    for prefix in ("/v1/voices", "/v1/audio/voices"):
        app.post(prefix, response_model=None)(upload_voice)
        app.get(f"{prefix}/{{voice_id}}", response_model=None)(one_voice)
        app.delete(f"{prefix}/{{voice_id}}", response_model=None)(delete_voice)
    app.get("/v1/voices", response_model=None)(own_voices)
    app.get("/v1/audio/voices", response_model=None)(all_voices)

    # -- usage

    @app.get("/v1/usage", response_model=None)
    async def usage(request: Request, since: float | None = None) -> Response:
        """This key's requests and seconds of audio served, in all, by miner and by route
        (``since``: a Unix time)."""
        try:
            key = key_of(request)
        except ChorusError as e:
            return error_response(e)
        used = await asyncio.to_thread(gateway.db.usage, key.id, since)
        return JSONResponse({"object": "usage", "key": key.id, "since": since, **used.to_json()})

    return app


SPEECH_ROUTE = "/v1/audio/speech"
SENTENCE_GAP_S = 0.25  # silence between two sentences spoken by separate requests
PIPELINE_DEPTH = 1  # sentences asked for ahead of the one being sent (one miner, in turn)


def _clone_request(text: str, reference: str, fmt: AudioFormat) -> CloneRequest:
    return CloneRequest(text=text, reference=reference, format=fmt)


async def _speak(
    gateway: Gateway,
    ex: Exchange,
    body: SpeechBody,
    requests: list[BaseModel],
    first: Served,
    encoder: Encoder,
) -> AsyncIterator[bytes]:
    """The answer as it is made: each sentence's audio, stretched to ``speed`` and
    encoded, sent as soon as its miner answers. The next ``PIPELINE_DEPTH`` sentences are
    asked of the miner that spoke the last one (failing over like any request) while this
    one is encoded and sent. A failure after the first bytes can no longer change the
    status: the stream is cut short, which the client sees as an incomplete answer, and
    logged."""
    service = ex.service
    assert service is not None
    pending: deque[asyncio.Task[Served]] = deque()
    asked = 1  # requests[0] is ``first``

    def ask_ahead(miner: Neuron) -> None:
        nonlocal asked
        while asked < len(requests) and len(pending) < PIPELINE_DEPTH:
            forward = gateway.forward(service, requests[asked], prefer=miner)
            pending.append(asyncio.create_task(forward))
            asked += 1

    def render(s: Served, gap: bool) -> tuple[bytes, float]:
        x = s.samples
        if gap:
            x = np.concatenate([np.zeros(int(SENTENCE_GAP_S * s.rate), np.float32), x])
        if body.speed != 1.0:
            x = formats.time_stretch(x, s.rate, body.speed)
        before = encoder.frames
        data = encoder.write(x, s.rate)
        return data, (encoder.frames - before) / encoder.rate

    try:
        served = first
        for i in range(len(requests)):
            ask_ahead(served.neuron)
            data, seconds = await asyncio.to_thread(render, served, i > 0)
            ex.served(served, seconds)
            if data:
                ex.first_byte()
                yield data
            if pending:
                served = await pending.popleft()
        before = encoder.frames
        tail = await asyncio.to_thread(encoder.finish)
        # what the resampler still held belongs to the last sentence's miner
        ex.seconds[served.uid] += (encoder.frames - before) / encoder.rate
        if tail:
            ex.first_byte()
            yield tail
    except ChorusError as e:
        ex.failed(e)
        ex.error = f"cut short after {sum(ex.seconds.values()):.1f} s: {e.reason}"
        log.warning("speech %s cut short: %s", ex.request_id, e.reason)
        raise
    except BaseException as e:  # the client went away (cancelled), or our bug
        ex.status = 499 if isinstance(e, asyncio.CancelledError | GeneratorExit) else 500
        ex.error = "client closed the connection" if ex.status == 499 else repr(e)[:200]
        raise
    finally:
        for task in pending:  # the client left, or a sentence failed: drop the rest
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        ex.close(gateway)


_FORM_FILES = ("file", "audio_sample")  # ours, and OpenAI's name for it


async def _voice_form(request: Request, raw: bytes) -> tuple[str, bytes, str | None]:
    """The uploaded recording, its name and consent id from a multipart form."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise CallerError(
            "send the recording as multipart/form-data: a file in 'file' (or OpenAI's"
            " 'audio_sample') and an optional 'name'",
            status=400,
        )

    async def stream() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(request.headers, stream(), max_files=2, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise CallerError(f"bad multipart form: {e.message}", status=400) from None
    try:
        upload = next((u for f in _FORM_FILES if isinstance(u := form.get(f), UploadFile)), None)
        if upload is None:
            raise CallerError("no recording: send a file in the form field 'file'", 400)
        data = await upload.read()
        given = form.get("name")
        name = given if isinstance(given, str) and given.strip() else None
        name = (name or Path(upload.filename or "").stem or "my voice").strip()[:64]
        consent = form.get("consent")
        return name, data, consent[:128] if isinstance(consent, str) else None
    finally:
        await form.close()


def _checked_reference(data: bytes) -> tuple[np.ndarray, int]:
    """An uploaded recording decoded and checked as clone miners check a reference
    (``chorus.services.clone.check_reference``): 2-30 s, 16-48 kHz, speech."""
    try:
        samples, rate = formats.decode_upload(data, REFERENCE_LIMITS)
    except audio.AudioError as e:
        raise BadReference(f"recording refused: {e}") from None
    check_reference(samples, rate)
    return samples, rate

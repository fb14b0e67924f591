"""The HTTP side: both APIs, health, metrics and the page, as one FastAPI app.

Handlers only parse, check and wait: every sentence goes through the :class:`Batcher`'s
queue to the worker thread that owns the model, so the event loop keeps answering (health,
metrics, other clients, a client that sends slowly or goes away) while batches decode.

Bodies are read and checked here rather than by FastAPI's model validation: LibreTranslate
clients send the same fields as JSON or as form fields, and every refusal must be one line in
``{"error": ...}`` naming the field, the item and the limit (FastAPI's 422 lists are neither).
The pydantic models below describe the APIs in the OpenAPI document (``/docs``,
``/openapi.json``); they do not validate.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest

from translate.config import ConfigError
from translate.inference.infer_io import translation_record
from translate.inference.translator import Translator
from translate.search.domain_choice import choose
from translate.serve.batcher import Batcher, Expired, Options, QueueFull, Unavailable
from translate.serve.limits import Limits, RequestError, check_text
from translate.serve.prometheus import CONTENT_TYPE_LATEST, Metrics

__all__ = ["create_app"]

log = logging.getLogger("translate.serve")

LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French",
    "hu": "Hungarian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}
RETRY_AFTER = "1"  # seconds; a full queue drains in about a batch's time


# --------------------------------------------------------------------------- OpenAPI models


class LibreRequest(BaseModel):
    q: str | list[str] = Field(description="the text, or a list of texts; each line of a "
                                           "text is translated on its own")
    source: str = Field(description="the model's source language code, or 'auto'")
    target: str = Field(description="the model's target language code")
    format: str = Field("text", description="'text' only ('html' is refused)")
    alternatives: int = Field(0, description="extra translations per text (n-best)")
    api_key: str | None = Field(None, description="accepted and ignored")


class LibreResponse(BaseModel):
    translatedText: str | list[str]  # noqa: N815 (LibreTranslate's field name)
    alternatives: list[str] | list[list[str]] | None = None


class V1Request(BaseModel):
    sentences: list[str] = Field(description="one sentence per item; empty items answer empty")
    n_best: int = Field(1, description="hypotheses per sentence, up to the service's beam")
    domain: str | list[str] | None = Field(
        None, description="domain-conditioned models: the label(s) to condition on, 'none' "
                          "for no domain; omitted: the tagger's prediction")


class V1Translation(BaseModel):
    translation: str
    score: float | None
    scores_over: str
    nbest: list[dict[str, Any]] | None = None
    domains: dict[str, float]
    domain_probs: dict[str, float]
    conditioning: dict[str, Any] | None = None
    warnings: list[str] | None = None


class V1Response(BaseModel):
    model: str
    translations: list[V1Translation]


class ErrorResponse(BaseModel):
    error: str


_ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 503, 504)}


def _body_doc(model: type[BaseModel], form: bool) -> dict:
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": schema}
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


# --------------------------------------------------------------------------- reading bodies


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"Content-Length: expected a number of bytes, "
                                    f"got {declared!r}")
        if int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of "
                                    f"{limit} bytes (--max-body-bytes)")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body exceeds the limit of {limit} bytes "
                                        "(--max-body-bytes)")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer; logged at debug like any request
        raise RequestError(400, "the client closed the connection before sending the whole "
                                "body") from None
    return b"".join(chunks)


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"request body is not valid UTF-8 (byte {err.start})") from None


def parse_json(body: bytes) -> dict:
    text = _utf8(body)
    if not text.strip():
        raise RequestError(400, "request body is empty; expected a JSON object")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(400, f"malformed JSON: {err.msg} at line {err.lineno} column "
                                f"{err.colno}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise RequestError(400, "expected a JSON object, got "
                                f"{type(value).__name__.replace('NoneType', 'null')}")
    return value


def _fields(pairs: list[tuple[str, str]]) -> dict:
    """Form fields: a repeated field is a list (``q=a&q=b``), a single one a string."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


async def parse_payload(request: Request, body: bytes, form: bool) -> dict:
    """The request's fields, from JSON or (``form``) from form fields."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("", "application/json") or ctype.endswith("+json"):
        return parse_json(body)
    if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{":
        # `curl -d '{...}'` labels JSON as form fields; no form field name starts with "{".
        return parse_json(body)
    if form and ctype == "application/x-www-form-urlencoded":
        try:
            return _fields(parse_qsl(_utf8(body), keep_blank_values=True, encoding="utf-8",
                                     errors="strict"))
        except UnicodeDecodeError:
            raise RequestError(400, "form fields are not valid UTF-8 once percent-decoded"
                               ) from None
    if form and ctype == "multipart/form-data":
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        replay = StarletteRequest(request.scope, receive)
        try:
            data = await replay.form(max_files=0)
        except Exception as err:  # python-multipart's and starlette's parse errors
            raise RequestError(400, f"malformed multipart form: "
                                    f"{getattr(err, 'detail', err)}") from None
        pairs = []
        for key, value in data.multi_items():
            if not isinstance(value, str):
                raise RequestError(400, f"{key}: files are not accepted; send text fields")
            pairs.append((key, value))
        return _fields(pairs)
    accepted = "application/json" + (
        ", application/x-www-form-urlencoded or multipart/form-data" if form else "")
    raise RequestError(415, f"Content-Type {ctype!r} is not accepted; send {accepted}")


def _int_field(payload: dict, name: str, default: int, low: int, high: int,
               hint: str = "") -> int:
    value = payload.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # form fields
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{name}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise RequestError(400, f"{name}: expected {low} to {high}{hint}, got {value}")
    return value


# --------------------------------------------------------------------------- the app


class Service:
    """What the handlers share: the translator (read-only here), queue, limits, metrics."""

    def __init__(self, translator: Translator, batcher: Batcher, limits: Limits,
                 metrics: Metrics, name: str) -> None:
        self.translator = translator
        self.batcher = batcher
        self.limits = limits
        self.metrics = metrics
        self.name = name
        cfg = translator.config
        self.source, self.target = cfg.data.src_lang, cfg.data.tgt_lang
        self.beam = translator.options(**batcher.translate_options).beam_size
        self.conditioned = bool(getattr(translator.model, "conditioned", False))

    def options(self, n_best: int, domain: object) -> Options:
        """Checked options; a bad domain is a 400 here, never an error in the worker."""
        if domain is None:
            domains = None
        elif isinstance(domain, str):
            domains = (domain,)
        elif isinstance(domain, list) and all(isinstance(d, str) for d in domain):
            domains = tuple(domain) or None
        else:
            raise RequestError(400, f"domain: expected a label or a list of labels, "
                                    f"got {domain!r}")
        try:
            choose(list(domains) if domains else None, self.translator.labels,
                   self.translator.thresholds, self.conditioned)
        except ConfigError as err:
            raise RequestError(400, str(err).replace("--domain ", "domain: ", 1)) from None
        return Options(n_best=n_best, domains=domains)

    def check_count(self, count: int, field: str) -> None:
        if count > self.limits.max_sentences:
            raise RequestError(413, f"{field}: {count} items exceed the limit of "
                                    f"{self.limits.max_sentences} per request "
                                    "(--max-sentences)")

    async def translate(self, texts: list[str], options: Options, arrived: float) -> list:
        """Queue ``texts`` and wait for their translations, within the request's deadline."""
        if not texts:
            return []
        if len(texts) > self.limits.max_queue:  # (lines of texts) could never be queued
            raise RequestError(413, f"{len(texts)} sentences (lines) exceed the queue's "
                                    f"limit of {self.limits.max_queue} (--max-queue)")
        timeout = self.limits.timeout
        try:
            future = self.batcher.submit(texts, options, timeout - (time.monotonic() - arrived))
        except QueueFull as err:
            raise RequestError(503, str(err), {"Retry-After": RETRY_AFTER}) from None
        except Unavailable as err:
            raise RequestError(503, str(err), {"Retry-After": RETRY_AFTER}) from None
        remaining = max(0.0, timeout - (time.monotonic() - arrived))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), remaining)
        except (TimeoutError, Expired):
            raise RequestError(504, f"the request outlived its deadline of {timeout:g} s "
                                    "(--timeout)") from None


class Accounting:
    """ASGI middleware: the request's arrival time (its deadline counts from there), the
    request counter and latency histogram, and one debug line per request. Plain ASGI rather
    than ``@app.middleware``, which would copy every request and response through a stream."""

    APIS = {"/translate": "libretranslate", "/v1/translate": "v1"}

    def __init__(self, app, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        scope.setdefault("state", {})["arrived"] = started
        status = 500
        api = self.APIS.get(scope["path"]) if scope["method"] == "POST" else None
        if api is not None:
            self.service.metrics.in_flight.inc()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.monotonic() - started
            if api is not None:
                self.service.metrics.in_flight.dec()
                self.service.metrics.requests.labels(api, str(status)).inc()
                self.service.metrics.latency.labels(api).observe(seconds)
            log.debug("%s %s %d %.1f ms", scope["method"], scope["path"], status,
                      seconds * 1000)


def create_app(service: Service, lifespan=None) -> FastAPI:
    """The app; ``lifespan`` starts and stops the service's worker (see ``__main__``)."""
    app = FastAPI(title="translate", version="1", lifespan=lifespan,
                  description=f"Translation service for {service.name} "
                              f"({service.source}→{service.target}).")
    app.state.service = service
    page = resources.files("translate.serve").joinpath("page.html").read_text("utf-8")
    page = page.replace("{{MODEL}}", html.escape(service.name)).replace(
        "{{PAIR}}", html.escape(f"{service.source} → {service.target}"))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        # A bug: logged with its traceback, answered in one line.
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return JSONResponse({"error": "internal error (logged by the service)"}, 500)

    app.add_middleware(Accounting, service=service)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="The process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="The model is loaded and warmed up",
             responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        if service.batcher.ready.is_set() and not service.batcher._closing:
            return JSONResponse({"status": "ready", "model": service.name})
        state = "failed" if service.batcher.failed else "not ready"
        return JSONResponse({"error": f"model {state}"}, 503,
                            headers={"Retry-After": RETRY_AFTER})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/languages", summary="LibreTranslate: the languages this model serves")
    async def languages() -> list[dict]:
        def entry(code: str, targets: list[str]) -> dict:
            return {"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": targets}
        return [entry(service.source, [service.target]), entry(service.target, [])]

    @app.post("/translate", summary="LibreTranslate-compatible translation",
              response_model=LibreResponse, responses=_ERRORS,
              openapi_extra=_body_doc(LibreRequest, form=True))
    async def libre_translate(request: Request) -> JSONResponse:
        body = await read_body(request, service.limits.max_body_bytes)
        payload = await parse_payload(request, body, form=True)
        return JSONResponse(await _libre(service, payload, request.state.arrived))

    @app.post("/v1/translate", summary="Translations with scores, n-best and domain tags",
              response_model=V1Response, responses=_ERRORS,
              openapi_extra=_body_doc(V1Request, form=False))
    async def v1_translate(request: Request) -> JSONResponse:
        body = await read_body(request, service.limits.max_body_bytes)
        payload = await parse_payload(request, body, form=False)
        return JSONResponse(await _v1(service, payload, request.state.arrived))

    return app


async def _libre(service: Service, payload: dict, arrived: float) -> dict:
    for name in ("q", "source", "target"):
        if name not in payload:
            raise RequestError(400, f"{name}: missing (q: a string or a list of strings; "
                                    "source, target: language codes)")
    source, target = payload["source"], payload["target"]
    if not isinstance(source, str) or not isinstance(target, str):
        raise RequestError(400, "source, target: expected language codes (strings)")
    if source not in (service.source, "auto") or target != service.target:
        raise RequestError(400, f"this model translates {service.source} to {service.target} "
                                f"only, not {source} to {target} (see GET /languages)")
    fmt = payload.get("format", "text")
    if fmt != "text":
        raise RequestError(400, f"format: {fmt!r} is not supported; this model translates "
                                "plain text only (format: text)")
    extra = _int_field(payload, "alternatives", 0, 0, service.beam - 1,
                       f" (the service's beam is {service.beam})")
    q = payload["q"]
    single = not isinstance(q, list)
    items = [q] if single else q
    service.check_count(len(items), "q")
    texts = [check_text(t, "q" if single else f"q[{i}]", service.limits, line_breaks=True)
             for i, t in enumerate(items)]
    # Each line of a text is a sentence to the model, as each line of a file is to `infer`.
    lines = [text.replace("\r\n", "\n").replace("\r", "\n").split("\n") for text in texts]
    flat = [line for item in lines for line in item]
    results = await service.translate(flat, Options(n_best=extra + 1), arrived)
    out, alts, start = [], [], 0
    for item in lines:
        mine = results[start:start + len(item)]
        start += len(item)
        out.append("\n".join(r.text for r in mine))
        alts.append(["\n".join(r.nbest[k][0] if k < len(r.nbest) else r.text for r in mine)
                     for k in range(1, extra + 1)])
    answer: dict[str, Any] = {"translatedText": out[0] if single else out}
    if extra:
        answer["alternatives"] = alts[0] if single else alts
    return answer


_V1_FIELDS = ("sentences", "n_best", "domain")


async def _v1(service: Service, payload: dict, arrived: float) -> dict:
    unknown = [k for k in payload if k not in _V1_FIELDS]
    if unknown:
        raise RequestError(400, f"{unknown[0]}: unknown field (expected "
                                f"{', '.join(_V1_FIELDS)})")
    if "sentences" not in payload:
        raise RequestError(400, "sentences: missing (a list of strings)")
    sentences = payload["sentences"]
    if not isinstance(sentences, list):
        raise RequestError(400, "sentences: expected a list of strings, got "
                                f"{type(sentences).__name__.replace('NoneType', 'null')}")
    service.check_count(len(sentences), "sentences")
    texts = [check_text(t, f"sentences[{i}]", service.limits, line_breaks=False)
             for i, t in enumerate(sentences)]
    n_best = _int_field(payload, "n_best", 1, 1, service.beam,
                        f" (the service's beam is {service.beam})")
    options = service.options(n_best, payload.get("domain"))
    results = await service.translate(texts, options, arrived)
    return {"model": service.name,
            "translations": [translation_record(r, n_best) for r in results]}

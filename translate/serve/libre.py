"""LibreTranslate's API: ``/translate``, ``/detect``, ``/languages``, ``/frontend/settings``.

The fields, their names and the shapes of the answers are LibreTranslate's, so that the
apps, plugins and client libraries written for it (Mastodon, Discourse, Nextcloud, Weblate,
``libretranslatepy``) work against this service unchanged. Every field may come as JSON, as
form fields or in the query string.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from translate.serve.bodies import ERRORS, body_doc, int_field, read_fields
from translate.serve.languages import language_name
from translate.serve.limits import RequestError, check_text
from translate.serve.service import Ask, Detected, Service

__all__ = ["routes"]

FORMATS = ("text", "html")


class LibreRequest(BaseModel):
    q: str | list[str] = Field(description="the text, or a list of texts; each line of a "
                                           "plain text is translated on its own")
    source: str = Field(description="a source language code (GET /languages), or 'auto' to "
                                    "detect each text's language")
    target: str = Field(description="a target language code")
    format: str = Field("text", description="'text' or 'html' (tags kept, text translated)")
    alternatives: int = Field(0, description="extra translations per text (n-best)")
    api_key: str | None = Field(None, description="the client's key (--api-keys)")


class DetectedLanguage(BaseModel):
    confidence: float
    language: str


class LibreResponse(BaseModel):
    translatedText: str | list[str]  # noqa: N815 (LibreTranslate's field name)
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = None  # noqa: N815


class DetectRequest(BaseModel):
    q: str = Field(description="the text whose language is wanted")
    api_key: str | None = None


def routes(service: Service) -> APIRouter:
    router = APIRouter()
    limit = service.limits.max_body_bytes

    @router.get("/languages", summary="LibreTranslate: every source language with its "
                                      "targets ('pivoted': the targets reached through a "
                                      "second model, and through which language)")
    async def languages() -> list[dict]:
        return language_list(service)

    @router.post("/translate", summary="LibreTranslate-compatible translation",
                 response_model=LibreResponse, responses=ERRORS,
                 openapi_extra=body_doc(LibreRequest, form=True))
    async def translate(request: Request) -> JSONResponse:
        payload = await read_fields(request, limit, form=True)
        return JSONResponse(await _translate(service, payload, _client(request),
                                             request.state.arrived))

    @router.post("/detect", summary="LibreTranslate: the languages of a text, best first",
                 response_model=list[DetectedLanguage], responses=ERRORS,
                 openapi_extra=body_doc(DetectRequest, form=True))
    async def detect(request: Request) -> JSONResponse:
        payload = await read_fields(request, limit, form=True)
        return JSONResponse(await _detect(service, payload, _client(request)))

    @router.get("/frontend/settings", summary="LibreTranslate: what a front end needs to know")
    async def frontend_settings() -> dict:
        return _settings(service)

    return router


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def language_list(service: Service) -> list[dict[str, Any]]:
    registry = service.registry
    out = []
    for code in registry.languages:
        targets = registry.targets(code)
        pivoted = {t: registry.routes[(code, t)].pivot for t in targets
                   if registry.routes[(code, t)].pivot}
        out.append({"code": code, "name": language_name(code), "targets": targets,
                    "pivoted": pivoted})
    return out


def _settings(service: Service) -> dict[str, Any]:
    registry = service.registry
    source = registry.sources[0]
    targets = registry.targets(source)
    target = targets[0] if targets else source
    keys = (service.guard.frontend_settings() if service.guard is not None
            else {"apiKeys": False, "keyRequired": False})
    return {"charLimit": service.limits.max_chars, "frontendTimeout": 500, **keys,
            "suggestions": False, "filesTranslation": True,
            "supportedFilesFormat": [".txt", ".html"],
            "language": {"source": {"code": source, "name": language_name(source)},
                         "target": {"code": target, "name": language_name(target)}}}


def _require(payload: dict, names: tuple[str, ...]) -> None:
    for name in names:
        if payload.get(name) in (None, ""):
            raise RequestError(400, f"{name}: missing (q: a string or a list of strings; "
                                    "source, target: language codes)")


async def _detect(service: Service, payload: dict, client: str | None) -> list[dict]:
    _require(payload, ("q",))
    q = check_text(payload["q"], "q", service.limits, line_breaks=True)
    await service.admit(client, payload.get("api_key"), [])
    if service.detector is None:
        raise RequestError(501, "language detection is not available in this service")
    guesses = await service.candidates(q)
    return [Detected(code, confidence).record() for code, confidence in guesses]


async def _translate(service: Service, payload: dict, client: str | None,
                     arrived: float) -> dict:
    _require(payload, ("q", "source", "target"))
    source, target = payload["source"], payload["target"]
    if not isinstance(source, str) or not isinstance(target, str):
        raise RequestError(400, "source, target: expected language codes (strings)")
    fmt = payload.get("format") or "text"
    if fmt not in FORMATS:
        raise RequestError(400, f"format: expected text or html, got {fmt!r}")
    q = payload["q"]
    single = not isinstance(q, list)
    items = [q] if single else q
    where = ["q"] if single else [f"q[{i}]" for i in range(len(items))]
    service.check_count(len(items), "q")
    texts = [check_text(t, w, service.limits, line_breaks=True)
             for t, w in zip(items, where, strict=True)]
    await service.admit(client, payload.get("api_key"), texts)
    detected = await service.detect(texts, target) if source == "auto" else None
    sources = [d.language for d in detected] if detected else [source] * len(texts)
    routes = service.routes(sources, target, where=where if detected else ())
    beam = service.beam(routes)
    extra = int_field(payload, "alternatives", 0, 0, beam - 1,
                      f" (the service's beam is {beam})")
    if fmt == "html":
        if extra:
            raise RequestError(400, "alternatives: not available with format html")
        results = await service.translate(texts, routes, Ask(format="html"), arrived)
        out, alts = [r.text for r in results], [[] for _ in results]
    else:
        out, alts = await _lines(service, texts, routes, extra, arrived)
    answer: dict[str, Any] = {"translatedText": out[0] if single else out}
    if extra:
        answer["alternatives"] = alts[0] if single else alts
    if detected:
        records = [d.record() for d in detected]
        answer["detectedLanguage"] = records[0] if single else records
    return answer


async def _lines(service: Service, texts: list[str], routes: list, extra: int,
                 arrived: float) -> tuple[list[str], list[list[str]]]:
    """Plain texts: each line is a sentence to the model, as each line of a file is to
    ``infer``, and comes back in its place."""
    lines = [text.replace("\r\n", "\n").replace("\r", "\n").split("\n") for text in texts]
    flat = [line for item in lines for line in item]
    flat_routes = [route for route, item in zip(routes, lines, strict=True) for _ in item]
    results = await service.translate(flat, flat_routes, Ask(n_best=extra + 1), arrived)
    out, alts, start = [], [], 0
    for item in lines:
        mine = results[start:start + len(item)]
        start += len(item)
        out.append("\n".join(r.text for r in mine))
        alts.append(["\n".join(r.nbest[k][0] if k < len(r.nbest) else r.text for r in mine)
                     for k in range(1, extra + 1)])
    return out, alts

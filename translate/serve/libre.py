"""LibreTranslate's API: ``POST /translate`` and ``GET /languages``.

The fields, their names and the shapes of the answers are LibreTranslate's, so that the
apps, plugins and client libraries written for it work against this service unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from translate.serve.batcher import Options
from translate.serve.bodies import ERRORS, body_doc, int_field, read_fields
from translate.serve.languages import language_name
from translate.serve.limits import RequestError, check_text
from translate.serve.service import Service

__all__ = ["routes"]


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


def routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/languages", summary="LibreTranslate: the languages this model serves")
    async def languages() -> list[dict]:
        def entry(code: str, targets: list[str]) -> dict:
            return {"code": code, "name": language_name(code), "targets": targets}
        return [entry(service.source, [service.target]), entry(service.target, [])]

    @router.post("/translate", summary="LibreTranslate-compatible translation",
                 response_model=LibreResponse, responses=ERRORS,
                 openapi_extra=body_doc(LibreRequest, form=True))
    async def translate(request: Request) -> JSONResponse:
        payload = await read_fields(request, service.limits.max_body_bytes, form=True)
        return JSONResponse(await _translate(service, payload, request.state.arrived))

    return router


async def _translate(service: Service, payload: dict, arrived: float) -> dict:
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
    extra = int_field(payload, "alternatives", 0, 0, service.beam - 1,
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

"""Our own API, ``POST /v1/translate``: per sentence what ``infer --format jsonl`` writes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from translate.inference.infer_io import translation_record
from translate.serve.bodies import ERRORS, body_doc, int_field, read_fields
from translate.serve.limits import RequestError, check_text
from translate.serve.service import Service

__all__ = ["routes"]


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


FIELDS = ("sentences", "n_best", "domain")


def routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/translate", summary="Translations with scores, n-best and domain tags",
                 response_model=V1Response, responses=ERRORS,
                 openapi_extra=body_doc(V1Request, form=False))
    async def translate(request: Request) -> JSONResponse:
        payload = await read_fields(request, service.limits.max_body_bytes, form=False)
        return JSONResponse(await _translate(service, payload, request.state.arrived))

    return router


async def _translate(service: Service, payload: dict, arrived: float) -> dict:
    unknown = [k for k in payload if k not in FIELDS]
    if unknown:
        raise RequestError(400, f"{unknown[0]}: unknown field (expected "
                                f"{', '.join(FIELDS)})")
    if "sentences" not in payload:
        raise RequestError(400, "sentences: missing (a list of strings)")
    sentences = payload["sentences"]
    if not isinstance(sentences, list):
        raise RequestError(400, "sentences: expected a list of strings, got "
                                f"{type(sentences).__name__.replace('NoneType', 'null')}")
    service.check_count(len(sentences), "sentences")
    texts = [check_text(t, f"sentences[{i}]", service.limits, line_breaks=False)
             for i, t in enumerate(sentences)]
    n_best = int_field(payload, "n_best", 1, 1, service.beam,
                       f" (the service's beam is {service.beam})")
    options = service.options(n_best, payload.get("domain"))
    results = await service.translate(texts, options, arrived)
    return {"model": service.name,
            "translations": [translation_record(r, n_best) for r in results]}

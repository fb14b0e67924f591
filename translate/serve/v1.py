"""Our own API, ``POST /v1/translate``: per sentence what ``infer --format jsonl`` writes,
and ``GET /v1/models``: the models, their pairs and states, and the pivoted pairs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from translate.inference.infer_io import translation_record
from translate.serve.bodies import ERRORS, body_doc, int_field, read_fields
from translate.serve.limits import RequestError, check_text
from translate.serve.registry import Route
from translate.serve.service import Ask, Service

__all__ = ["routes"]


class V1Request(BaseModel):
    sentences: list[str] = Field(description="one sentence per item; empty items answer empty")
    source: str | None = Field(None, description="source language code, or 'auto' (each "
                                                 "sentence's detected); with target")
    target: str | None = Field(None, description="target language code; with source")
    model: str | None = Field(None, description="a model's name (GET /v1/models), instead "
                                                "of source and target")
    n_best: int = Field(1, description="hypotheses per sentence, up to the model's beam")
    domain: str | list[str] | None = Field(
        None, description="domain-conditioned models: the label(s) to condition on, 'none' "
                          "for no domain; omitted: the tagger's prediction")
    format: str = Field("text", description="'text' or 'html'")


class V1Translation(BaseModel):
    translation: str
    score: float | None
    scores_over: str
    nbest: list[dict[str, Any]] | None = None
    domains: dict[str, float]
    domain_probs: dict[str, float]
    conditioning: dict[str, Any] | None = None
    warnings: list[str] | None = None
    detected: dict[str, Any] | None = Field(None, description="source 'auto': the detected "
                                                              "language and confidence")
    model: str | None = Field(None, description="source 'auto': the model(s) that translated")
    pivot: str | None = Field(None, description="source 'auto': the pivot language, if any")


class V1Response(BaseModel):
    model: str | None = Field(description="the model, 'a+b' through a pivot; null when the "
                                          "detected sources took several routes")
    pivot: str | None = Field(None, description="the language a pivoted pair goes through")
    translations: list[V1Translation]


FIELDS = ("sentences", "source", "target", "model", "n_best", "domain", "format")


def routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/translate", summary="Translations with scores, n-best and domain tags",
                 response_model=V1Response, responses=ERRORS,
                 openapi_extra=body_doc(V1Request, form=False))
    async def translate(request: Request) -> JSONResponse:
        payload = await read_fields(request, service.limits.max_body_bytes, form=False)
        client = request.client.host if request.client else None
        return JSONResponse(await _translate(service, payload, client, request.state.arrived))

    @router.get("/v1/models", summary="The models, their pairs and states; pivoted pairs")
    async def models() -> dict:
        registry = service.registry
        return {"models": [{"name": m.name, "source": m.spec.source, "target": m.spec.target,
                            "state": m.state, "run_dirs": [str(d) for d in m.spec.run_dirs]}
                           for m in registry.models.values()],
                "pivots": [{"source": r.source, "target": r.target, "pivot": r.pivot,
                            "model": r.name} for r in registry.routes.values() if r.pivot]}

    return router


def _strings(payload: dict, names: tuple[str, ...]) -> None:
    for name in names:
        if name in payload and not isinstance(payload[name], str):
            raise RequestError(400, f"{name}: expected a string, got {payload[name]!r}")


def _direction(service: Service, payload: dict) -> tuple[str | None, str | None, str | None]:
    """(source, target, model) as asked; a lone model serves requests that name nothing."""
    _strings(payload, ("source", "target", "model", "format"))
    source, target, model = (payload.get(k) for k in ("source", "target", "model"))
    if model is not None:
        if source is not None or target is not None:
            raise RequestError(400, "model: give either model or source and target")
        return None, None, model
    if (source is None) != (target is None):
        missing = "target" if target is None else "source"
        raise RequestError(400, f"{missing}: missing (source and target go together)")
    if source is None:
        if len(service.registry.models) > 1:
            raise RequestError(400, "source, target: missing; this service serves several "
                                    "pairs (GET /languages), name one or a model")
        return None, None, next(iter(service.registry.models))
    return source, target, None


async def _translate(service: Service, payload: dict, client: str | None,
                     arrived: float) -> dict:
    unknown = [k for k in payload if k not in FIELDS and k != "api_key"]
    if unknown:
        raise RequestError(400, f"{unknown[0]}: unknown field (expected "
                                f"{', '.join(FIELDS)})")
    if "sentences" not in payload:
        raise RequestError(400, "sentences: missing (a list of strings)")
    sentences = payload["sentences"]
    if not isinstance(sentences, list):
        raise RequestError(400, "sentences: expected a list of strings, got "
                                f"{type(sentences).__name__.replace('NoneType', 'null')}")
    source, target, model = _direction(service, payload)
    fmt = payload.get("format", "text")
    if fmt not in ("text", "html"):
        raise RequestError(400, f"format: expected text or html, got {fmt!r}")
    service.check_count(len(sentences), "sentences")
    where = [f"sentences[{i}]" for i in range(len(sentences))]
    texts = [check_text(t, w, service.limits, line_breaks=fmt == "html")
             for t, w in zip(sentences, where, strict=True)]
    await service.admit(client, payload.get("api_key"), texts)
    detected = await service.detect(texts, target) if source == "auto" else None
    sources = [d.language for d in detected] if detected else [source] * len(texts)
    routes = service.routes(sources, target or "", model, where if detected else ())
    beam = service.beam(routes)
    n_best = int_field(payload, "n_best", 1, 1, beam, f" (the model's beam is {beam})")
    ask = Ask(n_best=n_best, domain=payload.get("domain"), format=fmt)
    results = await service.translate(texts, routes, ask, arrived)
    records = [translation_record(r, n_best) for r in results]
    distinct = set(routes)
    one: Route | None = next(iter(distinct)) if len(distinct) == 1 else None
    if detected:
        for record, found, route in zip(records, detected, routes, strict=True):
            record.update(detected=found.record(), model=route.name if route else None,
                          pivot=route.pivot if route else None)
    return {"model": one.name if one else None, "pivot": one.pivot if one else None,
            "translations": records}

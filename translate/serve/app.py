"""The FastAPI app: both APIs, file translation, health, metrics and the page, put together.

Each concern lives in its own module and this one only assembles them: reading bodies and
answering errors (:mod:`.bodies`), LibreTranslate's API (:mod:`.libre`) and its file
translation (:mod:`.files`), the ``/v1`` API (:mod:`.v1`), the page (:mod:`.page`), and
what their handlers share - the models, the limits (:mod:`.service`, :mod:`.registry`) and
the metrics (:mod:`.prometheus`). Browsers on other origins may call it (CORS, with the
preflights answered), as they call LibreTranslate.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from translate.serve import files, libre, page, v1
from translate.serve.bodies import ErrorResponse, install_error_handlers
from translate.serve.prometheus import CONTENT_TYPE_LATEST, Accounting
from translate.serve.service import RETRY_AFTER, Service

__all__ = ["Service", "create_app"]


def create_app(service: Service, lifespan=None, cors_origins: Sequence[str] = ("*",),
               store: files.FileStore | None = None) -> FastAPI:
    """The app; ``lifespan`` starts and stops the models' workers (see ``__main__``);
    ``cors_origins``: the origins whose pages may call it (none: only same-origin pages)."""
    registry = service.registry
    pairs = ", ".join(f"{s}→{t}" for s, t in registry.routes)
    app = FastAPI(title="translate", version="1", lifespan=lifespan,
                  description=f"Translation service for {pairs}.")
    app.state.service = service
    install_error_handlers(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"], max_age=600)
    app.add_middleware(Accounting, metrics=service.metrics)

    @app.get("/health", summary="The process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="The models loaded at start are warmed up",
             responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        models = {m.name: m.state for m in registry.models.values()}
        if registry.ready():
            return JSONResponse({"status": "ready", "models": models})
        state = "failed" if registry.failed() else "not ready"
        return JSONResponse({"error": f"model {state}", "models": models}, 503,
                            headers={"Retry-After": RETRY_AFTER})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    for module in (page, libre, v1):
        app.include_router(module.routes(service))
    app.include_router(files.routes(service, store or files.FileStore()))
    return app

"""The FastAPI app: both APIs, health, metrics and the page, put together.

Each concern lives in its own module and this one only assembles them: reading bodies and
answering errors (:mod:`.bodies`), LibreTranslate's API (:mod:`.libre`), the ``/v1`` API
(:mod:`.v1`), the page (:mod:`.page`), and what their handlers share - the model, its queue,
the limits (:mod:`.service`) and the metrics (:mod:`.prometheus`).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from translate.serve import libre, page, v1
from translate.serve.bodies import ErrorResponse, install_error_handlers
from translate.serve.prometheus import CONTENT_TYPE_LATEST, Accounting
from translate.serve.service import RETRY_AFTER, Service

__all__ = ["Service", "create_app"]


def create_app(service: Service, lifespan=None) -> FastAPI:
    """The app; ``lifespan`` starts and stops the service's worker (see ``__main__``)."""
    app = FastAPI(title="translate", version="1", lifespan=lifespan,
                  description=f"Translation service for {service.name} "
                              f"({service.source}→{service.target}).")
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(Accounting, metrics=service.metrics)

    @app.get("/health", summary="The process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="The model is loaded and warmed up",
             responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        if service.ready():
            return JSONResponse({"status": "ready", "model": service.name})
        state = "failed" if service.batcher.failed else "not ready"
        return JSONResponse({"error": f"model {state}"}, 503,
                            headers={"Retry-After": RETRY_AFTER})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    for module in (page, libre, v1):
        app.include_router(module.routes(service))
    return app

"""The translation page at ``/``: one self-contained HTML file, nothing from the internet."""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from translate.serve.service import Service

__all__ = ["routes"]


def routes(service: Service) -> APIRouter:
    router = APIRouter()
    page = resources.files("translate.serve").joinpath("page.html").read_text("utf-8")
    page = page.replace("{{MODEL}}", html.escape(service.name)).replace(
        "{{PAIR}}", html.escape(f"{service.source} → {service.target}"))

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return router

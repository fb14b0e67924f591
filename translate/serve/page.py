"""The translation page at ``/``: one self-contained HTML file, nothing from the internet.

It asks ``/languages`` for the pairs (a source selector, with "detect language", and the
chosen source's targets) and translates through ``/v1/translate``, showing the detected
languages and the domain tags the model predicts.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from translate.serve.service import Service

__all__ = ["routes"]


def routes(service: Service) -> APIRouter:
    router = APIRouter()
    names = list(service.registry.models)
    label = ("model " if len(names) == 1 else "models ") + ", ".join(names)
    page = resources.files("translate.serve").joinpath("page.html").read_text("utf-8")
    page = page.replace("{{MODEL}}", html.escape(label))

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return router

"""LibreTranslate's file translation: ``POST /translate_file``, ``GET /download_file/NAME``.

A ``.txt`` file is translated line by line (as ``infer`` translates a file; empty lines stay
empty), an ``.html`` file as one HTML document. The translation is kept in memory under a
random name for :data:`KEEP_SECONDS` and then forgotten; the upload is bounded by
``--max-body-bytes`` and the store by :data:`MAX_FILES` and :data:`MAX_BYTES` (the oldest
go first), so the service's memory stays bounded whatever clients upload.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import PurePath

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from translate.serve.bodies import ERRORS, Upload, read_fields
from translate.serve.limits import RequestError, check_text
from translate.serve.service import Ask, Service

__all__ = ["FileStore", "routes"]

KEEP_SECONDS = 600.0  # a translated file can be downloaded for ten minutes
MAX_FILES = 256
MAX_BYTES = 64 * 1024 * 1024
KINDS = {".txt": ("text", "text/plain; charset=utf-8"),
         ".html": ("html", "text/html; charset=utf-8"),
         ".htm": ("html", "text/html; charset=utf-8")}


class FileStore:
    """Translated files by name, each kept ``keep`` seconds; thread-safe."""

    def __init__(self, keep: float = KEEP_SECONDS, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> None:
        self.keep, self.max_files, self.max_bytes = keep, max_files, max_bytes
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, filename: str, data: bytes) -> str:
        """Keep ``data``; the name to download it by (random, then the file's own name)."""
        name = f"{secrets.token_hex(16)}.{_safe(filename)}"
        with self._lock:
            self._expire()
            self._files[name] = (time.monotonic() + self.keep, data)
            while (len(self._files) > self.max_files
                   or sum(len(d) for _, d in self._files.values()) > self.max_bytes):
                self._files.popitem(last=False)
        return name

    def get(self, name: str) -> bytes | None:
        with self._lock:
            self._expire()
            entry = self._files.get(name)
        return entry[1] if entry else None

    def _expire(self) -> None:
        now = time.monotonic()
        for name in [n for n, (until, _) in self._files.items() if until < now]:
            del self._files[name]


def _safe(filename: str) -> str:
    """The file's own name without folders or characters a header or a path would mind."""
    name = re.sub(r"[^\w.\-]+", "_", PurePath(filename.replace("\\", "/")).name).strip("._")
    return name or "file"


def routes(service: Service, store: FileStore) -> APIRouter:
    router = APIRouter()

    @router.post("/translate_file", summary="LibreTranslate: translate a .txt or .html file",
                 responses=ERRORS)
    async def translate_file(request: Request) -> JSONResponse:
        payload = await read_fields(request, service.limits.max_body_bytes, form=True,
                                    files=True)
        client = request.client.host if request.client else None
        name = await _translate_file(service, store, payload, client, request.state.arrived)
        return JSONResponse({"translatedFileUrl": f"{request.base_url}download_file/{name}"})

    @router.get("/download_file/{name}", summary="LibreTranslate: a translated file",
                responses={404: ERRORS[400]})
    async def download_file(name: str) -> Response:
        data = store.get(name)
        if data is None:
            raise RequestError(404, f"{name}: no such file (translated files are kept "
                                    f"{KEEP_SECONDS / 60:g} minutes)")
        filename = name.split(".", 1)[1]
        media = KINDS.get(PurePath(filename).suffix.lower(), (None, "text/plain"))[1]
        return Response(data, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})

    return router


async def _translate_file(service: Service, store: FileStore, payload: dict,
                          client: str | None, arrived: float) -> str:
    upload = payload.get("file")
    if not isinstance(upload, Upload):
        raise RequestError(400, "file: missing (send the file as a multipart/form-data field)")
    for field in ("source", "target"):
        if not isinstance(payload.get(field), str) or not payload[field]:
            raise RequestError(400, f"{field}: missing (a language code)")
    suffix = PurePath(upload.filename).suffix.lower()
    if suffix not in KINDS:
        raise RequestError(400, f"file: {upload.filename!r} is not a supported file format "
                                f"(expected {', '.join(KINDS)})")
    fmt = KINDS[suffix][0]
    try:
        text = upload.data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"file: {upload.filename} is not valid UTF-8 (byte "
                                f"{err.start})") from None
    whole = dataclasses.replace(service.limits, max_chars=service.limits.max_body_bytes)
    if fmt == "html":
        texts = [check_text(text, "file", whole, line_breaks=True)]
    else:
        texts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        texts = [check_text(line, f"file: line {i + 1}", service.limits, line_breaks=False)
                 for i, line in enumerate(texts)]
    await service.admit(client, payload.get("api_key"), [text])
    source = payload["source"]
    if source == "auto":  # one language for the whole file, from its beginning
        source = (await service.detect([text[:2000]], payload["target"]))[0].language
    routes = service.routes([source] * len(texts), payload["target"])
    results = await service.translate(texts, routes, Ask(format=fmt), arrived)
    out = "\n".join(r.text for r in results)
    return store.put(upload.filename, out.encode("utf-8"))

"""Reading a request's fields, and answering every refusal in one line.

Bodies are read and checked here rather than by FastAPI's model validation: LibreTranslate
clients send the same fields as JSON, as form fields or in the query string (Nextcloud's
client posts ``/detect?q=...`` with nothing in the body), and every refusal must be one line
in ``{"error": ...}`` naming the field, the item and the limit (FastAPI's 422 lists are
neither). The pydantic models of the two APIs describe them in the OpenAPI document
(``/docs``, ``/openapi.json``); they do not validate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest

from translate.serve.limits import RequestError

__all__ = ["ERRORS", "ErrorResponse", "Upload", "body_doc", "install_error_handlers",
           "int_field", "parse_json", "parse_payload", "read_body", "read_fields"]

log = logging.getLogger("translate.serve")


class ErrorResponse(BaseModel):
    error: str


ERRORS = {code: {"model": ErrorResponse} for code in (400, 403, 413, 415, 429, 503, 504)}


def body_doc(model: type[BaseModel], form: bool) -> dict:
    """``openapi_extra`` for a handler that reads its body itself (JSON, maybe form)."""
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": schema}
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


@dataclass(frozen=True)
class Upload:
    """A file field of a multipart form, read whole (its size is bounded by the body's)."""

    filename: str
    content_type: str
    data: bytes


# --------------------------------------------------------------------------- reading


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


def _utf8(body: bytes, what: str = "request body") -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"{what} is not valid UTF-8 (byte {err.start})") from None


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


def _fields(pairs: list[tuple[str, Any]]) -> dict:
    """Form fields: a repeated field is a list (``q=a&q=b``), a single one a string."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


def _urlencoded(text: str, what: str) -> dict:
    try:
        return _fields(parse_qsl(text, keep_blank_values=True, encoding="utf-8",
                                 errors="strict"))
    except UnicodeDecodeError:
        raise RequestError(400, f"{what} are not valid UTF-8 once percent-decoded") from None


async def _multipart(request: Request, body: bytes, files: bool) -> dict:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    replay = StarletteRequest(request.scope, receive)
    try:
        data = await replay.form(max_files=8 if files else 0)
    except Exception as err:  # python-multipart's and starlette's parse errors
        raise RequestError(400, f"malformed multipart form: "
                                f"{getattr(err, 'detail', err)}") from None
    pairs: list[tuple[str, Any]] = []
    for key, value in data.multi_items():
        if isinstance(value, UploadFile):
            if not files:
                raise RequestError(400, f"{key}: files are not accepted; send text fields")
            pairs.append((key, Upload(value.filename or "", value.content_type or "",
                                      await value.read())))
        else:
            pairs.append((key, value))
    await data.close()
    return _fields(pairs)


async def parse_payload(request: Request, body: bytes, form: bool,
                        files: bool = False) -> dict:
    """The request's fields, from JSON or (``form``) from form fields (``files``: file
    fields too, as :class:`Upload`)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("", "application/json") or ctype.endswith("+json"):
        return parse_json(body)
    if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{":
        # `curl -d '{...}'` labels JSON as form fields; no form field name starts with "{".
        return parse_json(body)
    if form and ctype == "application/x-www-form-urlencoded":
        return _urlencoded(_utf8(body), "form fields")
    if form and ctype == "multipart/form-data":
        return await _multipart(request, body, files)
    accepted = "application/json" + (
        ", application/x-www-form-urlencoded or multipart/form-data" if form else "")
    raise RequestError(415, f"Content-Type {ctype!r} is not accepted; send {accepted}")


async def read_fields(request: Request, limit: int, form: bool, files: bool = False) -> dict:
    """The fields of a request: the query string's, then the body's over them.

    LibreTranslate reads every field from the body or the query string alike; a request
    whose fields are all in the query string may send no body at all.
    """
    query = request.scope.get("query_string", b"")
    fields = _urlencoded(_utf8(query, "query string"), "query string fields") if query else {}
    body = await read_body(request, limit)
    if fields and not body.strip():
        return fields
    return {**fields, **await parse_payload(request, body, form, files)}


def int_field(payload: dict, name: str, default: int, low: int, high: int,
              hint: str = "") -> int:
    """An integer field (a form field's digits count), within ``low``..``high``."""
    value = payload.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # form fields
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{name}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise RequestError(400, f"{name}: expected {low} to {high}{hint}, got {value}")
    return value


# --------------------------------------------------------------------------- refusals


def install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "one line"}``: refusals with their status, Starlette's own
    (404, 405) likewise, and a bug as a logged 500."""

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

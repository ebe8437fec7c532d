"""RFC 9457 problem+json for every error path; nothing internal leaves the process."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ProblemDetail(BaseModel):
    """The body of every error (RFC 9457); 422 adds `errors`."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "model": ProblemDetail,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
    }


# Documented on every /v1 route, so integrators (and schema checks) know the error shape.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem_doc("Bad request"),
    401: _problem_doc("No valid bearer token"),
    403: _problem_doc("The caller's role may not do this"),
    404: _problem_doc("Unknown, or of another municipality"),
    409: _problem_doc("Conflict with the current state"),
    412: _problem_doc("Stale If-Match"),
    422: _problem_doc("Invalid input; `errors` lists each field"),
    428: _problem_doc("If-Match required"),
    503: _problem_doc("A dependency is unavailable"),
}
log = logging.getLogger("mkr.errors")


class Problem(Exception):
    """An error with a status the client should see. Raise it from any layer."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_ or f"https://mkr.al/problems/{HTTPStatus(status).phrase.lower().replace(' ', '-')}"
        self.headers = headers
        self.extra = extra


def not_found(what: str = "resource") -> Problem:
    return Problem(404, f"No such {what}.")


def forbidden(detail: str = "Your role may not do this.") -> Problem:
    return Problem(403, detail)


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, detail, **extra)


def unauthorized(detail: str = "A valid bearer token is required.") -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def invalid(loc: list[str | int], msg: str) -> Problem:
    """A 422 for one field, in the same shape as request validation errors."""
    return Problem(422, "The request has invalid fields.", errors=[{"loc": loc, "msg": msg}])


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_ or "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def unexpected_response(instance: str | None = None) -> JSONResponse:
    """The one answer to an unhandled error, wherever it is caught (this module's handler, or the request
    middleware's last resort): a 500 that says `Connection: close`. After an unhandled error uvicorn closes
    the transport (Starlette re-raises), and where it does not the header makes it: so a client's pool never
    reuses the connection and fails its next request with a read error."""
    return problem_response(
        500,
        "The server could not complete the request; it has been logged.",
        headers={"Connection": "close"},
        instance=instance,
    )


def _clean_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            type_=exc.type,
            headers=exc.headers,
            instance=request.url.path,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only loc and msg: pydantic's `input` would echo personal data back and into logs.
        errors = [{"loc": _clean_loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return problem_response(
            422,
            "The request has invalid fields.",
            type_="https://mkr.al/problems/validation",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, detail, headers=headers, instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The class name only: messages of database errors can quote row values.
        log.error("unhandled error", extra={"error_class": type(exc).__name__})
        return unexpected_response(instance=request.url.path)

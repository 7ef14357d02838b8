"""The REST API's one error body, and the handlers that give every 4xx that shape.

    {"error": {"code": "not_found", "message": "no ticket 12", "detail": null}}

`code` is stable and machine-readable, `message` is for a person, `detail` is optional structure
(the field errors of a 422). Raise `ApiError(status, code, message, detail=...)` from a route;
ninja's own errors (validation, authentication, CSRF, throttling), Django's PermissionDenied,
Http404 and RequestDataTooBig, and unknown routes or methods under /api/ are mapped here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


class ApiError(HttpError):
    """An error the API answers with its uniform body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.detail = detail
        self.headers = headers or {}


class ErrorBody(Schema):
    code: str
    message: str
    detail: Any = None


class ErrorOut(Schema):
    error: ErrorBody


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message}}
    body["error"]["detail"] = detail
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # pydantic's ctx may hold exception objects: keep what a client can use.
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def install(api: NinjaAPI) -> None:
    """Give every error `api` answers the uniform body."""

    def on_api_error(request: HttpRequest, exc: Any) -> HttpResponse:
        return error_response(
            exc.status_code, exc.message, code=exc.code, detail=exc.detail, headers=exc.headers
        )

    def on_validation(request: HttpRequest, exc: Any) -> HttpResponse:
        return error_response(
            422, "the request is not valid", detail=_validation_detail(exc.errors)
        )

    def on_authentication(request: HttpRequest, exc: Any) -> HttpResponse:
        message = exc.message if exc.message != "Unauthorized" else "authentication required"
        return error_response(401, message, headers={"WWW-Authenticate": 'Bearer realm="ledgerly"'})

    def on_throttled(request: HttpRequest, exc: Any) -> HttpResponse:
        wait = max(1, math.ceil(exc.wait or 1))
        return error_response(
            429,
            f"too many requests; retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )

    def on_http_error(request: HttpRequest, exc: Any) -> HttpResponse:
        message = exc.message
        if exc.status_code == 403 and message == "CSRF check Failed":
            return error_response(403, "CSRF check failed", code="csrf_failed")
        return error_response(exc.status_code, message)

    def on_permission_denied(request: HttpRequest, exc: Any) -> HttpResponse:
        return error_response(403, str(exc) or "not allowed")

    def on_not_found(request: HttpRequest, exc: Any) -> HttpResponse:
        return error_response(404, "not found")

    def on_too_big(request: HttpRequest, exc: Any) -> HttpResponse:
        return error_response(413, "the request body is larger than the server accepts")

    api.add_exception_handler(ApiError, on_api_error)
    api.add_exception_handler(ValidationError, on_validation)
    api.add_exception_handler(AuthenticationError, on_authentication)
    api.add_exception_handler(Throttled, on_throttled)
    api.add_exception_handler(HttpError, on_http_error)
    api.add_exception_handler(PermissionDenied, on_permission_denied)
    api.add_exception_handler(Http404, on_not_found)
    api.add_exception_handler(RequestDataTooBig, on_too_big)


def not_found_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """The answer to any path under /api/ that no route matches."""
    return error_response(404, f"no API route {request.path}")


def uniform_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap one of the API's URL views so a 4xx it builds itself (ninja's 405) gets the uniform
    body too."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except Http404:
            return error_response(404, f"no API route {request.path}")
        status = getattr(response, "status_code", 200)
        if 400 <= status < 500 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            replaced = error_response(status, CODES.get(status, "error").replace("_", " "))
            if status == 405 and response.has_header("Allow"):
                replaced["Allow"] = response["Allow"]
            return replaced
        return response

    return wrapped

"""The REST API root (/api/v1/): one django-ninja Router per app is mounted here.

Safe by default: the API's own authentication (`DenyAll`) refuses every request, so a route
is reachable only through the scope it declares (`support.api_auth.scoped("tickets" |
"staff")`: an API key holding the scope, or the session). The OpenAPI schema
(/api/v1/openapi.json) states each operation's scope twice: in `security` (the scope is the
requirement's single role, `[{"ApiKey": ["staff"]}, {"Session": ["staff"]}]`) and as
`x-required-scope`. Every 4xx has the body of ledgerly/apierrors.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.urls import URLPattern, URLResolver, include, path, re_path
from ninja import NinjaAPI, Swagger
from ninja.openapi.schema import OpenAPISchema
from ninja.openapi.views import openapi_view
from ninja.operation import Operation

from ledgerly import apierrors
from memory.api import router as memory_router
from support.api import audited, staff_router, tickets_router
from support.api_auth import ApiRateLimit, DenyAll, scoped

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "detail": {},
            },
        }
    },
}
_ERROR_TEXT = {
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "No valid credentials (missing, unknown, revoked or expired key)",
    403: "Authenticated but not allowed (scope, permission, CSRF)",
    404: "No such route or object, or not yours",
    409: "Conflict (an idempotency key reused with another body, a decision already made)",
    413: "Request body over the upload limit",
    422: "Validation failed",
    429: "Rate limited; see Retry-After",
}


class _Schema(OpenAPISchema):
    def operation_security(self, operation: Operation) -> list[dict[str, Any]] | None:
        result = []
        for auth in operation.auth_callbacks:
            if hasattr(auth, "openapi_security_schema"):
                name = getattr(auth, "scheme_name", type(auth).__name__)
                scope = getattr(auth, "scope", None)
                result.append({name: [scope] if scope else []})
                self.securitySchemes[name] = auth.openapi_security_schema
        return result or None

    def operation_details(self, operation: Operation) -> dict[str, Any]:
        result = super().operation_details(operation)
        scopes = sorted({getattr(auth, "scope", "") for auth in operation.auth_callbacks} - {""})
        result["x-required-scope"] = scopes[0] if len(scopes) == 1 else (scopes or None)
        self.schemas["Error"] = ERROR_SCHEMA
        codes = [401, 403, 404, 422, 429]
        if set(operation.methods) & {"POST", "PUT", "PATCH", "DELETE"}:
            codes += [400, 409, 413]
        # openapi_extra's responses come keyed by strings: merge them over ninja's int keys.
        responses: dict[int | str, Any] = {}
        for status, spec in result.get("responses", {}).items():
            key = int(status) if str(status).isdigit() else status
            responses[key] = {**responses.get(key, {}), **spec}
        result["responses"] = responses
        for code in codes:
            responses.setdefault(
                code,
                {
                    "description": _ERROR_TEXT[code],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            )
        return result


class LedgerlyAPI(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        return _Schema(api=self, path_prefix=path_prefix)


api = LedgerlyAPI(
    title="Ledgerly API",
    version="1",
    description=(
        "Support tickets and refund decisions for Ledgerly. Authenticate with "
        "`Authorization: Bearer <prefix>.<secret>` (an API key; `manage.py create_api_key`) or "
        "the signed-in session (with the CSRF header). Each operation names the scope it needs "
        "(`tickets` or `staff`) in `security` and `x-required-scope`. Errors: "
        '`{"error": {"code", "message", "detail"}}`.'
    ),
    urls_namespace="api",
    auth=DenyAll(),
    throttle=[ApiRateLimit()],
    docs_url="/docs",
    # No deep links: they put a link inside each operation's toggle button (nested interactive
    # controls); templates/ninja/swagger.html adds the rest of the page's accessibility.
    docs=Swagger(settings={"deepLinking": False}),
)
apierrors.install(api)
api.add_router("/", tickets_router)
api.add_router("/", staff_router)
# memory knows nothing of support: its help-center routes get their scope and audit trail here.
memory_router.add_decorator(audited, mode="operation")
api.add_router("/helpcenter/", memory_router, auth=scoped("staff"))


def urlpatterns() -> list[URLPattern | URLResolver]:
    """For ledgerly/urls.py: the API under /api/v1/ (its docs at /api/v1/docs and /api/docs),
    and a 404 with the uniform body for any other path under /api/."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = apierrors.uniform_view(pattern.callback)  # type: ignore[misc]
    return [
        path("api/v1/", include((patterns, app_name), namespace=namespace)),
        path("api/docs", partial(openapi_view, api=api), name="api-docs"),
        re_path(r"^api/", apierrors.not_found_view),
    ]

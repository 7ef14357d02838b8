from __future__ import annotations

from django.http import HttpRequest

from ledgerly.llm.gateway import backend_description


def model_backend(request: HttpRequest) -> dict[str, object]:
    """Every page says what answers model calls, plainly when it is the offline simulator."""
    return {"model_backend": backend_description()}

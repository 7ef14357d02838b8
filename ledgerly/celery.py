import os
from typing import Any

import structlog
from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")

app = Celery("ledgerly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The trace of the request (or task) that queues a task follows it in the message headers
# (W3C traceparent, and Ledgerly's request id), so a ticket's logs and spans share one trace id
# from the web request through every step on any worker.
REQUEST_ID_HEADER = "ledgerly_request_id"


@signals.setup_logging.connect
def _keep_logging(**_: Any) -> None:
    """Settings already configured logging (structlog, JSON in production, scrubbed): with a
    receiver here Celery keeps it instead of installing its own plain-text handlers."""


@signals.before_task_publish.connect
def _inject_trace(headers: dict[str, Any] | None = None, **_: Any) -> None:
    from ledgerly import tracing

    if headers is None:
        return
    tracing.inject(headers)
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@signals.task_prerun.connect
def _start_task_span(task_id: str = "", task: Any = None, **_: Any) -> None:
    from ledgerly import tracing

    if task is None:
        return
    request = task.request
    tracing.task_spans.start(task_id, task.name, request)
    bound = {"task": task.name, "task_id": task_id}
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (
        (getattr(request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    )
    if request_id:
        bound["request_id"] = str(request_id)[:64]
    structlog.contextvars.bind_contextvars(**bound)


@signals.task_postrun.connect
def _end_task_span(task_id: str = "", state: str | None = None, **_: Any) -> None:
    from ledgerly import tracing

    tracing.task_spans.end(task_id, state=state)
    structlog.contextvars.unbind_contextvars("task", "task_id", "request_id")


@signals.worker_process_init.connect
@signals.worker_init.connect
def _metrics_exporter(**_: Any) -> None:
    """A worker machine without a web process serves its figures on METRICS_PORT."""
    port = os.environ.get("METRICS_PORT")
    if port:
        from ledgerly.metrics import start_worker_exporter

        start_worker_exporter(int(port))

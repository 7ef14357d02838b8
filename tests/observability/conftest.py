from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledgerly import tracing
from tests.support.conftest import demo_world, seeded_world, sim_gateway  # noqa: F401

_exporter = InMemorySpanExporter()
tracing.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process finishes during the test (the SDK's in-memory exporter)."""
    _exporter.clear()
    yield _exporter
    _exporter.clear()

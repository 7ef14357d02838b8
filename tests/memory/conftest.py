from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.utils import timezone

from billing.models import Customer
from ledgerly.llm import gateway as gateway_module
from ledgerly.llm.simulator import SimulatorConfig, SimulatorTransport
from memory import services

_seq = itertools.count(1)


@pytest.fixture
def helpcenter(db):
    """The repository's help center, ingested."""
    return services.helpcenter_ingest()


def make_customer(name: str = "Customer") -> Customer:
    n = next(_seq)
    return Customer.objects.create(
        ref=f"cus_mem{n}",
        email=f"memory{n}@example.test",
        name=f"{name} {n}",
        country="DE",
        currency="EUR",
        created_at=timezone.now() - dt.timedelta(days=100),
    )


@pytest.fixture
def customer(db) -> Customer:
    return make_customer("Ana")


@pytest.fixture
def other_customer(db) -> Customer:
    return make_customer("Ben")


@pytest.fixture
def simulator() -> SimulatorTransport:
    """The model simulator behind the gateway (zero latency; faults on request)."""
    return SimulatorTransport(SimulatorConfig(retry_after_s=0.01))


@pytest.fixture
def gateway(redis_client, simulator, settings):
    """This process's gateway, answering from `simulator`, retrying once."""
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_RETRY_AFTER_CAP_SECONDS = 2.0
    gw = gateway_module.Gateway(inner_transport=simulator)
    gateway_module.install(gw)
    yield gw
    gateway_module.install(None)

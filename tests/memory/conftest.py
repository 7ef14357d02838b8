from __future__ import annotations

import pytest

from memory import services


@pytest.fixture
def helpcenter(db):
    """The repository's help center, ingested."""
    return services.helpcenter_ingest()

from __future__ import annotations

from tests.releases.conftest import candidate, no_releases, runs_of  # noqa: F401
from tests.support.conftest import demo_world, seeded_world, sim_gateway  # noqa: F401

from __future__ import annotations

# The gateway and demo-world fixtures of the llm and support suites, shared here.
from tests.llm.conftest import make_gateway, simulator  # noqa: F401
from tests.support.conftest import demo_world, seeded_world, sim_gateway  # noqa: F401

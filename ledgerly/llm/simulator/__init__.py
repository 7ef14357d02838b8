"""An offline, deterministic simulator of the Anthropic Messages API.

`SimulatorTransport` mounts it under the real `anthropic` SDK (an httpx2 transport);
`python -m ledgerly.llm.simulator --port N` serves the same API over HTTP. See `handler.py` for
the request flow, `faults.py` for the injectable faults and `brain.py` for the behaviour.
"""

from .config import SimulatorConfig
from .faults import FAULTS
from .handler import SIMULATOR_HEADER, Simulator
from .transport import SimulatorTransport

__all__ = ["FAULTS", "SIMULATOR_HEADER", "Simulator", "SimulatorConfig", "SimulatorTransport"]

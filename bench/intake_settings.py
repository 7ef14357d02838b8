"""Settings for bench/intake.py only: Ledgerly's own, with a URL conf that adds the floor view
(a bare Django view doing the same insert and enqueue as POST /api/v1/tickets). Never used by
the application."""

from ledgerly.settings import *  # noqa: F403

ROOT_URLCONF = "bench.intake"

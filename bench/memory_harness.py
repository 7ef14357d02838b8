"""Start a private embedded Postgres+pgvector and Redis and set Django up (memory benchmarks).

`python bench/<name>.py` works on a fresh machine: nothing needs to be running. Set
LEDGERLY_BENCH_EXTERNAL_SERVICES=1 with DATABASE_URL and REDIS_URL to use servers of your own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def setup_django(*, migrate: bool = True) -> None:
    sys.path.insert(0, str(ROOT))
    from ledgerly import devstack

    if os.environ.get("LEDGERLY_BENCH_EXTERNAL_SERVICES") != "1":
        devstack.use_private_services()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledgerly.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("ANTHROPIC_API_KEY", None)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)

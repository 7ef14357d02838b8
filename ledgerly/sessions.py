"""Django's database sessions, refusing a session key Django could not have issued.

Django's own check only wants 8 characters or more, so a cookie holding a NUL went to Postgres,
which refuses NUL in text: every page answered 500 to that cookie. Keys Django makes are 32
lowercase letters and digits (`SessionBase._get_new_session_key`); anything else is no session.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends import db

_KEY = re.compile(r"[a-z0-9]{8,40}")


class SessionStore(db.SessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key) and _KEY.fullmatch(key or "") is not None

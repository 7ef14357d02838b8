"""Sentry: with SENTRY_DSN set, a view's exception reaches the DSN's endpoint, scrubbed."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2"
CARD = "4242 4242 4242 4242"
EMAIL = "ben.private@gmail.com"

SCRIPT = f"""
import sys, threading, types, urllib.error, urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server
import django
django.setup()
import sentry_sdk
import structlog
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import path
from ledgerly import urls

def boom(request):
    customer_email = {EMAIL!r}  # a local variable Sentry must not send
    raise ValueError("charge failed for " + customer_email + " card {CARD} key {KEY}")

module = types.ModuleType("obs_urls")
module.urlpatterns = [path("boom", boom), *urls.urlpatterns]
sys.modules["obs_urls"] = module
settings.ROOT_URLCONF = "obs_urls"

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
request = urllib.request.Request(
    f"http://127.0.0.1:{{server.server_port}}/boom?email={EMAIL}",
    headers={{"Authorization": "Bearer {KEY}", "Cookie": "sessionid=abc123"}},
)
try:
    urllib.request.urlopen(request, timeout=30)
except urllib.error.HTTPError as exc:
    assert exc.code == 500, exc.code
else:
    raise AssertionError("the view did not fail")
server.shutdown()
structlog.get_logger("billing").error("refund failed", who={EMAIL!r}, card={CARD!r})
sentry_sdk.flush(timeout=10)
"""


class _Envelopes(http.server.BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.received.append(body.decode("utf-8", errors="replace"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        return


def _events(envelopes: list[str]) -> list[dict]:
    events = []
    for envelope in envelopes:
        lines = envelope.splitlines()
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                events.append(json.loads(payload))
    return events


@pytest.mark.slow
def test_a_views_exception_reaches_sentry_without_personal_data_or_keys(test_database_url):
    _Envelopes.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Envelopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ledgerly.settings",
            "DATABASE_URL": test_database_url,
            "SENTRY_DSN": f"http://publickey@127.0.0.1:{server.server_address[1]}/42",
        }
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]

    sent = "\n".join(_Envelopes.received)
    for secret in (EMAIL, CARD, KEY, "abc123"):
        assert secret not in sent
    events = _events(_Envelopes.received)
    crash = next(e for e in events if e.get("exception"))
    (exception,) = crash["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"] == (
        "charge failed for [redacted:email] card [redacted:card] key [redacted:api_key]"
    )
    assert crash["request"]["url"].endswith("/boom")
    assert crash["request"]["headers"]["Authorization"] == "[redacted]"
    assert "cookies" not in crash["request"]
    assert crash["request"]["headers"].get("Cookie") in (None, "[redacted]", "[Filtered]")
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert "DjangoIntegration" in json.dumps(crash["sdk"]) or "django" in json.dumps(crash["sdk"])
    logged = next(e for e in events if not e.get("exception"))
    assert "refund failed" in json.dumps(logged)

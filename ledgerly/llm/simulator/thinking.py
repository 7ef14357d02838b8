"""Thinking-block signatures: opaque to clients, checked when the blocks are sent back."""

from __future__ import annotations

import base64
import hashlib
import hmac

# Not a secret: signatures only prove a thinking block came from this simulator unmodified.
_KEY = b"ledgerly-simulator-thinking-v1"


def sign(thinking: str) -> str:
    digest = hmac.new(_KEY, thinking.encode(), hashlib.sha256).digest()
    return "Es" + base64.b64encode(b"sim1" + digest).decode()


def signature_is_valid(thinking: str, signature: str) -> bool:
    return hmac.compare_digest(sign(thinking), signature)

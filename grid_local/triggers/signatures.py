"""Webhook signatures: HMAC-SHA256 of the raw body, compared in constant time.

``github`` is GitHub's scheme (``X-Hub-Signature-256: sha256=<hex>``); ``hmac-sha256`` is the
generic one (``X-Signature-256``, the same ``sha256=<hex>`` or a bare hex digest). Either signs
the body only: the delivery id that makes a delivery idempotent is not covered, as with GitHub.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SCHEMES = ("github", "hmac-sha256", "none")
HEADERS = {"github": "X-Hub-Signature-256", "hmac-sha256": "X-Signature-256"}
DELIVERY_HEADERS = ("X-GitHub-Delivery", "Idempotency-Key")
"""Headers naming a delivery (the first present wins); a redelivery with the same id starts nothing."""


def sign(secret: str, body: bytes) -> str:
    """The header value a sender puts on ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(scheme: str, secret: str | None, body: bytes, headers: Mapping[str, str]) -> str | None:
    """None when the request is signed as the hook requires; otherwise why it is refused.

    ``headers`` must be case-insensitive (Starlette's are)."""
    if scheme == "none":
        return None
    header = HEADERS[scheme]
    given = headers.get(header)
    if not given:
        return f"missing signature header {header}"
    if not secret:
        return "the hook has no secret to check signatures with"
    value = given.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256="):]
    elif scheme == "github":
        return f"{header} must read sha256=<hex digest>"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), value.lower().encode()):
        return f"{header} does not match the body (wrong secret, or the body was changed)"
    return None


def delivery_id(headers: Mapping[str, str]) -> str | None:
    for name in DELIVERY_HEADERS:
        value = (headers.get(name) or "").strip()
        if value:
            return value[:200]
    return None

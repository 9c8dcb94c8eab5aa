"""Pure pieces of Meta's Facebook Login protocol, shared by the authenticator and the stand-in.

- :func:`appsecret_proof`: the ``appsecret_proof`` every Graph API call carries
  (hex HMAC-SHA256 of the access token, keyed by the app secret).
- :func:`parse_signed_request` / :func:`make_signed_request`: the ``signed_request`` Meta posts
  to the deauthorize and data-deletion callbacks (``base64url(signature).base64url(payload)``,
  HMAC-SHA256 with the app secret, unpadded base64url).
- :func:`graph_error`: Graph API error JSON -> a :class:`GraphError` with a readable message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from typing import Any

#: a signed_request longer than this is refused before any decoding
MAX_SIGNED_REQUEST = 4096
#: how far (seconds) a signed_request's ``issued_at`` may be ahead of this host's clock
MAX_FUTURE_SKEW = 300
_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")

#: Graph error codes that mean "too many calls": application, user, page and API-level limits
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
#: OAuthException codes that mean the access token is invalid, expired or revoked
TOKEN_ERROR_CODES = frozenset({102, 190})


class SignedRequestError(ValueError):
    """The signed_request is malformed, forged or stale; the message says which."""


class GraphError(Exception):
    """A Graph API call failed. ``message`` is safe to show to the user; ``code`` and
    ``subcode`` are Facebook's; ``status`` is the HTTP status the hub should answer with."""

    def __init__(self, message: str, status: int = 502, code: int | None = None,
                 subcode: int | None = None, fbtrace_id: str = ""):  # fmt: skip
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id


def appsecret_proof(access_token: str, app_secret: str) -> str:
    """``hex(HMAC-SHA256(key=app_secret, msg=access_token))``, as Graph API calls require
    when the app has "Require App Secret" switched on."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded (or correctly padded) base64url; raise SignedRequestError otherwise."""
    if not _B64URL.match(segment):
        raise SignedRequestError("signed_request is not base64url (unexpected characters)")
    stripped = segment.rstrip("=")
    if len(stripped) % 4 == 1:
        raise SignedRequestError("signed_request has bad base64url padding (truncated segment)")
    padded = stripped + "=" * (-len(stripped) % 4)
    if len(segment) != len(stripped) and segment != padded:
        raise SignedRequestError("signed_request has bad base64url padding")
    try:
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as e:
        raise SignedRequestError(f"signed_request is not base64url: {e}") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def parse_signed_request(
    signed_request: str, app_secret: str, max_age: float | None = None, now: float | None = None
) -> dict[str, Any]:
    """Verify and decode a ``signed_request``; return its payload (with ``user_id``).

    Raises :class:`SignedRequestError` naming what is wrong: too long, not two segments, not
    base64url, bad padding, payload not a JSON object, algorithm not HMAC-SHA256, signature
    mismatch, no user_id, or (with *max_age*) no numeric ``issued_at``, one older than
    *max_age* seconds or more than :data:`MAX_FUTURE_SKEW` seconds in the future (a request
    dated ahead would never go stale).
    """
    if not isinstance(signed_request, str) or not signed_request:
        raise SignedRequestError("signed_request is missing")
    if len(signed_request) > MAX_SIGNED_REQUEST:
        raise SignedRequestError(f"signed_request is longer than {MAX_SIGNED_REQUEST} characters")
    parts = signed_request.split(".")
    if len(parts) != 2 or not all(parts):
        raise SignedRequestError("signed_request must be two base64url segments joined by '.'")
    sig_b64, payload_b64 = parts
    signature = b64url_decode(sig_b64)
    raw = b64url_decode(payload_b64)
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise SignedRequestError("signed_request payload is not JSON") from None
    if not isinstance(payload, dict):
        raise SignedRequestError("signed_request payload is not a JSON object")
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != "HMAC-SHA256":
        raise SignedRequestError(f"signed_request algorithm must be HMAC-SHA256, not {algorithm!r}")
    # Meta signs the unpadded payload segment
    signed = payload_b64.rstrip("=").encode("ascii")
    expected = hmac.new(app_secret.encode(), signed, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise SignedRequestError("signed_request signature does not match the app secret")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str | int) or not str(user_id):
        raise SignedRequestError("signed_request payload has no user_id")
    payload["user_id"] = str(user_id)
    if max_age is not None:
        issued = payload.get("issued_at")
        now = time.time() if now is None else now
        if isinstance(issued, bool) or not isinstance(issued, int | float):
            raise SignedRequestError(f"signed_request has no numeric issued_at ({issued!r})")
        if now - issued > max_age:
            raise SignedRequestError(
                f"signed_request is older than {int(max_age)} seconds (issued_at {issued!r})"
            )
        if issued - now > MAX_FUTURE_SKEW:
            raise SignedRequestError(
                f"signed_request is dated in the future (issued_at {issued!r} is more than "
                f"{MAX_FUTURE_SKEW} seconds ahead of this hub's clock)"
            )
    return payload


def make_signed_request(payload: dict[str, Any], app_secret: str) -> str:
    """Build a ``signed_request`` the way Meta does (used by the dev callback command)."""
    body = {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()), **payload}
    payload_b64 = b64url_encode(json.dumps(body, separators=(",", ":")).encode())
    sig = hmac.new(app_secret.encode(), payload_b64.encode("ascii"), hashlib.sha256).digest()
    return f"{b64url_encode(sig)}.{payload_b64}"


def graph_error(body: Any, http_status: int) -> GraphError:
    """Turn Graph API error JSON (``{"error": {"type", "code", "message", ...}}``) into a
    :class:`GraphError` whose message tells the user what happened and what to do."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return GraphError(f"Facebook answered with HTTP {http_status} and no error details.")
    code, subcode = err.get("code"), err.get("error_subcode")
    fb_message = str(err.get("message", ""))[:300]
    trace = str(err.get("fbtrace_id", ""))
    if code in RATE_LIMIT_CODES:
        return GraphError(
            f"Facebook is limiting requests from this hub right now (error {code}). "
            "Please wait a few minutes and try again.", 503, code, subcode, trace,
        )  # fmt: skip
    if code in TOKEN_ERROR_CODES:
        return GraphError(
            f"Facebook did not accept the login token (error {code}"
            f"{f'/{subcode}' if subcode else ''}: {fb_message}). Please sign in again.",
            403, code, subcode, trace,
        )  # fmt: skip
    return GraphError(
        f"Facebook refused the request (error {code}: {fb_message}).", 403, code, subcode, trace
    )

"""Log lines without secrets: OAuth ``code`` and ``state`` values, tokens and signed requests.

JupyterHub scrubs its own access log, but other lines print them in clear: tornado's warning
for a failed request carries the whole URI (``400 GET /hub/oauth_callback?code=...&state=...``),
JupyterHub's service OAuth callback logs ``oauth state argument '...' != cookie ...='...'`` and
OAuthenticator ``OAuth state mismatch: ... != ...``. :func:`install_redaction` puts
:class:`RedactSecrets` on the loggers that write them (the fort services do at start; the demo
also in its hub, proxy and Facebook stand-in).
"""

from __future__ import annotations

import logging
import re

#: query parameters whose values never reach a log line
SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:code|state|[a-z_]*token|signed_request|_xsrf|password|[a-z_]*secret)=)"
    r"[^&;\s#]*"
)
#: OAuth state values in the messages of JupyterHub's HubOAuth and of OAuthenticator
SECRET_MESSAGES = (
    (re.compile(r"(oauth state argument )('[^']*'|None)"), r"\1[redacted]"),
    (re.compile(r"(!= cookie [\w.-]+=)('[^']*'|None)"), r"\1[redacted]"),
    (re.compile(r"(OAuth state mismatch: )\S+ != \S+"), r"\1[redacted] != [redacted]"),
    (re.compile(r"(Failed to (?:b64|json)-decode state: ).*"), r"\1[redacted]"),
)
#: the loggers whose lines carry request URIs or OAuth states
LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "configurable_http_proxy")


def redact(message: str) -> str:
    message = SECRET_PARAMS.sub(r"\1[redacted]", message)
    for pattern, replacement in SECRET_MESSAGES:
        message = pattern.sub(replacement, message)
    return message


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with secret values replaced by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install_redaction(*more_loggers: str) -> None:
    """Redact the lines of tornado's loggers and *more_loggers* (e.g. ``"JupyterHub"``) in this
    process. Idempotent."""
    for name in (*LOGGERS, *more_loggers):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


__all__ = ["LOGGERS", "RedactSecrets", "install_redaction", "redact"]

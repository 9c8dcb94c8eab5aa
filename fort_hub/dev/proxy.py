"""The demo's proxy: the Python ``configurable-http-proxy``, with tornado's HTTP client sized for
a hub with many users. Development only; production uses Z2JH's proxy.

``python -m fort_hub.dev.proxy [configurable-http-proxy options]``

The Python proxy forwards every request with tornado's ``AsyncHTTPClient``, whose defaults keep
10 requests in flight, queue the rest, and time a request out after 20 s *including* its time
in the queue; it also buffers each response whole (at most 100 MB). With a few dozen
researchers, long polls (``GET queries/{id}?wait=1``) and spawn-progress polling fill the 10
slots and the queue times out into 503 pages (measured with ``benchmarks/bench_demo.py``). Here
the client may keep :data:`MAX_CLIENTS` requests in flight and buffer :data:`MAX_BUFFER` bytes;
``fort-hub demo`` passes ``--proxy-timeout`` for long downloads.

Its logs (tornado's access log prints the full URI of every 4xx and 5xx) pass through
:class:`RedactSecrets`: the values of OAuth ``code`` and ``state``, tokens, ``signed_request``
and ``_xsrf`` become ``[redacted]``.
"""

from __future__ import annotations

import logging
import re

#: query parameters whose values never reach a log line
SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:code|state|[a-z_]*token|signed_request|_xsrf|password|[a-z_]*secret)=)"
    r"[^&;\s#]*"
)
#: the loggers whose lines carry request URIs
LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "configurable_http_proxy")

#: requests the proxy may forward at once
MAX_CLIENTS = 1000
#: largest response the proxy buffers (it reads each response whole before sending it on)
MAX_BUFFER = 1 << 30


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with secret query values replaced by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_PARAMS.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install_redaction() -> None:
    for name in LOGGERS:
        logging.getLogger(name).addFilter(RedactSecrets())


def main() -> None:
    from tornado.httpclient import AsyncHTTPClient

    install_redaction()
    AsyncHTTPClient.configure(None, max_clients=MAX_CLIENTS, max_buffer_size=MAX_BUFFER)
    from configurable_http_proxy.cli import main as chp

    chp()


if __name__ == "__main__":
    main()

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
:class:`fort_hub.redaction.RedactSecrets`: the values of OAuth ``code`` and ``state``, tokens, ``signed_request``
and ``_xsrf`` become ``[redacted]``.
"""

from __future__ import annotations

from fort_hub.redaction import LOGGERS, RedactSecrets, install_redaction

#: requests the proxy may forward at once
MAX_CLIENTS = 1000
#: largest response the proxy buffers (it reads each response whole before sending it on)
MAX_BUFFER = 1 << 30


def main() -> None:
    from tornado.httpclient import AsyncHTTPClient

    install_redaction()
    AsyncHTTPClient.configure(None, max_clients=MAX_CLIENTS, max_buffer_size=MAX_BUFFER)
    from configurable_http_proxy.cli import main as chp

    chp()


__all__ = ["LOGGERS", "RedactSecrets", "install_redaction", "main"]

if __name__ == "__main__":
    main()

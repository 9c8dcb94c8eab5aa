"""The demo proxy (``python -m fort_hub.dev.proxy``) keeps OAuth secrets out of its log (#10):
tornado's access log printed ``?code=...&state=...`` of every refused callback in clear."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

from tests.hubproc import free_port, wait_http

CODE, STATE, TOKEN = "AQDsecretcode1234", "eyJzdGF0ZV9pZCI6ICJzZWNyZXQifQ", "tok-s3cr3t"


def test_proxy_log_redacts_oauth_code_state_and_tokens(tmp_path):
    port, api = free_port(), free_port()
    log = tmp_path / "proxy.log"
    cmd = [sys.executable, "-m", "fort_hub.dev.proxy", "--ip", "127.0.0.1", "--port", str(port),
           "--api-ip", "127.0.0.1", "--api-port", str(api)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{api}/api/routes", proc=proc, log=log, ok=lambda r: True)
        # no route: a 404, which tornado's access log prints with the full URI
        url = (f"http://127.0.0.1:{port}/hub/oauth_callback?code={CODE}&state={STATE}"
               f"&wait=1&access_token={TOKEN}")  # fmt: skip
        assert requests.get(url, timeout=10).status_code == 404
        deadline = time.monotonic() + 10
        while "oauth_callback?" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    line = next(x for x in text.splitlines() if "oauth_callback?" in x)
    assert "code=[redacted]&state=[redacted]&wait=1&access_token=[redacted]" in line, line
    for secret in (CODE, STATE, TOKEN):
        assert secret not in text

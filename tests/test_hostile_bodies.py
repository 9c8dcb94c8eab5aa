"""A request body built to be expensive cannot hold a fort service: fort-query runs in a process
of its own (an in-process client would share the GIL and hide a stall), one researcher sends
the body while another uses the service.

The body (found in review): 33 brackets, enough to make the service measure the nesting, then
an unterminated string of escaped quotes. The nesting check's string pattern could fail, and
from every escaped quote it rescanned the rest of the body: quadratic, on the event loop (a
64 KB body held fort-query for 19 s; the 1 MiB a body may have, about an hour)."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

import requests

from fort_hub.services.handler import nesting_exceeds
from tests.query_support import service_process

HOSTILE = b"[" * 33 + b'"' + b'\\"' * 100_000  # 200 KB: about 3 minutes with the old pattern


def test_the_nesting_check_reads_an_unterminated_string_as_the_parser_does():
    assert nesting_exceeds(b"[" * 33 + b'"' + b"[" * 40, 32) is True  # 33 before the string
    assert nesting_exceeds(b"[" * 3 + b'"' + b"[" * 40, 32) is False  # the rest is string
    assert nesting_exceeds(b"[" * 3 + b'"x\\' + b"[" * 40, 32) is False  # ends in a backslash
    assert nesting_exceeds(HOSTILE, 32) is True


def test_a_hostile_body_is_refused_while_another_researcher_is_served(tmp_path, sqlite_url):
    proc = service_process(tmp_path, sqlite_url)
    try:
        base = proc.stdout.readline().strip()
        alice, bob = ({"Authorization": f"token {t}-token"} for t in ("alice", "bob"))
        assert requests.get(base + "queries", headers=bob, timeout=30).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            hostile = pool.submit(
                requests.post, base + "queries", data=HOSTILE, timeout=20,
                headers={**alice, "Content-Type": "application/json"},
            )  # fmt: skip
            time.sleep(0.2)  # the hostile body is being read or checked
            served = requests.get(base + "queries", headers=bob, timeout=10)
            r = hostile.result()
        assert served.status_code == 200, served.text
        assert r.status_code == 400, r.text
        assert "nest" in r.json()["error"]["message"] and "Traceback" not in r.text
        # UTF-16: a 0x22 byte inside a character hid 900 levels from the check (review),
        deep = ('{"\u2200": ' + "[" * 900 + "]" * 900 + "}").encode("utf-16-le")
        r = requests.post(base + "queries", data=deep, timeout=20,
                          headers={**alice, "Content-Type": "application/json"})  # fmt: skip
        # refused as text (it is not UTF-8 JSON) before any parse; it used to be parsed
        # 900 deep, then refused by the depth check after the parse
        assert r.status_code == 400 and "nested" not in r.json()["error"]["message"], r.text
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # still busy with the body (the bug)
            proc.kill()
            proc.wait(10)

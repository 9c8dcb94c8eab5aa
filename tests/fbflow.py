"""Helpers for the Facebook tests and the login benchmark: drive a real browser-less login
through a hub and the local Facebook stand-in with ``requests`` (cookies kept per session)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import requests


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "buttons": {}})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"][a.get("name")] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"][a["name"]] = a.get("value", "")


def dialog_forms(html: str) -> list[dict]:
    p = _Forms()
    p.feed(html)
    return p.forms


def start_login(hub_url: str, session: requests.Session | None = None, next_url: str = ""):
    """GET /hub/oauth_login and the stand-in dialog; return (session, dialog_url, forms)."""
    s = session or requests.Session()
    r = s.get(f"{hub_url}/hub/oauth_login", params={"next": next_url} if next_url else None,
              allow_redirects=False, timeout=30)  # fmt: skip
    assert r.status_code == 302, (r.status_code, r.text[:500])
    dialog_url = r.headers["Location"]
    d = s.get(dialog_url, timeout=30)
    assert d.status_code == 200, (d.status_code, d.text[:500])
    return s, dialog_url, dialog_forms(d.text)


def choose(s: requests.Session, dialog_url: str, forms: list[dict], identity: str | None):
    """Press "Continue as <identity>" (or Cancel when identity is None); return the callback URL
    the stand-in redirects to."""
    button = ("identity", identity) if identity else ("cancel", "1")
    form = next(f for f in forms if f["buttons"].get(button[0]) == button[1])
    data = {**form["fields"], button[0]: button[1]}
    r = s.post(urljoin(dialog_url, form["action"]), data=data, allow_redirects=False, timeout=30)
    assert r.status_code == 302, (r.status_code, r.text[:500])
    return r.headers["Location"].split("#", 1)[0]


def login(hub_url: str, identity: str | None, session: requests.Session | None = None):
    """The whole login; returns (session, callback response without following redirects)."""
    s, dialog_url, forms = start_login(hub_url, session)
    callback = choose(s, dialog_url, forms, identity)
    return s, s.get(callback, allow_redirects=False, timeout=60)

"""A local stand-in for Facebook Login and the Graph API. DEVELOPMENT AND TEST TOOL ONLY.

It behaves as Meta's documentation describes for the endpoints fort-hub uses, so the demo and
the tests can sign in "with Facebook" without the internet. Never point a production hub at it:
it has no real users, no TLS, and anyone can drive it into error modes.

    fort-hub facebook-standin --port 9010 --identities fort_hub/dev/data/facebook-identities.yaml
    fort-hub facebook-callback --hub-url http://127.0.0.1:8000 --identity alice --kind delete

Endpoints (``{v}`` is any ``vNN.N``):

- ``GET /{v}/dialog/oauth``: the login dialog, one "Continue as ..." button per test identity
  and "Cancel" (redirects with ``error=access_denied``); PKCE ``code_challenge`` is honoured.
- ``GET|POST /{v}/oauth/access_token``: code exchange (single-use codes, bound to client and
  redirect_uri, 10 minutes) and ``grant_type=fb_exchange_token`` (long-lived tokens).
- ``GET /{v}/me``, ``GET /{v}/debug_token``: with ``appsecret_proof`` checked when given and
  required with ``--require-proof``; Facebook's error JSON and codes (190 with subcodes 458 / 463,
  100 with 36007 / 36008 / 36009, rate limits 4 / 17 / 32 / 613).

Test controls (``POST /_standin/faults`` with a JSON object; ``POST /_standin/reset`` clears):
``token_app_id`` (new tokens belong to another app), ``token_ttl`` (seconds; negative = already
expired), ``invalid_tokens`` (true), ``me_id`` (``/me`` answers another id), ``require_proof``
(true/false), ``proof_secret`` (check proofs against another secret, as after a rotation), ``error`` ({"code": 190, "subcode": 0, "paths": ["me"], "status": 400}),
``hang_up`` (list of paths whose connections are closed without an answer).
``POST /_standin/revoke`` ``{"identity": "alice"}`` revokes that identity's tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import urlencode

import yaml
from tornado import httpserver, netutil, web

from ..authenticators.meta import appsecret_proof, make_signed_request

DEFAULT_IDENTITIES = Path(__file__).parent / "data" / "facebook-identities.yaml"
V = r"/(v\d+\.\d+)"
KNOWN_SCOPES = ("public_profile", "email")


@dataclass
class Token:
    identity: str
    app_id: str
    scopes: list[str]
    issued_at: int
    expires_at: int
    valid: bool = True
    revoked: bool = False


def load_identities(path: str | Path) -> dict:
    """``{"app": {...}, "identities": {key: {"id", "name", "email"?, "declined"?}}}``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    idents = data.get("identities")
    if not isinstance(idents, dict) or not idents:
        raise ValueError(f"{path}: 'identities' must be a non-empty mapping of key -> identity")
    for key, ident in idents.items():
        if not isinstance(ident, dict) or not str(ident.get("id", "")).isdigit():
            raise ValueError(f"{path}: identities.{key}.id must be a numeric app-scoped id")
        ident["id"] = str(ident["id"])
    return {"app": data.get("app") or {}, "identities": idents}


class Standin:
    """The stand-in's state: identities, codes, tokens and the test faults."""

    def __init__(self, identities: dict, app_id: str, app_secret: str, require_proof=False,
                 token_ttl: int = 7200):  # fmt: skip
        self.identities, self.app_id, self.app_secret = identities, str(app_id), app_secret
        self.require_proof, self.token_ttl = require_proof, token_ttl
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, Token] = {}
        self.faults: dict = {}
        self.calls: Counter[str] = Counter()  # Graph calls per endpoint, for tests
        self.lock = threading.Lock()

    def by_id(self, fb_id: str) -> str | None:
        return next((k for k, v in self.identities.items() if v["id"] == fb_id), None)

    def mint(self, identity: str, scopes: list[str], ttl: int | None = None) -> tuple[str, Token]:
        now = int(time.time())
        ttl = self.faults.get("token_ttl", self.token_ttl) if ttl is None else ttl
        app = str(self.faults.get("token_app_id", self.app_id))
        tok = Token(
            identity, app, scopes, now, now + int(ttl), not self.faults.get("invalid_tokens")
        )
        value = "EAAB" + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[value] = tok
        return value, tok

    def app(self) -> web.Application:
        args = {"standin": self}
        return web.Application([
            (V + r"/dialog/oauth", DialogHandler, args),
            (V + r"/dialog/oauth/confirm", ConfirmHandler, args),
            (V + r"/oauth/access_token", AccessTokenHandler, args),
            (V + r"/me", MeHandler, args),
            (V + r"/debug_token", DebugTokenHandler, args),
            (r"/_standin/(faults|reset|revoke)", ControlHandler, args),
        ])  # fmt: skip


def fb_error(message: str, code: int, subcode: int | None = None, kind="OAuthException") -> dict:
    err = {"message": message, "type": kind, "code": code, "fbtrace_id": secrets.token_hex(6)}
    if subcode:
        err["error_subcode"] = subcode
    return {"error": err}


class _Base(web.RequestHandler):
    path_key = ""

    def initialize(self, standin: Standin):
        self.s = standin

    def check_xsrf_cookie(self):
        return

    def prepare(self):
        self.s.calls[self.path_key] += 1
        f = self.s.faults
        if self.path_key and self.path_key in f.get("hang_up", []):
            self.request.connection.close()
            raise web.Finish()
        err = f.get("error")
        if self.path_key and err and self.path_key in err.get("paths", [self.path_key]):
            code = int(err.get("code", 190))
            msg = {4: "(#4) Application request limit reached", 17: "(#17) User request limit "
                   "reached", 32: "(#32) Page request limit reached", 613: "(#613) Calls to this "
                   "api have exceeded the rate limit."}.get(code, "Error validating access token")  # fmt: skip
            self.fail(fb_error(msg, code, err.get("subcode")), int(err.get("status", 400)))

    def fail(self, body: dict, status: int = 400):
        self.set_status(status)
        self.finish(body)
        raise web.Finish()

    def user_token(self) -> tuple[str, Token]:
        value = self.get_argument("access_token", "")
        auth = self.request.headers.get("Authorization", "")
        if not value and auth.split(" ")[0].lower() in ("bearer", "oauth"):
            value = auth.split(" ", 1)[-1].strip()
        self.check_proof(value)
        tok = self.s.tokens.get(value)
        if tok is None or not tok.valid:
            self.fail(fb_error("Invalid OAuth access token - Cannot parse access token", 190))
        if tok.revoked:
            self.fail(fb_error("Error validating access token: The user has not authorized "
                               "application.", 190, 458))  # fmt: skip
        if tok.expires_at <= time.time():
            self.fail(fb_error("Error validating access token: Session has expired.", 190, 463))
        return value, tok

    def check_proof(self, token: str):
        proof = self.get_argument("appsecret_proof", "")
        required = self.s.faults.get("require_proof", self.s.require_proof)
        if not proof and required:
            self.fail(fb_error("API calls from the server require an appsecret_proof argument",
                               100, kind="GraphMethodException"))  # fmt: skip
        secret = self.s.faults.get("proof_secret", self.s.app_secret)
        if proof and not hmac.compare_digest(proof, appsecret_proof(token, secret)):
            self.fail(fb_error("Invalid appsecret_proof provided in the API argument", 100,
                               kind="GraphMethodException"))  # fmt: skip


class DialogHandler(_Base):
    def get(self, version):
        client_id = self.get_argument("client_id", "")
        redirect_uri = self.get_argument("redirect_uri", "")
        if client_id != self.s.app_id:
            raise web.HTTPError(400, "Invalid App ID: the client_id is not this app's id")
        if not redirect_uri.startswith(("http://", "https://")):
            raise web.HTTPError(400, "redirect_uri is missing or not an absolute http(s) URL")
        keep = ("client_id", "redirect_uri", "state", "scope", "code_challenge",
                "code_challenge_method")  # fmt: skip
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{escape(self.get_argument(k, ""))}">'
            for k in keep
        )
        forms = "".join(
            f'<form method="post" action="/{version}/dialog/oauth/confirm">{hidden}'
            f'<button name="identity" value="{escape(key)}">Continue as '
            f"{escape(ident.get('name', key))}</button></form>"
            for key, ident in self.s.identities.items()
        )
        cancel = (f'<form method="post" action="/{version}/dialog/oauth/confirm">{hidden}'
                  '<button name="cancel" value="1">Cancel</button></form>')  # fmt: skip
        self.finish(
            "<!doctype html><html><head><title>Log in With Facebook (local stand-in)</title></head>"
            "<body><h1>Log in with Facebook</h1><p>Local development stand-in: choose a test "
            f"identity.</p>{forms}{cancel}</body></html>"
        )


class ConfirmHandler(_Base):
    def post(self, version):
        a = {k: self.get_body_argument(k, "") for k in ("client_id", "redirect_uri", "state",
             "scope", "code_challenge", "code_challenge_method", "identity", "cancel")}  # fmt: skip
        if a["client_id"] != self.s.app_id or not a["redirect_uri"]:
            raise web.HTTPError(400, "Invalid App ID or redirect_uri")
        sep = "&" if "?" in a["redirect_uri"] else "?"
        if a["cancel"]:
            q = {"error": "access_denied", "error_code": "200", "error_description":
                 "Permissions error", "error_reason": "user_denied", "state": a["state"]}  # fmt: skip
            return self.redirect(f"{a['redirect_uri']}{sep}{urlencode(q)}#_=_")
        ident = self.s.identities.get(a["identity"])
        if ident is None:
            raise web.HTTPError(400, "Unknown test identity")
        requested = [s for s in a["scope"].replace(",", " ").split() if s in KNOWN_SCOPES]
        scopes = [s for s in dict.fromkeys(["public_profile", *requested])
                  if s not in ident.get("declined", [])]  # fmt: skip
        code = "AQ" + secrets.token_urlsafe(24)
        with self.s.lock:
            self.s.codes[code] = {
                "identity": a["identity"], "client_id": a["client_id"], "scopes": scopes,
                "redirect_uri": a["redirect_uri"], "challenge": a["code_challenge"],
                "expires": time.time() + 600, "used": False,
            }  # fmt: skip
        q = {"code": code, "state": a["state"]}
        self.redirect(f"{a['redirect_uri']}{sep}{urlencode(q)}#_=_")


class AccessTokenHandler(_Base):
    path_key = "oauth/access_token"

    def get(self, version):
        arg = self.get_argument
        if arg("client_id", "") != self.s.app_id or arg("client_secret", "") != self.s.app_secret:
            self.fail(fb_error("Error validating client secret.", 1))
        if arg("grant_type", "") == "fb_exchange_token":
            tok = self.s.tokens.get(arg("fb_exchange_token", ""))
            if tok is None or not tok.valid or tok.revoked or tok.expires_at <= time.time():
                self.fail(fb_error("Error validating access token: invalid or expired token", 190))
            value, new = self.s.mint(tok.identity, tok.scopes, ttl=60 * 24 * 3600)
            return self.finish({"access_token": value, "token_type": "bearer",
                                "expires_in": new.expires_at - new.issued_at})  # fmt: skip
        with self.s.lock:
            entry = self.s.codes.get(arg("code", ""))
            used = entry is not None and entry["used"]
            if entry is not None:
                entry["used"] = True
        if entry is None:
            self.fail(fb_error("Invalid verification code format.", 100, 36007))
        if used:
            self.fail(fb_error("This authorization code has been used.", 100, 36009))
        if entry["expires"] < time.time():
            self.fail(fb_error("This authorization code has expired.", 100, 36007))
        if entry["client_id"] != arg("client_id") or entry["redirect_uri"] != arg(
            "redirect_uri", ""
        ):
            self.fail(fb_error("Error validating verification code. Please make sure your "
                               "redirect_uri is identical to the one you used in the OAuth "
                               "dialog request", 100, 36008))  # fmt: skip
        if entry["challenge"]:
            digest = hashlib.sha256(arg("code_verifier", "").encode()).digest()
            expect = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if not hmac.compare_digest(expect, entry["challenge"]):
                self.fail(fb_error("Invalid code verifier.", 100))
        value, tok = self.s.mint(entry["identity"], entry["scopes"])
        self.finish({"access_token": value, "token_type": "bearer",
                     "expires_in": tok.expires_at - tok.issued_at})  # fmt: skip

    post = get


class MeHandler(_Base):
    path_key = "me"

    def get(self, version):
        _, tok = self.user_token()
        ident = self.s.identities[tok.identity]
        fields = self.get_argument("fields", "id,name").split(",")
        out = {"id": str(self.s.faults.get("me_id", ident["id"]))}
        if "name" in fields:
            out["name"] = ident.get("name", tok.identity)
        if "email" in fields and "email" in tok.scopes and ident.get("email"):
            out["email"] = ident["email"]
        self.finish(out)


class DebugTokenHandler(_Base):
    path_key = "debug_token"

    def get(self, version):
        app_token = self.get_argument("access_token", "")
        self.check_proof(app_token)
        if app_token != f"{self.s.app_id}|{self.s.app_secret}":
            self.fail(fb_error("Invalid OAuth access token signature.", 190))
        tok = self.s.tokens.get(self.get_argument("input_token", ""))
        if tok is None or not tok.valid:
            return self.finish({"data": {"error": {"code": 190, "message": "Invalid OAuth "
                                "access token."}, "is_valid": False, "scopes": []}})  # fmt: skip
        data = {
            "app_id": tok.app_id, "type": "USER", "application": "fort-hub (stand-in)",
            "expires_at": tok.expires_at, "data_access_expires_at": tok.issued_at + 90 * 86400,
            "issued_at": tok.issued_at, "is_valid": not tok.revoked and tok.expires_at > time.time(),
            "scopes": tok.scopes, "user_id": self.s.identities[tok.identity]["id"],
        }  # fmt: skip
        if tok.revoked:
            data["error"] = {"code": 190, "subcode": 458, "message": "The user has not "
                             "authorized application."}  # fmt: skip
        elif not data["is_valid"]:
            data["error"] = {"code": 190, "subcode": 463, "message": "Session has expired."}
        self.finish({"data": data})


class ControlHandler(_Base):
    def post(self, what):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be a JSON object") from None
        if what == "reset":
            self.s.faults = {}
        elif what == "faults":
            self.s.faults.update(body)
        else:
            key = body.get("identity") or self.s.by_id(str(body.get("user_id", "")))
            for tok in self.s.tokens.values():
                if tok.identity == key:
                    tok.revoked = True
        self.finish({"faults": self.s.faults})


class StandinServer:
    """Run a :class:`Standin` on 127.0.0.1 in a background thread (tests, benchmarks)."""

    def __init__(self, standin: Standin, port: int = 0):
        self.standin = standin
        self.sockets = netutil.bind_sockets(port, "127.0.0.1")
        self.port = self.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fb-standin")
        self._ready = threading.Event()

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        server = httpserver.HTTPServer(self.standin.app())
        server.add_sockets(self.sockets)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()
        server.stop()
        self._loop.close()

    def start(self) -> StandinServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self):
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fort-hub facebook-standin",
                                description="Local Facebook Login stand-in (development only)")  # fmt: skip
    p.add_argument("--port", type=int, default=9010)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--identities", default=str(DEFAULT_IDENTITIES), help="YAML test identities")
    p.add_argument("--app-id", help="default: app.id in the identities file")
    p.add_argument("--app-secret", help="default: app.secret in the identities file")
    p.add_argument("--require-proof", action="store_true", help="require appsecret_proof")
    args = p.parse_args(argv)
    try:
        data = load_identities(args.identities)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app_id = args.app_id or str(data["app"].get("id", "1234567890"))
    secret = args.app_secret or str(data["app"].get("secret", "dev-app-secret"))
    standin = Standin(data["identities"], app_id, secret, require_proof=args.require_proof)

    from fort_hub.redaction import install_redaction

    install_redaction()  # tornado logs failed requests with their query (codes, tokens)

    async def serve():
        standin.app().listen(args.port, args.host)
        print(f"Facebook stand-in (DEVELOPMENT ONLY) on http://{args.host}:{args.port} "
              f"app_id={app_id} identities={','.join(data['identities'])}", flush=True)  # fmt: skip
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def callback_main(argv: list[str] | None = None) -> int:
    """``fort-hub facebook-callback``: send a signed deauthorize / data-deletion callback."""
    import requests

    p = argparse.ArgumentParser(prog="fort-hub facebook-callback",
                                description="Send Meta's signed callbacks to a hub (development only)")  # fmt: skip
    p.add_argument("--hub-url", required=True, help="public hub URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--kind", choices=["deauthorize", "delete"], required=True)
    p.add_argument("--identity", help="identity key in the identities file, e.g. alice")
    p.add_argument("--user-id", help="app-scoped id (instead of --identity)")
    p.add_argument("--identities", default=str(DEFAULT_IDENTITIES))
    p.add_argument("--app-secret", help="default: app.secret in the identities file")
    p.add_argument("--standin-url", help="also revoke the identity's tokens at this stand-in")
    args = p.parse_args(argv)
    try:
        data = load_identities(args.identities)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    user_id = args.user_id or data["identities"].get(args.identity or "", {}).get("id")
    if not user_id:
        print("error: give --user-id or a known --identity", file=sys.stderr)
        return 2
    secret = args.app_secret or str(data["app"].get("secret", "dev-app-secret"))
    path = "deauthorize" if args.kind == "deauthorize" else "data-deletion"
    try:
        if args.standin_url:
            requests.post(f"{args.standin_url}/_standin/revoke", json={"user_id": user_id},
                          timeout=10)  # fmt: skip
        r = requests.post(f"{args.hub_url.rstrip('/')}/hub/facebook/{path}", timeout=30,
                          data={"signed_request": make_signed_request({"user_id": user_id}, secret)})  # fmt: skip
    except requests.RequestException as e:
        print(f"error: could not reach {e.request.url if e.request else args.hub_url}: "
              f"{type(e).__name__}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"HTTP {r.status_code} {r.text}")
    return 0 if r.ok else 1

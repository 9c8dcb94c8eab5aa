"""Hub handlers for Facebook Login: the OAuth callback (Facebook's error answers, audited
refusals) and Meta's two app callbacks, added by ``FacebookOAuthenticator.get_handlers``:

- ``POST /hub/facebook/deauthorize``: a user removed the app. Marks the identity revoked (the
  stored Facebook token can no longer refresh or log in), deletes the user's hub API and OAuth
  tokens and rotates their cookie id (signs out every browser).
- ``POST /hub/facebook/data-deletion``: a user asked for their data to be deleted. Deletes the
  user's auth_state, records the request in ``fort_deletions`` and the audit log and replies
  ``{"url": <status page>, "confirmation_code": <code>}`` as Meta requires.
- ``GET /hub/facebook/deletion-status?code=...``: the status page for one deletion request.

Both POSTs are authenticated by the ``signed_request`` (HMAC-SHA256 with the app secret), not by
hub cookies, so they are exempt from the hub's XSRF check.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from html import escape
from urllib.parse import urlparse

from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import new_token, url_path_join
from oauthenticator.oauth2 import OAuthCallbackHandler
from tornado import web

from .meta import SignedRequestError, parse_signed_request

MAX_BODY = 8192
_CODE = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")


#: fort's hub templates (fort-login-refused.html), found after the hub's own template paths
HUB_TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "hub_templates")


class FacebookLoginError(web.HTTPError):
    """A refused Facebook login; ``actor`` names who tried (for the audit record).

    Shown on one page (``fort-login-refused.html``) under *heading*, with "try again" and
    "sign out"; *username* (who Facebook said this is) and *contact* (whom to ask) when known.
    """

    heading = "Sign-in refused"

    def __init__(
        self,
        status: int,
        message: str,
        actor: str = "anonymous",
        username: str = "",
        contact: str = "",
    ):
        super().__init__(status, "%s", message, reason=None)
        self.message, self.actor = message, actor
        self.jupyterhub_message = message
        self.username, self.contact = username, contact
        if status >= 500:
            self.heading = "Sign-in is unavailable just now"


class NoStudyMembership(FacebookLoginError):
    """Facebook signed *username* in, but no study group (policy or fort store) has them."""

    heading = "No access yet"

    def __init__(self, username: str, contact: str):
        super().__init__(
            403, f"You signed in as {username!r}, but you have no study membership on this hub. "
            f"To request access, contact {contact}.", username, username, contact,
        )  # fmt: skip


class SignInLinkUsed(FacebookLoginError):
    """The callback URL again (a reload, the back button): its one-time state cookie is gone."""

    heading = "This sign-in link has expired"

    def __init__(self):
        super().__init__(
            400, "This sign-in link was already used, or it was opened in another browser: "
            "a sign-in link works once. Sign in again to continue.",
        )  # fmt: skip


class FacebookCallbackHandler(OAuthCallbackHandler):
    def check_error(self):
        error = self.get_argument("error", "")
        if error == "access_denied":
            raise FacebookLoginError(
                403, "Facebook login was cancelled: this hub was not allowed to use your "
                "Facebook account (access_denied). Sign in again to retry."
            )  # fmt: skip
        if error:
            desc = self.get_argument("error_description", error)[:200]
            raise FacebookLoginError(400, f"Facebook login failed: {desc}")

    def check_state(self):
        if not self.get_state_cookie():
            raise SignInLinkUsed()
        super().check_state()

    async def get(self):
        try:
            await super().get()
        except SignInLinkUsed:
            if self.current_user:  # already signed in (a reload after success): carry on
                self.redirect(self.get_next_url(self.current_user))
                return
            await self.authenticator.audit_denial(self, SignInLinkUsed())
            raise
        except web.HTTPError as e:
            await self.authenticator.audit_denial(self, e)
            raise

    def write_error(self, status_code, **kwargs):
        """A refused sign-in on one page: what happened once, whom to ask, try again, sign
        out (``fort-login-refused.html``; a deployment may override it in its template paths)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, FacebookLoginError):
            return super().write_error(status_code, **kwargs)
        if not hasattr(self, "_jupyterhub_user"):
            self._jupyterhub_user = None
            self._resolve_roles_and_scopes()
        ns = dict(self.template_namespace)
        ns.update(
            xsrf_token=self.xsrf_token.decode("ascii"),
            status_code=status_code,
            heading=exc.heading,
            message=exc.message,
            username=exc.username,
            contact=exc.contact,
            login_service=self.authenticator.login_service,
            try_url=url_path_join(self.hub.base_url, "oauth_login"),
            try_label="Sign in again" if isinstance(exc, SignInLinkUsed) else "Try again",
        )
        html = self.refusal_templates().get_template("fort-login-refused.html").render(**ns)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(html)

    def refusal_templates(self) -> Environment:
        """The hub's (sync) template environment, with fort's hub templates as a fallback."""
        env = self.settings.get("fort_refusal_env")
        if env is None:
            hub = self.settings["jinja2_env_sync"]
            env = hub.overlay(loader=ChoiceLoader([hub.loader, FileSystemLoader(HUB_TEMPLATES)]))
            self.settings["fort_refusal_env"] = env
        return env


class _MetaCallbackHandler(BaseHandler):
    action = ""

    def check_xsrf_cookie(self):
        """Meta's server posts these; the signed_request is the authentication."""
        return

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if isinstance(exc, web.HTTPError) and exc.args:
            message = message % exc.args
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    async def _audit(self, actor, resource, decision, reason, details=None):
        await self.authenticator.fort_store.audit.arecord(
            actor, self.action, resource, decision, reason, details or {},
            client=self.request.remote_ip,
        )  # fmt: skip

    async def verified_payload(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            reason = f"request body is larger than {MAX_BODY} bytes"
            await self._audit_refusal(reason)
            raise web.HTTPError(413, "%s", reason)
        try:
            return parse_signed_request(
                self.get_body_argument("signed_request", ""),
                self.authenticator.client_secret,
                max_age=self.authenticator.signed_request_max_age,
            )
        except SignedRequestError as e:
            await self._audit_refusal(str(e))
            raise web.HTTPError(400, "%s", str(e)) from None

    async def _audit_refusal(self, reason: str, actor: str = "facebook") -> None:
        try:
            await self._audit(actor, "facebook", "deny", reason)
        except Exception as e:  # the refusal stands either way
            self.log.error("facebook.audit_failed action=%s error=%r", self.action, str(e))

    async def refuse_stale(self, payload: dict, ident) -> None:
        """Refuse (400, audited) a signed_request issued before the user's latest login: a
        replayed deauthorize or deletion must not end the session the user started since.
        ``issued_at`` has whole seconds: one from the login's own second is honoured."""
        if ident is None:
            return
        identities = self.authenticator.identities
        login = await self.authenticator.fort_store.run(identities.last_login, ident.username)
        if login is not None and payload["issued_at"] < int(login.timestamp()):
            reason = (
                f"signed_request is stale: issued_at {payload['issued_at']} is before "
                f"{ident.username}'s latest login ({login.isoformat(timespec='seconds')}); "
                "nothing changed"
            )
            await self._audit_refusal(reason, ident.username)
            raise web.HTTPError(400, "%s", reason)

    async def _lookup(self, subject: str):
        identities = self.authenticator.identities
        ident = await self.authenticator.fort_store.run(identities.by_subject, subject)
        return ident, (self.find_user(ident.username) if ident else None)

    def public_origin(self) -> str:
        cb = self.authenticator.oauth_callback_url
        if cb:
            u = urlparse(cb)
            return f"{u.scheme}://{u.netloc}"
        return f"{self.request.protocol}://{self.request.host}"


class DeauthorizeHandler(_MetaCallbackHandler):
    action = "auth.deauthorize"

    async def post(self):
        payload = await self.verified_payload()
        subject = payload["user_id"]
        ident, user = await self._lookup(subject)
        await self.refuse_stale(payload, ident)
        revoked_tokens = 0
        if ident:
            await self.authenticator.fort_store.run(self.authenticator.identities.revoke, subject)
        if user is not None:
            for token in list(user.orm_user.api_tokens):
                self.db.delete(token)
                revoked_tokens += 1
            user.orm_user.cookie_id = new_token()
            self.db.commit()
        username = ident.username if ident else "facebook"
        try:
            await self._audit(
                username, f"facebook:{subject}", "allow", "Facebook deauthorize callback",
                {"hub_tokens_revoked": revoked_tokens, "known": bool(ident)},
            )  # fmt: skip
        except Exception:
            # the revocation is done and idempotent: ask Meta to retry so the record is written
            raise web.HTTPError(503, "deauthorization done but not yet audited; retry") from None
        self.log.info("facebook.deauthorize user=%s tokens_revoked=%d", username, revoked_tokens)
        self.finish({"status": "deauthorized", "known_user": bool(ident)})


class DataDeletionHandler(_MetaCallbackHandler):
    action = "auth.delete"

    async def post(self):
        payload = await self.verified_payload()
        subject = payload["user_id"]
        ident, user = await self._lookup(subject)
        await self.refuse_stale(payload, ident)
        code = secrets.token_urlsafe(18)
        username = ident.username if ident else None
        status = "completed" if ident else "no_data"
        try:
            await self._audit(
                username or "facebook", f"facebook:{subject}", "allow",
                "Facebook data deletion callback", {"confirmation_code": code, "status": status},
            )  # fmt: skip
        except Exception:
            raise web.HTTPError(
                503, "the deletion could not be audited; nothing was deleted"
            ) from None
        if user is not None:
            await user.save_auth_state(None)
        identities = self.authenticator.identities
        await self.authenticator.fort_store.run(
            identities.record_deletion, code, subject, username, status
        )
        self.log.info("facebook.data_deletion user=%s code=%s", username, code)
        path = url_path_join(self.hub.base_url, "facebook/deletion-status")
        self.finish({"url": f"{self.public_origin()}{path}?code={code}", "confirmation_code": code})


class DeletionStatusHandler(BaseHandler):
    def page(self, status: int, body: str):
        # our own page (not write_error): JupyterHub 5's 404 template drops the message
        self.set_status(status)
        self.finish(
            "<!doctype html><html><head><title>Data deletion status</title></head><body>"
            f"<h1>Data deletion request</h1>{body}</body></html>"
        )

    async def get(self):
        code = self.get_argument("code", "")
        if not _CODE.match(code):
            return self.page(400, "<p>The confirmation code is missing or malformed.</p>")
        identities = self.authenticator.identities
        deletion = await self.authenticator.fort_store.run(identities.deletion, code)
        if deletion is None:
            return self.page(404, "<p>No data deletion request has this confirmation code.</p>")
        done = deletion.completed.isoformat(timespec="seconds") if deletion.completed else "-"
        text = {
            "completed": "Your Facebook login data (tokens, name, email) was deleted from this hub.",
            "no_data": "This hub held no Facebook login data for this account; nothing to delete.",
        }.get(deletion.status, deletion.status)
        self.page(
            200,
            f"<p>Confirmation code: <code>{escape(code)}</code></p>"
            f"<p>Status: <strong>{escape(deletion.status)}</strong>. {escape(text)}</p>"
            f"<p>Requested {escape(deletion.requested.isoformat(timespec='seconds'))}; "
            f"completed {escape(done)}.</p>",
        )


def facebook_handlers() -> list[tuple[str, type]]:
    return [
        (r"/facebook/deauthorize", DeauthorizeHandler),
        (r"/facebook/data-deletion", DataDeletionHandler),
        (r"/facebook/deletion-status", DeletionStatusHandler),
    ]

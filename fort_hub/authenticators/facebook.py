"""Facebook Login for JupyterHub, in oauthenticator's provider shape.

The base :class:`~oauthenticator.oauth2.OAuthenticator` owns the flow (login redirect, ``state``
cookie, PKCE, callback, ``refresh_user``); this module overrides named steps only:

- :meth:`get_token_info`: Facebook's code exchange (and optional long-lived exchange);
- :meth:`token_to_user`: ``/me`` plus ``debug_token`` validation, with ``appsecret_proof``;
- :meth:`user_info_to_username`, :meth:`build_auth_state_dict`, :meth:`update_auth_model`
  (identity binding), :meth:`check_allowed` (fort study membership),
  :meth:`run_post_auth_hook` (bind + audit, fail closed), :meth:`refresh_user`,
  :meth:`add_user` (with ``FortSettings.hub_groups`` on, a new hub user joins their study's hub
  groups at once, :mod:`.hubgroups`).

The Graph API client is :mod:`.graph`; the callback handler and Meta's deauthorize and
data-deletion callbacks are in :mod:`.facebook_handlers`.
"""

from __future__ import annotations

import asyncio
import time

from jupyterhub.auth import LocalAuthenticator
from jupyterhub.user import User
from jupyterhub.utils import maybe_future
from oauthenticator.oauth2 import OAuthenticator
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Bool, Float, List, Set, Unicode, default, validate

from ..config import FortSettings
from ..naming import check_username_problem
from ..store import StoreError
from . import hubgroups
from .facebook_handlers import (
    FacebookCallbackHandler,
    FacebookLoginError,
    NoStudyMembership,
    facebook_handlers,
)
from .graph import GraphAPI
from .identities import Identities
from .meta import GraphError

__all__ = ["FacebookLoginError", "FacebookOAuthenticator", "LocalFacebookOAuthenticator"]
PROVIDER = "facebook"


class FacebookOAuthenticator(OAuthenticator, GraphAPI, FortSettings):
    """Sign in with Facebook (manual server-side flow), validated with ``debug_token``."""

    user_auth_state_key = "facebook_user"
    callback_handler = FacebookCallbackHandler
    client_id_env = "FACEBOOK_CLIENT_ID"
    client_secret_env = "FACEBOOK_CLIENT_SECRET"

    @default("login_service")
    def _login_service_default(self):
        return "Facebook"

    @default("username_claim")
    def _username_claim_default(self):
        return "email"

    @default("scope")
    def _scope_default(self):
        return ["public_profile", "email"]

    @default("custom_403_message")
    def _custom_403_default(self):
        return f"You have no study membership on this hub. To request access, contact {self.access_contact}."

    dialog_url = Unicode(
        "https://www.facebook.com",
        help="""Origin of Facebook's login dialog (`{dialog_url}/{graph_api_version}/dialog/oauth`).

            c.FacebookOAuthenticator.dialog_url = "https://www.facebook.com"
        """,
    ).tag(config=True)

    user_fields = List(
        Unicode(),
        ["id", "name", "email"],
        help="""Fields requested from `/me` (`id` is always added).

            c.FacebookOAuthenticator.user_fields = ["id", "name", "email"]
        """,
    ).tag(config=True)

    long_lived_token = Bool(
        False,
        help="""Exchange the short-lived user token for a long-lived one (`fb_exchange_token`,
        about 60 days) and keep that in auth_state.

            c.FacebookOAuthenticator.long_lived_token = True
        """,
    ).tag(config=True)

    strip_email_domains = Set(
        Unicode(),
        help="""With `username_claim = "email"`: emails in these domains become their local part
        (`alice@example.org` -> `alice`); other emails stay whole.

            c.FacebookOAuthenticator.strip_email_domains = {"example.org"}
        """,
    ).tag(config=True)

    access_contact = Unicode(
        "the hub administrator",
        help="""Whom people without a study membership should contact, shown on the 403 page.

            c.FacebookOAuthenticator.access_contact = "fort-support@example.org"
        """,
    ).tag(config=True)

    allow_study_members = Bool(
        True,
        help="""Admit whoever has an active study membership: a member of a group in the fort
        policy (`FortSettings.policy_file`), or of one added through fort-groups, until the
        membership expires. This is a fort hub's allow rule, declared as JupyterHub allow config
        (so the "No allow config found" check sees it); `allowed_users`, `admin_users` and
        `allow_all` admit people in addition, as in any OAuthenticator. Turn it off only to
        admit nobody but those.

            c.FacebookOAuthenticator.allow_study_members = True
        """,
    ).tag(config=True, allow_config=True)

    join_study_groups = Bool(
        True,
        help="""With `FortSettings.hub_groups` on: when the hub creates a user (their first
        sign-in, or an admin adding them), add them at once to the hub groups of their active
        study memberships that fort-groups manages, each change recorded in the audit log
        first (actor `jupyterhub`; if the record cannot be written, nothing is added). Their first server then starts with its groups
        (KubeSpawner's `group_overrides`, group roles), and fort-groups' next pass has nothing
        to add. Off: fort-groups adds them at its next pass, as before. Decisions never read
        the hub group either way.

            c.FacebookOAuthenticator.join_study_groups = True
        """,
    ).tag(config=True)

    signed_request_max_age = Float(
        3600.0,
        help="""Refuse deauthorize / data-deletion callbacks whose `issued_at` is older than this
        many seconds (replay protection).

            c.FacebookOAuthenticator.signed_request_max_age = 3600
        """,
    ).tag(config=True)

    @validate("username_claim")
    def _validate_claim(self, proposal):
        if not callable(proposal["value"]) and proposal["value"] not in ("email", "id"):
            raise ValueError(
                "FacebookOAuthenticator.username_claim must be 'email', 'id' or a callable, "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

    @default("http_client")
    def _graph_http_client(self):
        # not the process-wide AsyncHTTPClient(): see graph_max_clients
        return AsyncHTTPClient(force_instance=True, max_clients=self.graph_max_clients)

    @default("authorize_url")
    def _authorize_url_default(self):
        return f"{self.dialog_url.rstrip('/')}/{self.graph_api_version}/dialog/oauth"

    @default("token_url")
    def _token_url_default(self):
        return self._graph_endpoint("oauth/access_token")

    @default("userdata_url")
    def _userdata_url_default(self):
        return self._graph_endpoint("me")

    @property
    def identities(self) -> Identities:
        return Identities(self.fort_store, PROVIDER)

    def get_handlers(self, app):
        return super().get_handlers(app) + facebook_handlers()

    async def _call(self, coro):
        try:
            return await coro
        except GraphError as e:
            raise FacebookLoginError(e.status, e.message) from None

    # ---- overridden OAuthenticator steps ----------------------------------------------------------
    async def get_token_info(self, handler, params):
        keys = ("code", "redirect_uri", "client_id", "client_secret", "code_verifier")
        query = {k: params[k] for k in keys if params.get(k)}
        token_info = await self._call(self.graph("oauth/access_token", query))
        if "access_token" not in token_info:
            raise FacebookLoginError(502, "Facebook's code exchange returned no access token.")
        if self.long_lived_token:
            exchange = {"grant_type": "fb_exchange_token", "client_id": self.client_id,
                        "client_secret": self.client_secret,
                        "fb_exchange_token": token_info["access_token"]}  # fmt: skip
            token_info = await self._call(self.graph("oauth/access_token", exchange))
            token_info["long_lived"] = True
        token_info.setdefault("token_type", "bearer")
        return token_info

    async def token_to_user(self, token_info):
        token = token_info["access_token"]
        fields = ",".join(dict.fromkeys(["id", *self.user_fields]))
        app_token = f"{self.client_id}|{self.client_secret}"
        debug, me = await asyncio.gather(
            self.graph("debug_token", {"input_token": token}, app_token),
            self.graph("me", {"fields": fields}, token),
            return_exceptions=True,
        )
        for result in (debug, me):
            if isinstance(result, BaseException) and not isinstance(result, GraphError):
                raise result
        if isinstance(debug, GraphError):
            raise FacebookLoginError(debug.status, debug.message)
        data = debug.get("data") or {}
        now = time.time()
        expires_at = data.get("expires_at") or 0
        if not data.get("is_valid"):
            why = "has expired" if expires_at and expires_at <= now else "is not valid"
            detail = str((data.get("error") or {}).get("message", ""))[:200]
            why += f" ({detail})" if detail else ""
            raise FacebookLoginError(403, f"The Facebook login token {why}. Please sign in again.")
        if str(data.get("app_id")) != str(self.client_id):
            raise FacebookLoginError(
                403, "The Facebook login token was issued to a different app; it is not "
                f"accepted by this hub (app id {data.get('app_id')!r}).",
            )  # fmt: skip
        if expires_at and expires_at <= now:
            raise FacebookLoginError(
                403, "The Facebook login token has expired. Please sign in again."
            )
        if isinstance(me, GraphError):
            raise FacebookLoginError(me.status, me.message)
        if str(data.get("user_id")) != str(me.get("id")):
            raise FacebookLoginError(
                403, "Facebook returned inconsistent user ids for this token; login refused."
            )
        token_info.update(scope=list(data.get("scopes") or []), expires_at=expires_at,
                          issued_at=data.get("issued_at"))  # fmt: skip
        return me

    def user_info_to_username(self, user_info):
        if callable(self.username_claim):
            return self.username_claim(user_info)
        if self.username_claim == "id":
            return str(user_info["id"])
        email = (user_info.get("email") or "").strip()
        if not email:
            raise FacebookLoginError(
                403, "Your Facebook account did not share an email address, which this hub uses "
                "as your username. Sign in again and allow the email permission, or contact "
                f"{self.access_contact}.", f"facebook:{user_info.get('id')}",
            )  # fmt: skip
        local, _, domain = email.rpartition("@")
        return local if domain.lower() in {d.lower() for d in self.strip_email_domains} else email

    def normalize_username(self, username):
        return super().normalize_username(username.strip())

    def validate_username(self, username):
        """Refuse, with a page saying why, a username that could widen the user's S3 prefix or
        session policy (``a*@example.org`` -> ``a*``), or that fort-hub's own audit records use
        (``jupyterhub``, and the name of every service registered with the hub, e.g. a fort
        service given another ``service_name``): :mod:`fort_hub.naming`. The refusal's audit
        actor is ``refused:<name>``, which no username can be (``:`` is not allowed in one)."""
        services = getattr(self.parent, "services", None) or []
        problem = check_username_problem(
            username, [str(s.get("name", "")) for s in services if isinstance(s, dict)]
        )
        if problem:
            raise FacebookLoginError(
                403, f"This hub cannot use your account's username: {problem}. "
                f"Contact {self.access_contact}.", f"refused:{str(username)[:120]}",
            )  # fmt: skip
        return super().validate_username(username)

    def build_auth_state_dict(self, token_info, user_info):
        state = super().build_auth_state_dict(token_info, user_info)
        state.update(
            facebook_id=str(user_info["id"]), expires_at=token_info.get("expires_at"),
            issued_at=token_info.get("issued_at"), long_lived=bool(token_info.get("long_lived")),
            validated_at=time.time(),
        )  # fmt: skip
        return state

    async def update_auth_model(self, auth_model):
        """Refuse a login whose username is bound to a different Facebook id, or whose token
        predates a deauthorization."""
        name, state = auth_model["name"], auth_model["auth_state"]
        fb_id = state["facebook_id"]
        by_name, by_id = await self._read(name, lambda: self.identities.both(fb_id, name))
        if by_name and by_name.subject != fb_id:
            raise FacebookLoginError(
                403, f"The hub account {name!r} is linked to a different Facebook account; login "
                f"refused. If your Facebook account changed, contact {self.access_contact}.", name,
            )  # fmt: skip
        if by_id and by_id.username != name:
            raise FacebookLoginError(
                403, f"Your Facebook account is linked to another hub account; login refused. "
                f"Contact {self.access_contact}.", name,
            )  # fmt: skip
        revoked = by_id.revoked.timestamp() if by_id and by_id.revoked else None
        # issued_at has whole-second precision: a token from the revocation's second passes.
        # Without issued_at the fresh code exchange itself shows the app was re-authorized.
        issued = state.get("issued_at")
        if revoked and issued and issued < int(revoked):
            raise FacebookLoginError(
                403, "This Facebook login was revoked (the app was removed from your Facebook "
                "account). Please sign in again.", name,
            )  # fmt: skip
        return auth_model

    async def _read(self, actor: str, fn):
        """A fort store / policy read during login; failures refuse the login clearly."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn)
        except (StoreError, ValueError) as e:  # PolicyError is a ValueError
            self.log.error("facebook.store_unavailable user=%s error=%r", actor, str(e))
            raise FacebookLoginError(
                503,
                "Sign-in is temporarily unavailable: the access policy or the fort store "
                "could not be read. Please try again later.",
                actor,
            ) from None

    async def check_allowed(self, username, auth_model):
        if await super().check_allowed(username, auth_model):
            return True
        if self.allow_study_members and self.policy_file:
            access = self.fort_access
            if await self._read(username, lambda: access.at_sign_in(username)):
                return True
        raise NoStudyMembership(username, self.access_contact)

    def check_allow_config(self):
        super().check_allow_config()
        if self.allow_study_members and not self.policy_file and not self.allow_all:
            self.log.warning(
                "FacebookOAuthenticator.allow_study_members is on but FortSettings.policy_file "
                "is not set: no study member can log in, only allowed_users and admin_users"
            )

    async def add_user(self, user):
        """JupyterHub's hook for a user it creates (a ``User``) and, at start-up, for every user
        in its database (an ``orm.User``: those are left to fort-groups' passes)."""
        await maybe_future(super().add_user(user))
        if not (self.join_study_groups and self.hub_groups and self.policy_file
                and isinstance(user, User)):  # fmt: skip
            return
        try:
            joined = await hubgroups.join_study_groups(user, self.fort_access)
        except Exception as e:  # the hub group is a copy: fort-groups adds them at its next pass
            self.log.warning("facebook.groups_not_joined user=%s error=%r", user.name, str(e))
        else:
            if joined:
                self.log.info("facebook.groups_joined user=%s groups=%s", user.name, joined)

    async def run_post_auth_hook(self, handler, auth_model):
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        name, state = auth_model["name"], auth_model.get("auth_state") or {}
        fb_id = state.get("facebook_id", "")
        record = {
            "actor": name, "action": "auth.login", "resource": f"{PROVIDER}:{fb_id}",
            "decision": "allow", "reason": "Facebook login",
            "details": {"scopes": state.get("scope"), "admin": bool(auth_model.get("admin"))},
            "client": handler.request.remote_ip if handler else "",
        }  # fmt: skip
        try:  # the binding and its record in one transaction: both committed, or neither
            await self.fort_store.run(self.identities.bind_recorded, fb_id, name, record)
        except ValueError as e:
            raise FacebookLoginError(403, f"Login refused: {e}.", name) from None
        except Exception as e:
            self.log.error("facebook.login_not_recorded user=%s error=%r", name, str(e))
            raise FacebookLoginError(
                503,
                "Sign-in is temporarily unavailable: the login could not be recorded in the "
                "audit log, so it was refused. Please try again later.",
                name,
            ) from None
        return auth_model

    async def refresh_user(self, user, handler=None, **kwargs):
        """Re-validate with ``debug_token``, at most once per ``auth_refresh_age``; a revoked,
        expired or deleted login forces a new sign-in. When Facebook cannot answer (unreachable,
        rate-limited: a 503 or 429 from the check) the session is kept and checked again at the
        next refresh; signing everyone out during an outage would lock them out, since a new
        sign-in needs Facebook too. Deauthorization reaches the hub by Meta's callback anyway."""
        if not self.enable_auth_state:
            return True
        state = await user.get_auth_state()
        ident, reason, result = None, "", False
        try:
            ident = await self._read(user.name, lambda: self.identities.by_username(user.name))
        except FacebookLoginError as e:
            reason = e.message
        if not reason and ident and ident.revoked:
            reason = "Facebook login revoked by deauthorization"
        elif (
            not reason
            and state
            and time.time() - (state.get("validated_at") or 0) < self.auth_refresh_age
        ):
            return True
        elif not reason:
            try:
                result = await super().refresh_user(user, handler, **kwargs)
            except web.HTTPError as e:
                reason = getattr(e, "message", None) or str(e)
                if e.status_code in (429, 503):
                    return await self._keep_during_outage(user, ident, reason)
            if not result and not reason:
                reason = "no usable Facebook token in auth_state"
        if not result:
            self.log.warning("facebook.refresh_failed user=%s reason=%r", user.name, reason)
            try:
                await self.fort_store.audit.arecord(
                    user.name, "auth.refresh", f"{PROVIDER}:{ident.subject if ident else ''}",
                    "deny", reason,
                )  # fmt: skip
            except Exception as e:
                self.log.error("facebook.audit_failed user=%s error=%r", user.name, str(e))
        return result

    async def _keep_during_outage(self, user, ident, reason: str) -> bool:
        self.log.warning("facebook.refresh_deferred user=%s reason=%r", user.name, reason)
        try:
            await self.fort_store.audit.arecord(
                user.name, "auth.refresh", f"{PROVIDER}:{ident.subject if ident else ''}",
                "allow", f"session kept, to be checked again: {reason}", {"deferred": True},
            )  # fmt: skip
        except Exception as e:  # the session itself was validated before; nothing new is granted
            self.log.error("facebook.audit_failed user=%s error=%r", user.name, str(e))
        return True

    async def audit_denial(self, handler, error: web.HTTPError) -> None:
        """Record a refused login; never masks the refusal itself."""
        message = getattr(error, "message", None) or error.log_message or ""
        if error.args and not hasattr(error, "message"):
            message = message % error.args
        actor = getattr(error, "actor", "anonymous")
        try:
            await self.fort_store.audit.arecord(
                actor, "auth.deny", PROVIDER, "deny", message, {"status": error.status_code},
                client=handler.request.remote_ip,
            )  # fmt: skip
        except Exception as e:
            self.log.error("facebook.audit_failed actor=%s error=%r", actor, str(e))


class LocalFacebookOAuthenticator(LocalAuthenticator, FacebookOAuthenticator):
    """A version that mixes in local system user creation."""

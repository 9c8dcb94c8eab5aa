"""Who a token belongs to, asked of the hub once per token and cache period for all the fort
services and their replicas.

JupyterHub's ``HubAuth`` caches the hub's answer in each process, so every service, and every
replica of one, asks the hub about the same token again: for a researcher that is one token check
per service, each costing the hub a database lookup and a commit. :class:`TokenAnswers` keeps the
answer in this process's memory *and* in the fort store (:mod:`fort_hub.store.hubanswers`), so the
first service to see a token asks the hub and the others read the answer from the store.

- **How long.** An answer is used for ``c.FortServiceApp.hub_user_cache_seconds`` after the hub
  was asked, counted by each reader with its own setting: a revoked token keeps identifying its
  user for at most that long (plus the clock difference between the hosts).
- **Sessions.** As in ``HubAuth``, the browser's hub session id is part of the key: signing out
  of the hub (which ends the session's tokens) is not answered from the cache.
- **Forgery.** A row carries an HMAC over the key, the time and the model, keyed by the
  services' shared secret (``FORT_COOKIE_SECRET``, never in the store) and the token: whoever
  can write the store cannot make a service take a forged or altered answer, not even for a
  token of their own (it is ignored, and the hub asked). Without a configured secret (each
  service then signs cookies with a random key) answers are not shared: see
  :meth:`fort_hub.services.base.FortServiceApp.init_hub_auth`.
- **Only identity** comes from here: every access decision is still read from the store and the
  policy at the moment of the request, and each service checks its own access scope in the
  answer. A token the hub does not know is remembered in memory only, as ``HubAuth`` does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from jupyterhub.services.auth import HubOAuth

from ..store import Store, StoreError
from ..store.core import isoformat, parse_time, utcnow
from ..store.hubanswers import HubAnswers, StoredAnswer

log = logging.getLogger(__name__)


def answer_keys(token: str, session_id: str, secret: bytes) -> tuple[str, bytes]:
    """(the row's key, the MAC key) for *token* in the browser session *session_id*: a hash of
    both, and an HMAC of the token keyed by the services' *secret*."""
    raw = token.encode("utf8", "surrogatepass")  # one string, one byte string
    session = session_id.encode("utf8", "surrogatepass")
    key = hashlib.sha256(b"fort-hub answer key\0" + session + b"\0" + raw).hexdigest()
    return key, hmac.new(secret, b"fort-hub answer mac\0" + raw, hashlib.sha256).digest()


def answer_mac(mac_key: bytes, key: str, asked: str, model: str) -> str:
    message = "\0".join((key, asked, model)).encode("utf8", "surrogatepass")
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


class TokenAnswers:
    """The hub's answers by token: this process's memory, then the fort store, then the hub.

    *max_age* seconds (> 0) after the hub was asked, an answer is no longer used here.
    *secret* keys the rows' MACs: the same for every service sharing the store, not in it.
    *local_max* bounds how many answers this process keeps in memory. A store that cannot be
    read or written is logged and skipped: the hub is asked (identity never depends on the
    store being up; the decisions that follow do, and fail closed there).
    """

    def __init__(
        self,
        store: Store,
        max_age: float,
        secret: bytes,
        clock: Callable[[], dt.datetime] = utcnow,
        local_max: int = 10_000,
    ):
        if not max_age > 0:
            raise ValueError(f"max_age must be positive, got {max_age!r}")
        if len(secret) < 16:
            raise ValueError("the secret keying the stored answers needs 16 bytes or more")
        self.secret = secret
        self.answers = HubAnswers(store)
        self.store = store
        self.max_age = dt.timedelta(seconds=max_age)
        self.clock = clock
        self.local_max = local_max
        self._local: dict[str, tuple[dict | None, dt.datetime]] = {}
        self._next_purge = clock()

    async def lookup(
        self, token: str, ask_hub: Callable[[], Awaitable[dict | None]], session_id: str = ""
    ) -> dict | None:
        """The user model for *token*, or None if the hub does not know it; *ask_hub()* is
        awaited only when no answer young enough is kept here or in the store."""
        (key, mac_key), now = answer_keys(token, session_id, self.secret), self.clock()
        kept = self._local.get(key)
        if kept is not None and kept[1] > now:
            return kept[0]
        stored = await self._read(key, mac_key, now)
        if stored is not None:
            self._remember(key, *stored)
            return stored[0]
        model = await ask_hub()
        expires = now + self.max_age  # counted from before the hub was asked
        if model is not None:
            await self._write(key, mac_key, model, now)
        self._remember(key, model, expires)
        return model

    async def _read(self, key: str, mac_key: bytes, now: dt.datetime):
        try:
            row = await self.store.run(self.answers.get, key, now - self.max_age)
        except StoreError as e:
            log.warning("could not read the hub's answer from the fort store: %s", e)
            return None
        if row is None:
            return None
        try:
            if not hmac.compare_digest(row.mac, answer_mac(mac_key, key, row.asked, row.model)):
                raise ValueError("its MAC does not match")
            model, asked = json.loads(row.model), parse_time(row.asked)
            if not isinstance(model, dict) or asked > now:
                raise ValueError("it is not a user model asked in the past")
        except (ValueError, TypeError) as e:
            log.warning(
                "ignored a stored answer of the hub (%s; is FORT_COOKIE_SECRET the same for "
                "every fort service?): asking the hub",
                e,
            )
            return None
        return model, asked + self.max_age

    async def _write(self, key: str, mac_key: bytes, model: dict, asked: dt.datetime) -> None:
        text, when = json.dumps(model), isoformat(asked)
        answer = StoredAnswer(text, when, answer_mac(mac_key, key, when, text))
        purge = None
        if asked >= self._next_purge:  # old rows go at most once per max_age per process
            purge, self._next_purge = asked - self.max_age, asked + self.max_age
        try:
            await self.store.run(self.answers.put, key, answer, purge)
        except StoreError as e:
            log.warning("could not keep the hub's answer in the fort store: %s", e)

    def _remember(self, key: str, model: dict | None, expires: dt.datetime) -> None:
        self._local.pop(key, None)  # re-inserted last: the oldest (soonest to expire) first
        self._local[key] = (model, expires)
        while len(self._local) > self.local_max:
            del self._local[next(iter(self._local))]


class FortHubOAuth(HubOAuth):
    """``HubOAuth`` whose asynchronous token checks go through :attr:`answers` (a
    :class:`TokenAnswers`; None: JupyterHub's own per-process cache), and that asks the hub
    every time when ``cache_max_age`` is 0 (``HubAuth`` would then cache for ever)."""

    answers: TokenAnswers | None = None

    def user_for_token(self, token, use_cache=True, session_id="", *, sync=True):
        if self.cache_max_age <= 0:
            use_cache = False
        if sync or not use_cache or self.answers is None:
            return super().user_for_token(token, use_cache, session_id, sync=sync)

        def ask_hub():
            return super(FortHubOAuth, self).user_for_token(token, False, session_id, sync=False)

        return self.answers.lookup(token, ask_hub, session_id or "")

"""Who a token belongs to, asked of the hub once per token and cache period for all the fort
services and their replicas.

JupyterHub's ``HubAuth`` caches the hub's answer in each process, so every service, and every
replica of one, asks the hub about the same token again: for a researcher that is one token check
per service, each costing the hub a database lookup and a commit. :class:`TokenAnswers` keeps the
answer in this process's memory *and* in the fort store (:mod:`fort_hub.store.hubanswers`), so the
first service to see a token asks the hub and the others read the answer from the store.

The answer expires ``c.FortServiceApp.hub_user_cache_seconds`` after the hub was asked, in the
store and in every process that read it: a revoked token keeps identifying its user for at most
that long, as before. Only identity comes from here; every access decision is still read from the
store and the policy at the moment of the request. Only positive answers are shared: a token the
hub did not know is asked about again next time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable

from jupyterhub.services.auth import HubOAuth

from ..store import Store, StoreError
from ..store.hubanswers import HubAnswers

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def token_key(token: str) -> str:
    """The key a token's answer is kept under: its SHA-256, hex (the token is never stored)."""
    return hashlib.sha256(token.encode("utf8", "replace")).hexdigest()


class TokenAnswers:
    """The hub's answers by token: this process's memory, then the fort store, then the hub.

    *max_age* seconds (> 0) after the hub was asked, an answer is no longer used anywhere.
    *local_max* bounds how many answers this process keeps in memory. A store that cannot be
    read or written is logged and skipped: the hub is asked (identity never depends on the
    store being up; the decisions that follow do, and fail closed there).
    """

    def __init__(
        self,
        store: Store,
        max_age: float,
        clock: Callable[[], dt.datetime] = utcnow,
        local_max: int = 10_000,
    ):
        if not max_age > 0:
            raise ValueError(f"max_age must be positive, got {max_age!r}")
        self.answers = HubAnswers(store)
        self.store = store
        self.max_age = dt.timedelta(seconds=max_age)
        self.clock = clock
        self.local_max = local_max
        self._local: dict[str, tuple[dict, dt.datetime]] = {}

    async def lookup(self, token: str, ask_hub: Callable[[], Awaitable[dict | None]]):
        """The user model for *token*, or None if the hub does not know it; *ask_hub()* is
        awaited only when no unexpired answer is kept here or in the store."""
        key, now = token_key(token), self.clock()
        kept = self._local.get(key)
        if kept is not None and kept[1] > now:
            return kept[0]
        stored = await self._read(key, now)
        if stored is not None:
            self._remember(key, *stored)
            return stored[0]
        model = await ask_hub()
        if model is not None:  # expires counted from before the hub was asked
            expires = now + self.max_age
            await self._write(key, model, expires)
            self._remember(key, model, expires)
        return model

    async def _read(self, key: str, now: dt.datetime):
        try:
            return await self.store.run(self.answers.get, key, now)
        except StoreError as e:
            log.warning("could not read the hub's answer from the fort store: %s", e)
            return None

    async def _write(self, key: str, model: dict, expires: dt.datetime) -> None:
        try:
            await self.store.run(self.answers.put, key, model, expires, self.clock())
        except StoreError as e:
            log.warning("could not keep the hub's answer in the fort store: %s", e)

    def _remember(self, key: str, model: dict, expires: dt.datetime) -> None:
        self._local.pop(key, None)  # re-insert: the dict stays in order of expiry, roughly
        self._local[key] = (model, expires)
        if len(self._local) > self.local_max:
            now = self.clock()
            self._local = {k: v for k, v in self._local.items() if v[1] > now}
            while len(self._local) > self.local_max:  # all current: drop the oldest
                del self._local[next(iter(self._local))]


class FortHubOAuth(HubOAuth):
    """``HubOAuth`` whose asynchronous token checks go through :attr:`answers` (a
    :class:`TokenAnswers`; None: JupyterHub's own per-process cache, as ``HubOAuth``)."""

    answers: TokenAnswers | None = None

    def user_for_token(self, token, use_cache=True, session_id="", *, sync=True):
        if sync or not use_cache or self.answers is None:
            return super().user_for_token(token, use_cache, session_id, sync=sync)

        def ask_hub():
            return super(FortHubOAuth, self).user_for_token(token, False, session_id, sync=False)

        return self.answers.lookup(token, ask_hub)

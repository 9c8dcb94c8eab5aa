"""Which users the hub has, for fort-groups' reconciliation passes, without listing every user
at every pass.

A pass adds a policy member to a hub group only once the hub knows the user (a user who never
signed in is added at a later pass). Listing every hub user at every pass cost the hub about
470 ms of CPU per pass at 1,000 users (JupyterHub builds each user's model; docs/benchmarks.md,
"Scale"), every ``GroupsService.reconcile_interval``, growing with the hub. :class:`HubUsers`
lists them all at the first pass and then every ``GroupsService.hub_users_listing_interval``
seconds; in between it lists only the users created since, newest first (``sort=-id``, which
JupyterHub 5.5 and 6 support; fort-hub requires 5.5), page by page until a whole page holds
only users it has seen: a pass costs the hub in proportion to the users who are new, not to all
of them. (A name seen before can come back among the new ones, a user deleted and created
again: one such name does not end the walk, a page of them does.)

What it knows is a copy of the hub's users, used only to choose which names to send to the hub
(never to grant anything): the hub refuses an unknown name with a 400, and the caller then
calls :meth:`HubUsers.forget` and lists them all again (a user deleted from the hub meanwhile).
A user renamed in the hub is seen under the new name at the next full listing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..base import HubApi

PAGINATION = "application/jupyterhub-pagination+json"
PAGE = 200  # JupyterHub's largest page
NEWEST_PAGE = 50  # the newest users, until a page of users already seen


async def paged(hub: HubApi, path: str) -> list[dict]:
    """Every item of the paginated listing at *path* (a hub that does not paginate: its list)."""
    items, offset = [], 0
    while True:
        page = await hub.request(
            "GET", path, params={"offset": offset, "limit": PAGE},
            accept=PAGINATION,
        )  # fmt: skip
        if isinstance(page, list):
            return page
        items.extend(page["items"])
        nxt = (page.get("_pagination") or {}).get("next")
        if not nxt:
            return items
        offset = nxt["offset"]


class HubUsers:
    """The names of the hub's users, kept between passes (see the module's docstring).

    *listing_interval*: seconds between full listings; *clock*: monotonic seconds."""

    def __init__(
        self, hub: HubApi, listing_interval: float, clock: Callable[[], float] = time.monotonic
    ):
        self.hub = hub
        self.listing_interval = listing_interval
        self.clock = clock
        self.names: set[str] | None = None
        self.listed_at = -math.inf
        self.full_listings = 0

    def forget(self) -> None:
        """List every user at the next :meth:`current` (the hub refused a name as unknown)."""
        self.names = None

    async def current(self) -> set[str]:
        """The hub's users now: all of them when due, else those known plus the new ones."""
        now = self.clock()
        if self.names is None or now - self.listed_at >= self.listing_interval:
            self.names = {u["name"] for u in await paged(self.hub, "users")}
            self.listed_at = now
            self.full_listings += 1
        else:
            self.names |= await self._created_since()
        return self.names

    async def _created_since(self) -> set[str]:
        """The users the hub has that were not seen yet: newest first, page by page, until a
        page holds only names already seen (every older user has been seen then)."""
        known = self.names or set()
        new: set[str] = set()
        offset = 0
        while True:
            page = await self.hub.request(
                "GET", "users", params={"sort": "-id", "offset": offset, "limit": NEWEST_PAGE},
                accept=PAGINATION,
            )  # fmt: skip
            items = page["items"] if isinstance(page, dict) else page
            names = [u["name"] for u in items]
            fresh = [n for n in names if n not in known]
            new.update(fresh)
            nxt = (page.get("_pagination") or {}).get("next") if isinstance(page, dict) else None
            if not fresh or not nxt:
                return new
            offset = nxt["offset"]


__all__ = ["NEWEST_PAGE", "PAGINATION", "HubUsers", "paged"]

"""fort-groups learns the hub's users without listing all of them at every pass (#13): a full
listing at the first pass and every ``hub_users_listing_interval``, in between only the users
created since (newest first). Against a stand-in of the hub's paginated users API; the real hub
is in tests/test_groups_service.py."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from fort_hub.services.groups import GroupsService
from fort_hub.services.groups.hubusers import NEWEST_PAGE, HubUsers


class UsersApi:
    """``GET users`` as JupyterHub answers it: paginated, ordered by id, ``sort=-id`` newest
    first; every request is recorded."""

    def __init__(self, names: list[str]):
        self.names = list(names)  # in creation (id) order
        self.requests: list[dict] = []

    async def request(self, method, path, body=None, params=None, accept=None):
        assert (method, path) == ("GET", "users")
        self.requests.append(dict(params or {}))
        order = self.names[::-1] if params.get("sort") == "-id" else self.names
        offset, limit = params["offset"], params["limit"]
        items = [{"name": n} for n in order[offset : offset + limit]]
        more = offset + limit < len(order)
        nxt = {"offset": offset + limit, "limit": limit} if more else None
        return {"items": items, "_pagination": {"offset": offset, "limit": limit, "next": nxt}}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def names(n: int, start: int = 0) -> list[str]:
    return [f"u{i:05d}" for i in range(start, start + n)]


async def test_the_first_pass_lists_every_user_then_only_the_new_ones():
    hub, clock = UsersApi(names(450)), Clock()
    users = HubUsers(hub, listing_interval=600, clock=clock)
    assert await users.current() == set(names(450))
    assert [r.get("sort") for r in hub.requests] == [None, None, None]  # 3 pages of 200
    hub.requests.clear()
    hub.names += names(3, start=450)
    clock.t = 60
    assert await users.current() == set(names(453))
    # the newest page (3 new, the rest seen), then a page of users all seen: the end
    assert hub.requests == [{"sort": "-id", "offset": o, "limit": NEWEST_PAGE} for o in (0, 50)]
    assert users.full_listings == 1


async def test_more_new_users_than_a_page_are_all_found():
    hub, clock = UsersApi(names(10)), Clock()
    users = HubUsers(hub, listing_interval=600, clock=clock)
    await users.current()
    hub.requests.clear()
    hub.names += names(4 * NEWEST_PAGE + 5, start=10)
    clock.t = 60
    assert await users.current() == set(names(4 * NEWEST_PAGE + 15))
    assert [r["offset"] for r in hub.requests] == [0, 50, 100, 150, 200]  # the last: 5 new
    assert {r["sort"] for r in hub.requests} == {"-id"}


async def test_a_name_seen_before_among_the_new_ones_does_not_end_the_walk():
    """A user deleted and created again (same name, newest id) among the new users: the walk
    goes on past it until a page of names all seen (the review's case: it stopped there)."""
    hub, clock = UsersApi(names(300)), Clock()
    users = HubUsers(hub, listing_interval=600, clock=clock)
    await users.current()
    hub.names.remove("u00007")
    hub.names += names(250, start=300) + ["u00007"]  # newest first: u00007, then 250 new
    clock.t = 60
    assert await users.current() == set(names(550))


async def test_no_new_user_costs_one_page_and_changes_nothing():
    hub, clock = UsersApi(names(300)), Clock()
    users = HubUsers(hub, listing_interval=600, clock=clock)
    await users.current()
    hub.requests.clear()
    clock.t = 60
    assert await users.current() == set(names(300))
    assert len(hub.requests) == 1


async def test_a_full_listing_when_due_and_after_forget():
    hub, clock = UsersApi(names(5)), Clock()
    users = HubUsers(hub, listing_interval=600, clock=clock)
    await users.current()
    hub.names.remove("u00002")  # deleted in the hub: only a full listing sees it
    clock.t = 599
    assert "u00002" in await users.current()
    clock.t = 600
    assert "u00002" not in await users.current()
    assert users.full_listings == 2
    hub.names.remove("u00003")
    users.forget()
    assert "u00003" not in await users.current()
    assert users.full_listings == 3


@pytest.mark.parametrize("trait", ["hub_users_listing_interval", "admin_wait_seconds"])
@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_the_intervals_must_be_positive_and_finite(trait, value):
    with pytest.raises(
        TraitError, match=rf"GroupsService\.{trait} must be positive, finite seconds"
    ):
        GroupsService(**{trait: value})

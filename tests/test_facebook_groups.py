"""A new hub user joins the fort-managed hub groups of their study memberships at once
(``FacebookOAuthenticator.add_user``, :mod:`fort_hub.authenticators.hubgroups`), against
JupyterHub's own ORM and a real fort store (SQLite and PostgreSQL). Through a real hub:
tests/test_facebook_hub.py::test_a_new_user_is_in_their_study_hub_group_at_first_sign_in."""

from __future__ import annotations

import datetime as dt

import pytest
from jupyterhub import orm
from jupyterhub.user import User
from sqlalchemy import event

from fort_hub.authenticators import hubgroups
from fort_hub.authenticators.facebook import FacebookOAuthenticator
from fort_hub.authenticators.hubgroups import ACTOR
from fort_hub.authenticators.identities import Identities
from fort_hub.services.groups.reconcile import member_reason
from fort_hub.store import AuditError, StoreError
from fort_hub.store.memberships import Memberships

MARK = {"fort-groups": {"managed": True}}


@pytest.fixture
def hubdb():
    db = orm.new_session_factory("sqlite:///:memory:")()
    for name, props in [("urls-study", MARK), ("ads-study", MARK), ("other", {}), ("extra", MARK)]:
        db.add(orm.Group(name=name, properties=props))
    db.commit()
    yield db
    db.close()


@pytest.fixture
def auth(store_url, example_policy_path):
    return FacebookOAuthenticator(
        client_id="1", client_secret="s", policy_file=str(example_policy_path),
        store_url=store_url, hub_groups=True,  # the join is part of the hub copy (off by default)
    )  # fmt: skip


def new_user(db, name) -> User:
    orm_user = orm.User(name=name)
    db.add(orm_user)
    db.commit()
    return User(orm_user, db=db)


def groups_of(user) -> list[str]:
    return sorted(g.name for g in user.orm_user.groups)


def joins(auth, name):
    return [
        r
        for r in auth.fort_store.audit.query(user=name, action="groups.add", limit=20)
        if r.actor == ACTOR
    ]


async def test_joins_only_managed_groups_of_active_memberships(auth, hubdb):
    members = Memberships(auth.fort_store)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    members.upsert("urls-study", "erin", expires=until, updated_by="test")
    members.upsert("ads-study", "erin", updated_by="test",
                   expires=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))  # fmt: skip
    members.upsert("other", "erin", updated_by="test")  # not a policy group, not fort's
    members.upsert("extra", "erin", updated_by="test")  # marked as fort's, not in the policy
    erin = new_user(hubdb, "erin")
    await auth.add_user(erin)
    assert groups_of(erin) == ["urls-study"]
    hubdb.expire_all()  # committed: a fresh read of the hub database sees it
    assert [g.name for g in hubdb.query(orm.User).filter_by(name="erin").one().groups] == [
        "urls-study"
    ]
    [rec] = joins(auth, "erin")
    assert rec.resource == "groups/urls-study/members/erin" and rec.decision == "allow"
    expiry = members.get("urls-study", "erin").expires
    assert rec.reason == member_reason(expiry, auth.fort_policy) != "member"
    assert rec.details == {"group": "urls-study", "user": "erin", "by": "new hub user"}


async def test_a_group_without_fort_groups_mark_is_left_alone(auth, hubdb):
    # bob is a policy member of ads-study; the hub's ads-study is not (yet) fort's
    hubdb.query(orm.Group).filter_by(name="ads-study").one().properties = {}
    hubdb.commit()
    bob = new_user(hubdb, "bob")
    await auth.add_user(bob)
    assert groups_of(bob) == [] and joins(auth, "bob") == []


async def test_a_member_already_in_the_group_is_not_recorded_again(auth, hubdb):
    bob = new_user(hubdb, "bob")
    bob.orm_user.groups.append(hubdb.query(orm.Group).filter_by(name="ads-study").one())
    hubdb.commit()
    await auth.add_user(bob)
    assert groups_of(bob) == ["ads-study"] and joins(auth, "bob") == []


async def test_a_membership_the_decision_point_does_not_count_is_not_joined(
    auth, hubdb, example_policy_path
):
    """Review of #13: a stale store copy of a policy membership (no expiry) while the policy
    says it ended, and a deauthorized sign-in, count for no decision, so for no join either."""
    text = example_policy_path.read_text()
    example_policy_path.write_text(
        text.replace("members: [bob, carol]", "members: [{user: bob, expires: 2025-01-31}, carol]")
    )
    Memberships(auth.fort_store).upsert("ads-study", "bob", source="policy", updated_by="test")
    bob = new_user(hubdb, "bob")
    await auth.add_user(bob)
    assert groups_of(bob) == [] and joins(auth, "bob") == []

    idents = Identities(auth.fort_store)
    idents.bind("10000000000000003", "carol")
    idents.revoke("10000000000000003")
    carol = new_user(hubdb, "carol")
    await auth.add_user(carol)
    assert groups_of(carol) == [] and joins(auth, "carol") == []


async def test_nothing_is_joined_when_the_record_cannot_be_written(auth, hubdb, monkeypatch):
    def broken(*a, **k):
        raise AuditError("audit record not written, action refused: disk full")

    monkeypatch.setattr(auth.fort_store.audit, "record_many", broken)
    bob = new_user(hubdb, "bob")
    await auth.add_user(bob)  # the sign-in goes on: fort-groups adds bob at its next pass
    hubdb.expire_all()
    assert groups_of(bob) == []


async def test_a_change_the_hub_database_refuses_is_rolled_back_and_recorded(auth, hubdb):
    bob = new_user(hubdb, "bob")

    def refuse(session, *_):
        if any(isinstance(o, orm.User) for o in session.dirty):
            raise RuntimeError("database is locked")

    event.listen(hubdb, "before_flush", refuse)
    try:
        await auth.add_user(bob)
    finally:
        event.remove(hubdb, "before_flush", refuse)
    assert groups_of(bob) == []  # rolled back: the session is usable and holds no half change
    hubdb.add(orm.Group(name="after"))
    hubdb.commit()
    recs = {r.reason for r in joins(auth, "bob")}
    assert recs == {"member", "not made: database is locked"}


async def test_a_member_added_meanwhile_is_not_added_twice(auth, hubdb, monkeypatch):
    """Review of #13: fort-groups' request can run on the hub while the record is written."""
    bob = new_user(hubdb, "bob")
    ads = hubdb.query(orm.Group).filter_by(name="ads-study").one()
    write = auth.fort_store.audit.arecord_many

    async def meanwhile(records):
        if ads not in bob.orm_user.groups:
            bob.orm_user.groups.append(ads)  # the hub's POST groups/ads-study/users
            hubdb.commit()
        return await write(records)

    monkeypatch.setattr(auth.fort_store.audit, "arecord_many", meanwhile)
    await auth.add_user(bob)
    assert [g.name for g in bob.orm_user.groups] == ["ads-study"]
    assert {r.reason for r in joins(auth, "bob")} == {"member", "not made: already a member"}


async def test_users_at_hub_start_up_and_a_switched_off_join_are_left_to_fort_groups(
    auth, hubdb, monkeypatch, store_url, example_policy_path
):
    calls = []

    async def join(user, access):
        calls.append(user)
        return []

    monkeypatch.setattr(hubgroups, "join_study_groups", join)
    bob = new_user(hubdb, "bob")
    default = FacebookOAuthenticator(
        client_id="1", client_secret="s", policy_file=str(example_policy_path),
        store_url=store_url,
    )  # fmt: skip
    await default.add_user(bob)  # by default there is no hub copy of study groups to join
    assert (default.hub_groups, calls) == (False, [])
    await auth.add_user(bob.orm_user)  # JupyterHub's start-up passes its database rows
    auth.join_study_groups = False
    await auth.add_user(bob)
    assert calls == []
    auth.join_study_groups, auth.hub_groups = True, False  # no hub copy of study groups at all
    await auth.add_user(bob)
    assert calls == []
    auth.hub_groups = True
    await auth.add_user(bob)
    assert calls == [bob]


async def test_a_store_that_cannot_be_read_leaves_the_sign_in_alone(auth, hubdb, monkeypatch):
    def down(*a, **k):
        raise StoreError("the fort store is unavailable")

    monkeypatch.setattr(Memberships, "for_user_unless_deauthorized", down)
    bob = new_user(hubdb, "bob")
    await auth.add_user(bob)  # no exception: JupyterHub would refuse the sign-in
    assert groups_of(bob) == []

"""The hub's answers to "whose token is this?", shared through the fort store: the repository
(on SQLite and PostgreSQL) and :class:`TokenAnswers` with a fake hub and clock. The same sharing
through the real services and hub is in test_service_contract.py."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from fort_hub.services.hubauth import TokenAnswers, token_key
from fort_hub.store import Store, StoreError
from fort_hub.store.hubanswers import HubAnswers

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
ALICE = {"kind": "user", "name": "alice", "scopes": ["access:services!service=fort-query"]}
BOB = {"kind": "user", "name": "bob", "scopes": []}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# ----- the repository, on both stores ------------------------------------------------------------


def test_an_answer_is_kept_until_it_expires(store):
    answers = HubAnswers(store)
    assert answers.get("k1", at(0)) is None
    answers.put("k1", ALICE, expires=at(60), now=at(0))
    assert answers.get("k1", at(0)) == (ALICE, at(60))
    assert answers.get("k1", at(59.9)) == (ALICE, at(60))
    assert answers.get("k1", at(60)) is None  # at the expiry it is gone
    assert answers.get("k2", at(0)) is None


def test_a_new_answer_replaces_the_old_and_put_deletes_the_expired(store):
    answers = HubAnswers(store)
    answers.put("k1", ALICE, expires=at(60), now=at(0))
    answers.put("k2", BOB, expires=at(10), now=at(0))
    answers.put("k1", BOB, expires=at(90), now=at(30))  # k2 expired at 10: deleted now
    assert answers.get("k1", at(30)) == (BOB, at(90))
    assert answers.count() == 1


def test_the_token_itself_is_not_stored(store):
    token = "secret-token-value-0123456789abcdef"
    HubAnswers(store).put(token_key(token), ALICE, expires=at(60), now=at(0))
    with store.reading() as conn:
        dump = " ".join(str(v) for row in conn.exec_driver_sql(
            "SELECT token_hash, model, expires FROM fort_hub_answers") for v in row)  # fmt: skip
    assert token not in dump
    assert token_key(token) in dump and len(token_key(token)) == 64


# ----- TokenAnswers: memory, then the store, then the hub --------------------------------------


class Hub:
    """A fake hub: answers from *known*, counting the questions."""

    def __init__(self, known: dict[str, dict]):
        self.known, self.asked = known, []

    def asker(self, token):
        async def ask():
            self.asked.append(token)
            return self.known.get(token)

        return ask


class Clock:
    def __init__(self):
        self.now = at(0)

    def __call__(self):
        return self.now


def lookup(answers: TokenAnswers, hub: Hub, token: str):
    return asyncio.run(answers.lookup(token, hub.asker(token)))


@pytest.fixture
def shared(store):
    """Two services' TokenAnswers on one store, one clock, one hub knowing tok-a (alice)."""
    clock, hub = Clock(), Hub({"tok-a": ALICE})
    return TokenAnswers(store, 60, clock), TokenAnswers(store, 60, clock), clock, hub


def test_the_hub_is_asked_once_for_both_services(shared):
    query, credentials, clock, hub = shared
    assert lookup(query, hub, "tok-a") == ALICE
    clock.now = at(5)
    assert lookup(query, hub, "tok-a") == ALICE  # this process's memory
    assert lookup(credentials, hub, "tok-a") == ALICE  # the store
    assert hub.asked == ["tok-a"]


def test_an_answer_read_from_the_store_expires_when_the_stored_one_does(shared):
    query, credentials, clock, hub = shared
    lookup(query, hub, "tok-a")  # asked at 0: good until 60, everywhere
    clock.now = at(50)
    assert lookup(credentials, hub, "tok-a") == ALICE
    hub.known.clear()  # the hub revokes the token
    clock.now = at(59)
    assert lookup(credentials, hub, "tok-a") == ALICE  # within the 60 s the setting allows
    clock.now = at(60)
    assert lookup(credentials, hub, "tok-a") is None  # not 60 s after *credentials* read it
    assert lookup(query, hub, "tok-a") is None
    assert hub.asked == ["tok-a", "tok-a", "tok-a"]


def test_a_token_the_hub_does_not_know_is_asked_again(shared):
    query, credentials, _clock, hub = shared
    assert lookup(query, hub, "tok-x") is None
    hub.known["tok-x"] = BOB  # e.g. a token made just after
    assert lookup(credentials, hub, "tok-x") == BOB
    assert hub.asked == ["tok-x", "tok-x"]


def test_a_store_that_fails_means_asking_the_hub(shared, monkeypatch):
    query, credentials, _clock, hub = shared

    def down(*a, **kw):
        raise StoreError("the store is down")

    monkeypatch.setattr(query.answers, "get", down)
    monkeypatch.setattr(query.answers, "put", down)
    assert lookup(query, hub, "tok-a") == ALICE
    assert lookup(credentials, hub, "tok-a") == ALICE  # query could not share it
    assert hub.asked == ["tok-a", "tok-a"]


def test_memory_holds_at_most_local_max_answers(sqlite_url, monkeypatch):
    clock, hub = Clock(), Hub({f"tok-{i}": {"name": f"u{i}"} for i in range(5)})
    answers = TokenAnswers(Store(sqlite_url), 60, clock, local_max=3)
    for i in range(5):
        lookup(answers, hub, f"tok-{i}")
    monkeypatch.setattr(answers.answers, "get", lambda *a: None)  # what memory holds, alone
    for i in (4, 3, 2, 1):
        lookup(answers, hub, f"tok-{i}")
    assert hub.asked == [f"tok-{i}" for i in range(5)] + ["tok-1"]


@pytest.mark.parametrize("max_age", [0, -1, float("nan")])
def test_max_age_must_be_positive(sqlite_url, max_age):
    with pytest.raises(ValueError, match="max_age must be positive"):
        TokenAnswers(Store(sqlite_url), max_age)

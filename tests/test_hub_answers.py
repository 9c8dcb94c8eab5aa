"""The hub's answers to "whose token is this?", shared through the fort store: the repository
(on SQLite and PostgreSQL) and :class:`TokenAnswers` with a fake hub and clock. The same sharing
through the real services and hub is in test_service_contract.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from fort_hub.services.hubauth import TokenAnswers, answer_keys, answer_mac
from fort_hub.store import Store, StoreError
from fort_hub.store.core import isoformat
from fort_hub.store.hubanswers import HubAnswers, StoredAnswer

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
ALICE = {"kind": "user", "name": "alice", "scopes": ["access:services!service=fort-query"]}
BOB = {"kind": "user", "name": "bob", "scopes": []}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def row(model: dict, asked: float, mac: str = "m") -> StoredAnswer:
    return StoredAnswer(json.dumps(model), isoformat(at(asked)), mac)


# ----- the repository, on both stores ------------------------------------------------------------


def test_a_row_is_returned_while_asked_after_since(store):
    answers = HubAnswers(store)
    assert answers.get("k1", since=at(-60)) is None
    answers.put("k1", row(ALICE, 0))
    assert answers.get("k1", since=at(-60)) == row(ALICE, 0)
    assert answers.get("k1", since=at(-0.1)) == row(ALICE, 0)
    assert answers.get("k1", since=at(0)) is None  # asked at since: too old
    assert answers.get("k2", since=at(-60)) is None


def test_a_new_row_replaces_the_old_and_a_purge_deletes_the_old_ones(store):
    answers = HubAnswers(store)
    answers.put("k1", row(ALICE, 0))
    answers.put("k2", row(BOB, 5))
    answers.put("k1", row(BOB, 30, "m2"))
    assert answers.get("k1", since=at(0)) == row(BOB, 30, "m2")
    assert answers.count() == 2
    answers.put("k3", row(ALICE, 40), purge_before=at(10))  # k2, asked at 5, goes
    assert answers.count() == 2 and answers.get("k2", since=at(-60)) is None


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


def lookup(answers: TokenAnswers, hub: Hub, token: str, session_id: str = ""):
    return asyncio.run(answers.lookup(token, hub.asker(token), session_id))


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


def test_an_answer_read_from_the_store_expires_when_the_hub_was_asked_max_age_ago(shared):
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


def test_each_reader_applies_its_own_max_age(store):
    clock, hub = Clock(), Hub({"tok-a": ALICE})
    lenient, strict = TokenAnswers(store, 300, clock), TokenAnswers(store, 10, clock)
    lookup(lenient, hub, "tok-a")
    hub.known.clear()
    clock.now = at(9)
    assert lookup(strict, hub, "tok-a") == ALICE
    clock.now = at(11)
    assert lookup(strict, hub, "tok-a") is None  # the writer's 300 s do not count here
    assert lookup(lenient, hub, "tok-a") == ALICE


def test_another_browser_session_asks_the_hub_again(shared):
    """As HubAuth: signing out of the hub ends the session id the answer was kept under."""
    query, credentials, _clock, hub = shared
    assert lookup(query, hub, "tok-a", session_id="s1") == ALICE
    hub.known.clear()  # signing out revokes the session's tokens
    assert lookup(credentials, hub, "tok-a", session_id="") is None
    assert lookup(credentials, hub, "tok-a", session_id="s1") == ALICE  # the same session
    assert hub.asked == ["tok-a", "tok-a"]


def test_a_token_the_hub_does_not_know_is_remembered_in_memory_only(shared):
    query, credentials, clock, hub = shared
    assert lookup(query, hub, "tok-x") is None
    hub.known["tok-x"] = BOB
    clock.now = at(30)
    assert lookup(query, hub, "tok-x") is None  # as HubAuth: for max_age, in this process
    assert lookup(credentials, hub, "tok-x") == BOB  # nothing was shared
    clock.now = at(60)
    assert lookup(query, hub, "tok-x") == BOB  # the store has it from credentials now
    assert hub.asked == ["tok-x", "tok-x"]


def forge(store, token: str, model: dict, asked: dt.datetime, mac_key: bytes | None = None):
    """Write a row for *token* as someone with the store but maybe not the token would."""
    key = answer_keys(token)[0]
    text, when = json.dumps(model), isoformat(asked)
    mac = answer_mac(mac_key or b"guessed", key, when, text)
    HubAnswers(store).put(key, StoredAnswer(text, when, mac))


def test_a_forged_or_altered_row_is_ignored_and_the_hub_asked(shared, caplog):
    query, credentials, clock, hub = shared
    admin = {**ALICE, "name": "admin", "admin": True}
    forge(query.store, "tok-a", admin, at(0))  # without the token: a guessed MAC key
    assert lookup(query, hub, "tok-a") == ALICE
    assert "MAC does not match" in caplog.text
    assert lookup(credentials, hub, "tok-a") == ALICE and hub.asked == ["tok-a"]  # the store
    key, mac_key = answer_keys("tok-a")
    honest = HubAnswers(query.store).get(key, since=at(-60))
    altered = honest._replace(asked=isoformat(at(30)))  # made younger by the store's writer
    HubAnswers(query.store).put(key, altered)
    clock.now = at(61)
    other = TokenAnswers(query.store, 60, clock)
    assert lookup(other, hub, "tok-a") == ALICE and hub.asked == ["tok-a"] * 2
    forge(query.store, "tok-b", admin, at(61), mac_key)  # a real MAC key of *another* token
    assert lookup(other, Hub({}), "tok-b") is None


def test_a_store_that_fails_means_asking_the_hub(shared, monkeypatch):
    query, credentials, _clock, hub = shared

    def down(*a, **kw):
        raise StoreError("the store is down")

    monkeypatch.setattr(query.answers, "get", down)
    monkeypatch.setattr(query.answers, "put", down)
    assert lookup(query, hub, "tok-a") == ALICE
    assert lookup(credentials, hub, "tok-a") == ALICE  # query could not share it
    assert hub.asked == ["tok-a", "tok-a"]


def test_old_rows_are_purged_at_most_once_per_max_age(store):
    clock, hub = Clock(), Hub({f"tok-{i}": {"name": f"u{i}"} for i in range(4)})
    answers = TokenAnswers(store, 60, clock)
    lookup(answers, hub, "tok-0")
    clock.now = at(70)
    lookup(answers, hub, "tok-1")  # purges what was asked before 10: tok-0
    assert HubAnswers(store).count() == 1
    clock.now = at(140)
    lookup(answers, hub, "tok-2")  # 70 s after the last purge, but the next is due at 130
    assert HubAnswers(store).count() == 1
    clock.now = at(150)
    lookup(answers, hub, "tok-3")  # within 60 s of the last purge: none
    assert HubAnswers(store).count() == 2


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

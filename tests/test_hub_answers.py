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
SECRET = b"the services' shared secret"
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
    return (
        TokenAnswers(store, 60, SECRET, clock),
        TokenAnswers(store, 60, SECRET, clock),
        clock,
        hub,
    )


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
    lenient, strict = (
        TokenAnswers(store, 300, SECRET, clock),
        TokenAnswers(store, 10, SECRET, clock),
    )
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


def forge(store, token: str, model: dict, asked: dt.datetime, secret: bytes, session_id=""):
    """Write a row for *token* as someone who can write the store and knows *secret* (or
    guesses it) would."""
    key, mac_key = answer_keys(token, session_id, secret)
    text, when = json.dumps(model), isoformat(asked)
    HubAnswers(store).put(key, StoredAnswer(text, when, answer_mac(mac_key, key, when, text)))


ADMIN = {**ALICE, "name": "admin", "admin": True}


def test_the_forgery_check_is_what_refuses_a_forged_row(shared):
    """With the secret, a forged row is taken: so the tests below show the MAC at work."""
    query, _credentials, _clock, hub = shared
    forge(query.store, "tok-a", ADMIN, at(0), SECRET)
    assert lookup(query, hub, "tok-a") == ADMIN and hub.asked == []


def test_a_row_forged_for_a_token_of_ones_own_without_the_secret_is_ignored(shared, caplog):
    """A store writer holding the token (their own) but not the services' secret."""
    query, credentials, _clock, hub = shared
    forge(query.store, "tok-a", ADMIN, at(0), b"a guess at the secret")
    assert lookup(query, hub, "tok-a") == ALICE and hub.asked == ["tok-a"]
    assert "MAC does not match" in caplog.text
    assert lookup(credentials, hub, "tok-a") == ALICE and hub.asked == ["tok-a"]  # the hub's


def test_an_altered_row_is_ignored(shared):
    """Made younger, moved to another session's key, or dated in the future."""
    query, credentials, clock, hub = shared
    lookup(query, hub, "tok-a", session_id="s1")
    key, _ = answer_keys("tok-a", "s1", SECRET)
    honest = HubAnswers(query.store).get(key, since=at(-60))
    clock.now = at(61)
    HubAnswers(query.store).put(key, honest._replace(asked=isoformat(at(30))))
    assert lookup(credentials, hub, "tok-a", session_id="s1") == ALICE
    assert hub.asked == ["tok-a"] * 2
    moved = HubAnswers(query.store).get(key, since=at(-60))
    HubAnswers(query.store).put(answer_keys("tok-a", "s2", SECRET)[0], moved)
    assert lookup(credentials, hub, "tok-a", session_id="s2") == ALICE
    assert hub.asked == ["tok-a"] * 3
    forge(query.store, "tok-b", ADMIN, at(200), SECRET)  # signed, but asked "in the future"
    assert lookup(credentials, Hub({}), "tok-b") is None


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
    answers = TokenAnswers(store, 60, SECRET, clock)
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
    answers = TokenAnswers(Store(sqlite_url), 60, SECRET, clock, local_max=3)
    for i in range(5):
        lookup(answers, hub, f"tok-{i}")
    monkeypatch.setattr(answers.answers, "get", lambda *a: None)  # what memory holds, alone
    for i in (4, 3, 2, 1):
        lookup(answers, hub, f"tok-{i}")
    assert hub.asked == [f"tok-{i}" for i in range(5)] + ["tok-1"]


def test_tokens_that_differ_only_in_what_utf8_cannot_encode_have_their_own_keys():
    """HubAuth's cache key encodes with "replace": both of these would be "tok-?"."""
    assert answer_keys("tok-\udc80", "", SECRET) != answer_keys("tok-\udc81", "", SECRET)
    assert answer_keys("tok-a", "\udc80", SECRET)[0] != answer_keys("tok-a", "\udc81", SECRET)[0]


def test_the_secret_must_have_16_bytes(sqlite_url):
    with pytest.raises(ValueError, match="16 bytes"):
        TokenAnswers(Store(sqlite_url), 60, b"short")


@pytest.mark.parametrize("max_age", [0, -1, float("nan")])
def test_max_age_must_be_positive(sqlite_url, max_age):
    with pytest.raises(ValueError, match="max_age must be positive"):
        TokenAnswers(Store(sqlite_url), max_age, SECRET)

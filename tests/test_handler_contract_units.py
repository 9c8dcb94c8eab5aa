"""The handler contract's pure parts: client address, text and depth checks, settings."""

from __future__ import annotations

import re

import pytest
from traitlets import TraitError
from traitlets.config import Config

from fort_hub.services.base import FortServiceApp
from fort_hub.services.handler import bad_text, client_address, parse_networks, printable

TRUSTED = parse_networks(["127.0.0.0/8", "::1/128", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "", "203.0.113.9"),  # no proxy
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's header: ignored
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),  # the proxy says who connected
        ("10.1.2.3", "198.51.100.1, 10.0.0.7", "10.0.0.7"),  # only the hop the proxy wrote
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged left part: ignored
        ("127.0.0.1", "203.0.113.66, 10.0.0.9", "10.0.0.9"),  # a notebook forging: its own IP
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # garbage: the peer
        ("::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address_believes_only_the_trusted_proxys_hop(peer, forwarded, expected):
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_bad_text_names_the_field():
    assert bad_text({"sql": "ok", "dataset": "x"}) is None
    assert bad_text({"sql": "SELECT \ud800"}) == "sql is not valid Unicode text (a lone surrogate)"
    assert bad_text({"a": {"b": ["x", "\udfff"]}}).startswith("a.b[1] is not valid")
    assert bad_text({"dataset": "url\x00shares"}) == "dataset contains a NUL character"
    assert printable("SELECT \ud800") == "SELECT \\ud800"
    assert printable("a\x00b") == "a\\x00b"


def test_trusted_proxies_are_validated_naming_the_setting():
    c = Config()
    c.FortServiceApp.trusted_proxies = ["127.0.0.1", "proxy-public"]
    with pytest.raises(
        TraitError, match=re.escape("FortServiceApp.trusted_proxies: 'proxy-public'")
    ):
        FortServiceApp(config=c)
    with pytest.raises(ValueError, match=re.escape("'300.1.1.1'")):
        parse_networks(["300.1.1.1"])


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, True),
        (b"[" * 33 + b"]" * 33, True),
        (b"[" * 32 + b"]" * 32, False),
        (b'{"sql": "' + b"[" * 100 + b'", "x": [1, [2]]}', False),  # brackets in a string
        (b'{"a": "\\\\"}' + b"[]" * 50, False),  # an escaped backslash ends its string
        (b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),  # an escaped quote does not
    ],
)
def test_nesting_is_measured_before_parsing(raw, deep):
    """A deep body is refused before json.loads recurses (a garbage-collector finalizer run
    a thousand frames deep failed with RecursionError: a CI flake)."""
    from fort_hub.services.handler import nesting_exceeds

    assert nesting_exceeds(raw, 32) is deep


def test_the_cookie_secret_is_validated_naming_the_setting(monkeypatch):
    c = Config()
    c.FortServiceApp.cookie_secret = b"short"
    with pytest.raises(
        TraitError, match=r"cookie_secret \(\$FORT_COOKIE_SECRET\) must be at least"
    ):
        FortServiceApp(config=c)
    monkeypatch.setenv("FORT_COOKIE_SECRET", "not hex")
    with pytest.raises(TraitError, match=r"\$FORT_COOKIE_SECRET is not hex"):
        FortServiceApp().cookie_secret  # noqa: B018


@pytest.mark.parametrize(
    ("secret", "cache_seconds", "shared"),
    [("5e" * 32, 60, True), (None, 60, False), ("5e" * 32, 0, False)],
    ids=["secret set", "no secret: random, not shared", "no cache"],
)
def test_answers_are_shared_only_with_a_configured_secret_and_a_cache(
    monkeypatch, tmp_path, secret, cache_seconds, shared
):
    monkeypatch.delenv("FORT_COOKIE_SECRET", raising=False)
    if secret:
        monkeypatch.setenv("FORT_COOKIE_SECRET", secret)
    c = Config()
    c.FortSettings.store_url = f"sqlite:///{tmp_path / 'fort.sqlite'}"
    c.FortServiceApp.hub_user_cache_seconds = cache_seconds
    app = FortServiceApp(config=c)
    app.init_hub_auth()
    assert (app.hub_auth.answers is not None) == shared
    if shared:
        assert app.hub_auth.answers.secret == bytes.fromhex(secret)

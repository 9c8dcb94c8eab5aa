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
        ("10.1.2.3", "198.51.100.1, 10.0.0.7", "198.51.100.1"),  # two trusted hops
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged left part: ignored
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # garbage: the peer
        ("::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address_believes_only_trusted_hops(peer, forwarded, expected):
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_bad_text_names_the_field():
    assert bad_text({"sql": "ok", "dataset": "x"}) is None
    assert bad_text({"sql": "SELECT \ud800"}) == "sql"
    assert bad_text({"a": {"b": ["x", "\udfff"]}}) == "a.b[1]"
    assert printable("SELECT \ud800") == "SELECT \\ud800"


def test_trusted_proxies_are_validated_naming_the_setting():
    c = Config()
    c.FortServiceApp.trusted_proxies = ["127.0.0.1", "proxy-public"]
    with pytest.raises(
        TraitError, match=re.escape("FortServiceApp.trusted_proxies: 'proxy-public'")
    ):
        FortServiceApp(config=c)
    with pytest.raises(ValueError, match=re.escape("'300.1.1.1'")):
        parse_networks(["300.1.1.1"])

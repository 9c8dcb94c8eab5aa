"""The anchored validators refuse what only looks valid: a trailing newline (``$`` would match
before it) or non-ASCII letters where AWS takes ASCII."""

from __future__ import annotations

import pytest

from fort_hub.authenticators.facebook_handlers import _CODE
from fort_hub.authenticators.meta import _B64URL
from fort_hub.policy.loader import BUCKET_RE, NAME_RE, QUANTITY_RE, ROLE_ARN_RE, S3_PREFIX_RE
from fort_hub.services.groups.api import USERNAME_RE
from fort_hub.services.handler import REQUEST_ID_RE
from fort_hub.services.query.handlers import ID_RE

VALID = [
    (NAME_RE, "urls-study"),
    (ROLE_ARN_RE, "arn:aws:iam::123456789012:role/fort-urls-study"),
    (S3_PREFIX_RE, "s3://fort-data/urls/"),
    (BUCKET_RE, "fort-data"),
    (QUANTITY_RE, "4Gi"),
    (USERNAME_RE, "dave"),
    (REQUEST_ID_RE, "req-1"),
    (ID_RE, "0" * 32),
    (_CODE, "abcdefgh"),
    (_B64URL, "abc-_"),
]


@pytest.mark.parametrize(("pattern", "value"), VALID, ids=[v for _, v in VALID])
def test_valid_value_matches_but_not_with_a_trailing_newline(pattern, value):
    assert pattern.match(value)
    assert not pattern.match(value + "\n")


def test_role_arn_is_ascii_only():
    assert not ROLE_ARN_RE.match("arn:aws:iam::123456789012:role/fört")

"""#14: one interpretation of membership dates (fort_hub.policy.dates): a date is "through the
end of that day" in the policy's time zone, read the same from the policy file, the API/page
and the command line, and shown as the day that was entered (not the next one)."""

from __future__ import annotations

import datetime as dt

import pytest

from fort_hub.policy import dates, parse_policy
from fort_hub.services.groups.api import parse_expiry
from fort_hub.services.handler import ServiceError

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def policy_with(expires: str, timezone: str | None = None):
    text = "version: 1\n" + (f"timezone: {timezone}\n" if timezone else "")
    text += f"groups:\n  - name: g\n    members:\n      - {{user: carol, expires: {expires}}}\n"
    return parse_policy(text, "p.yaml")


def test_a_date_is_shown_as_the_day_entered_not_the_next():
    # the bug: 12/31/2026 showed as 2027-01-01T00:00:00.000000+00:00
    end = dates.parse_expiry("2026-12-31", UTC)
    assert end == dt.datetime(2027, 1, 1, tzinfo=UTC)  # the store keeps the first invalid instant
    assert dates.show_expiry(end, UTC) == "2026-12-31"
    assert dates.last_day(end, UTC) == dt.date(2026, 12, 31)
    assert dates.show_expiry(None, UTC) == "never"


def test_policy_file_and_api_read_a_date_identically():
    # carol's policy date 2031-12-31 showed as 2032-01-01
    for tz in ("UTC", "Europe/Oslo", "America/Los_Angeles"):
        policy = policy_with("2031-12-31", None if tz == "UTC" else tz)
        assert policy.timezone == tz
        [member] = policy.groups["g"].members
        assert member.expires == parse_expiry("2031-12-31", NOW, policy.tz)
        assert dates.show_expiry(member.expires, policy.tz) == "2031-12-31"


def test_a_quoted_date_in_the_policy_file_is_the_same_day_as_a_bare_one():
    """``expires: "2031-12-31"`` (a YAML string) ended the membership at the start of that day,
    a day before ``expires: 2031-12-31`` (a YAML date) did."""
    for tz in ("UTC", "America/Los_Angeles"):
        zone = None if tz == "UTC" else tz
        [bare] = policy_with("2031-12-31", zone).groups["g"].members
        [quoted] = policy_with('"2031-12-31"', zone).groups["g"].members
        [compact] = policy_with('"20311231"', zone).groups["g"].members
        assert compact.expires == bare.expires
        assert quoted.expires == bare.expires == parse_expiry("2031-12-31", NOW, dates.zone(tz))


def test_the_time_zone_moves_the_end_of_the_day():
    oslo = dates.zone("Europe/Oslo")
    assert dates.end_of_day(dt.date(2026, 12, 31), oslo) == dt.datetime(
        2026, 12, 31, 23, tzinfo=UTC
    )
    # a summer day ends two hours before midnight UTC; the shown day is still the one entered
    end = dates.end_of_day(dt.date(2026, 7, 1), oslo)
    assert end == dt.datetime(2026, 7, 1, 22, tzinfo=UTC)
    assert dates.show_expiry(end, oslo) == "2026-07-01"
    # the same instant read in UTC is not a day boundary: shown with its time
    assert dates.show_expiry(end, UTC) == "until 2026-07-01 22:00 UTC"


def test_membership_valid_through_the_whole_day():
    policy = policy_with("2026-12-31", "Europe/Oslo")
    last_minute = dt.datetime(2026, 12, 31, 22, 59, tzinfo=UTC)  # 23:59 in Oslo
    assert policy.effective_groups("carol", ["g"], now=last_minute) == ["g"]
    assert policy.effective_groups("carol", ["g"], now=last_minute + dt.timedelta(minutes=1)) == []


def test_a_datetime_without_offset_is_in_the_policy_zone():
    oslo = dates.zone("Europe/Oslo")
    got = dates.parse_expiry("2026-12-31T12:00", oslo)
    assert got == dt.datetime(2026, 12, 31, 11, tzinfo=UTC)
    assert dates.parse_expiry("2026-12-31T12:00+00:00", oslo) == dt.datetime(
        2026, 12, 31, 12, tzinfo=UTC
    )


@pytest.mark.parametrize("bad", ["31/12/2026", "2026-02-30", "tomorrow", "  "])
def test_api_refuses_what_is_not_a_date(bad):
    with pytest.raises(ServiceError) as info:
        parse_expiry(bad, NOW, UTC)
    assert info.value.status_code == 400 and "date like 2026-12-31" in info.value.message


def test_api_refuses_a_past_date():
    with pytest.raises(ServiceError, match="in the past"):
        parse_expiry("2026-12-01", NOW, UTC)
    assert parse_expiry("2026-12-02", NOW, UTC) == dt.datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("today", dt.datetime(2026, 12, 2, tzinfo=UTC)),
        ("yesterday", dt.datetime(2026, 12, 1, tzinfo=UTC)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("2026-11-01", dt.datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:30", dt.datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T12:30+01:00", dt.datetime(2026, 11, 1, 11, 30, tzinfo=UTC)),
    ],
)
def test_since_forms(text, expected):
    assert dates.parse_since(text, UTC, NOW) == expected


def test_since_in_a_zone_and_refused():
    oslo = dates.zone("Europe/Oslo")
    assert dates.parse_since("today", oslo, NOW) == dt.datetime(2026, 12, 1, 23, tzinfo=UTC)
    with pytest.raises(ValueError, match="since 'last tuesday' is not understood: use today"):
        dates.parse_since("last tuesday", UTC, NOW)


def test_unknown_zone_is_named():
    with pytest.raises(ValueError, match="'Mars/Olympus' is not a time zone name"):
        dates.zone("Mars/Olympus")

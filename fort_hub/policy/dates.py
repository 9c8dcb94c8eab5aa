"""Membership expiry dates: ONE interpretation for the policy file, the fort-groups API and page,
the command line and the fort store.

A date means **"valid through the end of that day" in the policy's time zone** (the policy's
top-level ``timezone``, an IANA name, default ``UTC``). The store and every decision keep the
first instant that is no longer valid (``expires``); people enter and see the *last valid day*:

>>> import datetime as dt
>>> tz = zone("UTC")
>>> end = end_of_day(dt.date(2026, 12, 31), tz)
>>> end.isoformat()
'2027-01-01T00:00:00+00:00'
>>> last_day(end, tz).isoformat()
'2026-12-31'
>>> show_expiry(end, tz)
'2026-12-31'
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

UTC = dt.UTC
Zone = dt.tzinfo
_RELATIVE = re.compile(r"^(\d{1,4})\s*([dh])\Z")


def zone(name: str) -> Zone:
    """The time zone called *name* (``UTC`` or an IANA name such as ``Europe/Oslo``);
    ValueError naming it otherwise."""
    if name in ("UTC", "utc", "Z"):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{name!r} is not a time zone name like UTC or Europe/Oslo") from None


def end_of_day(day: dt.date, tz: Zone) -> dt.datetime:
    """The first instant after *day* in *tz* (when a membership "through *day*" ends), in UTC."""
    nxt = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return nxt.astimezone(UTC)


def as_expiry(value: dt.datetime | dt.date | None, tz: Zone) -> dt.datetime | None:
    """A date -> :func:`end_of_day`; a datetime without an offset is in *tz*; None stays None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=tz)).astimezone(UTC)
    return end_of_day(value, tz)


def last_day(expires: dt.datetime, tz: Zone) -> dt.date:
    """The last day (in *tz*) on which a membership ending at *expires* is valid."""
    return (expires - dt.timedelta(microseconds=1)).astimezone(tz).date()


def is_day_end(expires: dt.datetime, tz: Zone) -> bool:
    """True when *expires* is midnight in *tz* (it was given as a date)."""
    return end_of_day(last_day(expires, tz), tz) == expires.astimezone(UTC)


def show_expiry(expires: dt.datetime | None, tz: Zone) -> str:
    """How a person sees an expiry: ``never``, the last valid day (``2026-12-31``), or, for an
    expiry given to the minute, the first instant it no longer holds (``2026-12-31 14:30 UTC``)."""
    if expires is None:
        return "never"
    if is_day_end(expires, tz):
        return last_day(expires, tz).isoformat()
    local = expires.astimezone(tz)
    return f"until {local:%Y-%m-%d %H:%M} {local.tzname() or ''}".rstrip()


def parse_expiry(value: str, tz: Zone) -> dt.datetime:
    """Text from a person or an API client: ``2026-12-31`` (through that day in *tz*) or an ISO
    datetime (without an offset: in *tz*). ValueError with a message naming the value."""
    text = value.strip()
    try:
        try:  # a date alone, in any ISO form (2026-12-31, 20261231): through that whole day
            return end_of_day(dt.date.fromisoformat(text), tz)
        except ValueError:
            return as_expiry(dt.datetime.fromisoformat(text), tz)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{text[:40]!r} is not a date like 2026-12-31 or an ISO date-time (years 1-9999)"
        ) from None


def parse_since(value: str, tz: Zone, now: dt.datetime) -> dt.datetime:
    """The start of a time window: ``today``, ``yesterday``, ``7d`` / ``24h`` (that long ago),
    a date (its start in *tz*) or an ISO datetime (without an offset: in *tz*). ValueError with a
    message listing the accepted forms."""
    text = value.strip().lower()
    local_today = now.astimezone(tz).date()
    day = {"today": local_today, "yesterday": local_today - dt.timedelta(days=1)}.get(text)
    if day is not None:
        return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)
    rel = _RELATIVE.match(text)
    if rel:
        n, unit = int(rel.group(1)), rel.group(2)
        return now - (dt.timedelta(days=n) if unit == "d" else dt.timedelta(hours=n))
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)
        return as_expiry(dt.datetime.fromisoformat(value.strip()), tz)
    except (ValueError, OverflowError):
        raise ValueError(
            f"since {value.strip()[:40]!r} is not understood: use today, yesterday, 7d, 24h, a "
            "date like 2026-11-01 or a date-time like 2026-11-01T12:00"
        ) from None


__all__ = [
    "UTC", "as_expiry", "end_of_day", "is_day_end", "last_day", "parse_expiry", "parse_since",
    "show_expiry", "zone",
]  # fmt: skip

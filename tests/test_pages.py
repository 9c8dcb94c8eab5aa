"""The page layer's pure parts: how times, dates, expiries and sizes are written."""

from __future__ import annotations

import datetime as dt

from fort_hub.services.pages import (
    FORT_TEMPLATES,
    HUB_TEMPLATES,
    FortPages,
    date_tag,
    expiry_tag,
    human_bytes,
    last_day,
    number,
    time_tag,
)

UTC = dt.UTC


def test_time_is_a_time_element_with_a_readable_utc_fallback():
    t = dt.datetime(2026, 12, 2, 6, 5, 9, 123456, tzinfo=UTC)
    assert str(time_tag(t)) == (
        '<time datetime="2026-12-02T06:05:09.123456+00:00" data-fort="time">'
        "2026-12-02 06:05 UTC</time>"
    )
    assert str(time_tag(None, "never")) == "never"


def test_a_stored_iso_string_is_read_as_utc():
    assert str(time_tag("2026-12-02T07:05:00+01:00")).endswith(">2026-12-02 06:05 UTC</time>")


def test_expiry_at_midnight_reads_as_through_the_day_before():
    """The bug of the issue: 12/31 shown as 2027-01-01T00:00:00.000000+00:00."""
    end = dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert last_day(end) == dt.date(2026, 12, 31)
    html = str(expiry_tag(end))
    assert html.startswith("through <time")
    assert ">2026-12-31</time>" in html
    assert "2027-01-01T00:00:00" not in html.split(">", 1)[1]  # only in the attribute
    assert str(expiry_tag(None)) == "no expiry"


def test_expiry_during_a_day_is_that_day():
    assert last_day(dt.datetime(2026, 12, 31, 12, tzinfo=UTC)) == dt.date(2026, 12, 31)


def test_date_of_a_date_and_of_a_datetime():
    assert str(date_tag(dt.date(2026, 12, 31))) == (
        '<time datetime="2026-12-31" data-fort="date">2026-12-31</time>'
    )
    assert "2026-12-31</time>" in str(date_tag("2026-12-31T10:00:00+00:00"))


def test_values_are_escaped():
    assert "<b>" not in str(expiry_tag(None, "<b>x</b>"))


def test_bytes_for_people():
    assert [human_bytes(v) for v in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 bytes",
        "1023 bytes",
        "1.5 KiB",
        "5.0 GiB",
    ]
    assert human_bytes(None) == ""


def test_fort_page_extends_jupyterhubs_page(tmp_path):
    """The shared page template is JupyterHub's page.html with fort's main block."""
    env = FortPages().environment([str(tmp_path)])
    (tmp_path / "mine.html").write_text(
        '{% extends "fort-page.html" %}{% block fort_main %}<h1>Mine</h1>{% endblock %}'
    )
    html = env.get_template("mine.html").render(
        static_url=lambda p, include_version=True: "/hub/static/" + p,
        base_url="/hub/",
        service_name="fort-query",
        title="Mine",
        user=None,
    )
    assert 'href="/hub/static/css/style.min.css"' in html
    assert 'id="dark-theme-toggle"' in html
    assert '<main id="fort-main"' in html and "<h1>Mine</h1>" in html
    assert "<title>Mine · fort</title>" in html
    assert env.loader.searchpath == [str(tmp_path), FORT_TEMPLATES, HUB_TEMPLATES]


def test_numbers_for_people():
    assert [number(v) for v in (4963984.0, 196, 0.25, None, 1_000_000)] == [
        "4,963,984",
        "196",
        "0.25",
        "",
        "1,000,000",
    ]

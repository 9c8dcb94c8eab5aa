"""The page layer's pure parts: how times, dates, expiries and sizes are written."""

from __future__ import annotations

import datetime as dt

from fort_hub.policy import dates
from fort_hub.services.pages import (
    FORT_TEMPLATES,
    HUB_TEMPLATES,
    FortPages,
    date_tag,
    expiry_tag,
    human_bytes,
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
    assert dates.last_day(end, UTC) == dt.date(2026, 12, 31)
    html = str(expiry_tag(end))
    assert html.startswith("through <time")
    assert ">2026-12-31</time>" in html
    assert "2027-01-01T00:00:00" not in html.split(">", 1)[1]  # only in the attribute
    assert str(expiry_tag(None)) == "no expiry"


def test_expiry_reads_in_the_policys_time_zone():
    """A policy in New York: "through 2026-12-31" ends at 05:00 UTC on Jan 1, and My access
    shows the day the admin entered, as the admin page does."""
    ny = dates.zone("America/New_York")
    end = dates.end_of_day(dt.date(2026, 12, 31), ny)
    assert ">2026-12-31</time>" in str(expiry_tag(end, tz=ny))
    assert ">2027-01-01</time>" in str(expiry_tag(end))  # read in UTC it is another day


def test_expiry_during_a_day_is_that_day():
    assert dates.last_day(dt.datetime(2026, 12, 31, 12, tzinfo=UTC), UTC) == dt.date(2026, 12, 31)


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


class _Service:
    def __init__(self, name: str, info: dict):
        self.name, self.href, self.info = name, f"/services/{name}/", info


def _hub_menu(scopes: dict) -> str:
    """The hub's Services menu rendered with fort's page.html over JupyterHub's templates,
    loaded the way JupyterHub loads them (``templates/`` names the originals)."""
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

    from fort_hub.deploy import HUB_TEMPLATES as FORT_HUB_TEMPLATES
    from fort_hub.deploy import MENU

    env = Environment(
        loader=ChoiceLoader(
            [
                PrefixLoader({"templates": FileSystemLoader([HUB_TEMPLATES])}, "/"),
                FileSystemLoader([FORT_HUB_TEMPLATES, HUB_TEMPLATES]),
            ]
        ),
        autoescape=True,
    )
    user = type("U", (), {"name": "alice", "json_escaped_name": "alice"})()
    services = [_Service(n, {"fort": True, **MENU[n]}) for n in MENU]
    services.append(_Service("other", {}))
    html = env.get_template("page.html").render(
        static_url=lambda p, include_version=True: p,
        base_url="/hub/",
        user=user,
        services=services,
        parsed_scopes=scopes,
        no_spawner_check=True,
    )
    return html[html.index('class="dropdown-menu"') :]


def test_hub_menu_shows_my_access_to_researchers_and_fort_groups_to_admins():
    researcher = _hub_menu({"self": {}})
    assert ">My access</a>" in researcher and ">other</a>" in researcher
    assert "fort-groups" not in researcher
    admin = _hub_menu({"custom:fort-groups:admin": {}})
    assert ">fort-groups (admin)</a>" in admin and ">My access</a>" in admin


def test_services_snippet_adds_forts_hub_templates_after_the_deployments(monkeypatch):
    """fort's page.html (the Services menu) is found after a deployment's own templates (which
    win) and before JupyterHub's; running the snippet twice adds it once."""
    from traitlets.config import Config

    from fort_hub import deploy

    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    c = Config()
    c.JupyterHub.template_paths = ["/etc/jupyterhub/templates"]
    deploy.configure_services(c)
    deploy.configure_services(c)
    assert c.JupyterHub.template_paths == ["/etc/jupyterhub/templates", deploy.HUB_TEMPLATES]
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["fort-query"]["display"] is True
    assert services["fort-query"]["info"]["menu_label"] == "My access"
    assert services["fort-groups"]["info"]["menu_scope"] == "custom:fort-groups:admin"
    assert services["fort-credentials"]["display"] is False

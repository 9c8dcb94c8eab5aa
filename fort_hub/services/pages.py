"""The page layer shared by the fort services: pages in JupyterHub's own look.

Every fort page is a Jinja2 template that extends JupyterHub's ``page.html`` (the hub's
navigation bar, Bootstrap, dark mode toggle and user menu) and loads the hub's static assets
from ``<hub prefix>static/`` (JupyterHub serves them to anyone), so a service page looks like
part of the hub. A handler renders one with :meth:`PageMixin.render_page`::

    class MyPage(FortPage):
        async def get(self):
            self.render_page("mine.html", title="Mine", rows=[...])

and the template, in the service's own ``templates/`` folder::

    {% extends "fort-page.html" %}
    {% block fort_main %}<h1>{{ title }}</h1>{{ rows[0].expires | fort_date }}{% endblock %}

Times are written as ``<time datetime="...">`` elements (filters ``fort_time``, ``fort_date``,
``fort_expiry``) with a readable UTC fallback; a small script shows them in the viewer's time
zone. Errors of pages render through ``fort-error.html``.

Service roots: :class:`ServiceRoot` answers a browser (``Accept: text/html``) with a page and a
program (no HTML asked for: a token client, ``Accept: application/json``, ``curl``) with a JSON
index (name, version, links), so no service root is a 404 (JupyterHub's health check of a
service gets the index).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import TYPE_CHECKING, Any

import jinja2
from jupyterhub._data import DATA_FILES_PATH
from markupsafe import Markup, escape
from traitlets import List, Unicode
from traitlets.config import Configurable

from .. import __version__
from .. import scopes as S
from ..policy import dates
from .handler import FortPageHandler

if TYPE_CHECKING:
    from .base import FortServiceApp

#: fort's shared page templates (fort-page.html, fort-error.html, ...)
FORT_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
#: JupyterHub's own templates (page.html, error.html)
HUB_TEMPLATES = os.path.join(DATA_FILES_PATH, "templates")


#: the heading of an error page, by status
ERROR_HEADINGS = {
    401: "Please sign in",
    403: "This is not open to you",
    404: "There is no such page",
    503: "Unavailable just now",
}


class FortPages(Configurable):
    """How fort service pages find JupyterHub's look (templates and static files)."""

    hub_template_paths = List(
        Unicode(),
        help="""Extra folders searched for JupyterHub templates before JupyterHub's own, e.g.
        the hub's `c.JupyterHub.template_paths` when the hub's `page.html` is customized, so the
        services' pages carry the same customization.

            c.FortPages.hub_template_paths = ["/etc/jupyterhub/templates"]
        """,
    ).tag(config=True)

    hub_static_url = Unicode(
        "",
        help="""URL path of JupyterHub's static files (CSS, Bootstrap, icons). Defaults to
        `<hub prefix>static/`, which the hub serves to anyone.

            c.FortPages.hub_static_url = "/hub/static/"
        """,
    ).tag(config=True)

    support_contact = Unicode(
        "",
        help="""Whom researchers ask for access, shown on the pages (an email address or a
        sentence). Defaults to `$FORT_SUPPORT_CONTACT`, else "your hub's administrators".

            c.FortPages.support_contact = "fort-support@example.org"
        """,
    ).tag(config=True)

    def contact(self) -> str:
        return (
            self.support_contact
            or os.environ.get("FORT_SUPPORT_CONTACT", "")
            or "your hub's administrators"
        )

    def environment(self, service_dirs: list[str]) -> jinja2.Environment:
        """The Jinja2 environment: the service's templates, fort's shared ones, then the hub's."""
        dirs = [*service_dirs, FORT_TEMPLATES, *self.hub_template_paths, HUB_TEMPLATES]
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([d for d in dirs if d]),
            autoescape=True,
        )
        env.filters.update(fort_time=time_tag, fort_date=date_tag, fort_expiry=expiry_tag)
        env.filters.update(fort_bytes=human_bytes, fort_number=number)
        return env


# ----- formatting (pure; the script in fort-page.html localizes <time> elements) --------------


def _as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def time_tag(value: dt.datetime | str | None, empty: str = "") -> Markup:
    """``<time datetime=ISO data-fort="time">2026-12-31 14:05 UTC</time>`` (shown in the
    viewer's time zone by the page script)."""
    t = _as_utc(value)
    if t is None:
        return escape(empty)
    text = t.strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}" data-fort="time">{}</time>').format(t.isoformat(), text)


def date_tag(value: dt.datetime | dt.date | str | None, empty: str = "") -> Markup:
    """A calendar date: ``<time datetime="2026-12-31">2026-12-31</time>``."""
    if value in (None, ""):
        return escape(empty)
    d = value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else None
    if d is None:
        d = _as_utc(value).date()
    return Markup('<time datetime="{0}" data-fort="date">{0}</time>').format(d.isoformat())


def expiry_tag(
    value: dt.datetime | str | None, never: str = "no expiry", tz: dt.tzinfo | None = None
) -> Markup:
    """An expiry as a person reads it: "through 2026-12-31", the last day it covers in the
    policy's time zone *tz* (default UTC; see :mod:`fort_hub.policy.dates`), with the exact
    instant in the ``datetime`` attribute and the tooltip."""
    t = _as_utc(value)
    if t is None:
        return escape(never)
    return Markup(
        'through <time datetime="{}" data-fort="expiry" title="ends {}">{}</time>'
    ).format(
        t.isoformat(), t.strftime("%Y-%m-%d %H:%M UTC"), dates.last_day(t, tz or dt.UTC).isoformat()
    )


def human_bytes(value: int | float | None) -> str:
    """1536 -> "1.5 KiB"."""
    if value is None:
        return ""
    n = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - unreachable


def number(value: int | float | None) -> str:
    """4963984.0 -> "4,963,984"; 0.25 -> "0.25" (whole numbers without a fraction)."""
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    return f"{int(value):,}"


class _User:
    """What JupyterHub's page.html reads of ``user``."""

    def __init__(self, name: str):
        self.name = name
        self.json_escaped_name = json.dumps(name)[1:-1]


class _MenuEntry:
    def __init__(self, name: str, href: str):
        self.name, self.href = name, href


class PageMixin:
    """Rendering fort pages in the hub's look (mixed into :class:`FortPageHandler`)."""

    #: the ``<title>``, before " - fort"
    page_title = "fort"

    @property
    def app(self) -> FortServiceApp:  # pragma: no cover - FortHandler's
        return self.settings["fort_app"]

    def page_env(self) -> jinja2.Environment:
        env = self.settings.get("fort_page_env")
        if env is None:
            dirs = self.settings.get("template_path")
            env = self.app.pages.environment([dirs] if isinstance(dirs, str) else list(dirs or []))
            self.settings["fort_page_env"] = env
        return env

    async def menu(self) -> list[_MenuEntry]:
        """The Services menu of fort pages: "My access" for everyone, fort-groups for
        current fort admins (decided from the store now)."""
        base = self.hub_auth.base_url
        entries = self.base_menu()
        user = getattr(self, "_hub_auth_user_cache", None)
        if user and user.get("kind", "user") == "user":
            try:
                admin = await self.app.access.ais_admin(user["name"])
            except Exception:  # the menu never fails a page; the page's own data may
                admin = False
            if admin:
                entries.append(
                    _MenuEntry("fort-groups (admin)", f"{base}services/{S.GROUPS_SERVICE}/")
                )
        return entries

    def base_menu(self) -> list[_MenuEntry]:
        """The menu entries every signed-in user gets ("My access")."""
        return [_MenuEntry("My access", f"{self.hub_auth.base_url}services/{S.QUERY_SERVICE}/")]

    def page_namespace(self, menu: list | None = None) -> dict[str, Any]:
        """What JupyterHub's page.html expects, pointing at the hub."""
        hub = self.hub_auth.hub_prefix
        static = self.app.pages.hub_static_url or f"{hub}static/"
        user = getattr(self, "_hub_auth_user_cache", None)

        def static_url(path: str, include_version: bool = True) -> str:
            return static.rstrip("/") + "/" + path.lstrip("/")

        return {
            "base_url": hub,
            "prefix": self.hub_auth.base_url,
            "user": _User(user["name"]) if user else None,
            "login_url": self.app.service_url("login"),
            "logout_url": f"{hub}logout",
            "static_url": static_url,
            "version_hash": "",
            "services": menu or [],
            "parsed_scopes": set(),
            "admin_access": False,
            "no_spawner_check": True,
            "xsrf_token": self.xsrf_token.decode("ascii"),
            "xsrf_form_html": Markup(self.xsrf_form_html()),  # noqa: S704 - tornado escapes it
            "service_name": self.app.service_name,
            "service_prefix": self.app.service_prefix,
            "support_contact": self.app.pages.contact(),
            "fort_version": __version__,
        }

    async def render_page(self, template: str, **ns: Any) -> None:
        """Render *template* (which extends ``fort-page.html``) and finish the request."""
        full = self.page_namespace(await self.menu())
        full.update(ns)
        html = self.page_env().get_template(template).render(**full)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Page errors in the hub's look (APIs keep the JSON errors of FortHandler)."""
        if self.is_api:
            return super().write_error(status_code, **kwargs)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = self.describe_error(status_code, exc)
        try:
            ns = self.page_namespace(self.base_menu())
            ns.update(
                status=status,
                heading=ERROR_HEADINGS.get(status, "This did not work"),
                message=message,
                request_id=self.request_id,
            )
            html = self.page_env().get_template("fort-error.html").render(**ns)
        except Exception:  # never fail while failing: the plain page of FortHandler
            self.log.exception("[%s] cannot render the error page", self.request_id)
            return super().write_error(status_code, **kwargs)
        self.set_status(status)
        for name, value in (getattr(exc, "headers", None) or {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def scope_refusal(self, user: dict) -> str:
        return (
            f"This page is for fort administrators: {user['name']} lacks the scope "
            f"{' or '.join(self.required_scopes)}. What you may use is on your “My access” page."
        )

    def wants_json(self) -> bool:
        """A program, not a browser: it does not ask for HTML (browsers' navigations do;
        ``curl``, JupyterHub's health check, the API clients and JSON clients do not)."""
        return "text/html" not in self.request.headers.get("Accept", "")


class FortPage(PageMixin, FortPageHandler):
    """A browser page of a fort service, in the hub's look."""


class ServiceRoot(FortPage):
    """``<prefix>``: a page for a browser, a JSON index for an API client (no credentials
    needed for the index: it holds no data). Subclasses implement :meth:`page`."""

    #: (rel, path relative to the service prefix) listed in the JSON index
    links: tuple[tuple[str, str], ...] = ()

    async def prepare(self) -> None:
        if self.request.method in ("GET", "HEAD") and self.wants_json():
            self.is_api = True
            self.check_query_params()
            self.write_json(self.index())
            return
        await super().prepare()

    def index(self) -> dict[str, Any]:
        app = self.app
        return {
            "name": app.service_name,
            "description": app.description,
            "version": __version__,
            "links": {rel: app.service_url(*path.split("/")) for rel, path in self.links},
        }

    async def get(self) -> None:
        await self.page()

    async def page(self) -> None:
        raise NotImplementedError


__all__ = [
    "FORT_TEMPLATES",
    "FortPage",
    "FortPages",
    "PageMixin",
    "ServiceRoot",
    "date_tag",
    "expiry_tag",
    "human_bytes",
    "number",
    "time_tag",
]

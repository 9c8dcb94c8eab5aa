"""The pages and roots of the three services behind a real hub (requests, dummy login): each
root answers a browser with a page in the hub's look and an API client with a JSON index; a
browser opening a read-only JSON endpoint is signed in through the hub instead of a 401; "My
access" shows what the store and policy say now. The browser walk is tests/test_pages_browser.py.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
import requests

from fort_hub import scopes
from fort_hub.store.memberships import Memberships
from tests.fortstack import call, services_behind_hub, store_of, url
from tests.fortsvc import auth

pytestmark = pytest.mark.hub
UTC = dt.UTC
SERVICES = (scopes.GROUPS_SERVICE, scopes.CREDENTIALS_SERVICE, scopes.QUERY_SERVICE)
HTML = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from services_behind_hub(tmp_path_factory.mktemp("pages"))


def signed_in(env, user: str) -> requests.Session:
    """A browser-like session signed in to the hub (dummy login) as *user*."""
    hub = env["hub"]
    s = requests.Session()
    s.headers.update(HTML)
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(f"{hub.url}/hub/login?next=/hub/home", timeout=30,
               data={"username": user, "password": "x", "_xsrf": s.cookies.get("_xsrf")})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    return s


def text_of(html: str) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).replace("&#39;", "'").split())


@pytest.mark.parametrize("service", SERVICES)
def test_root_gives_an_api_client_a_json_index(env, service):
    """No root is a 404 (it was for fort-query and fort-credentials, and JupyterHub's health
    check of them logged a 404 warning every minute): name, version, links."""
    for headers in ({"Accept": "application/json"}, {}, {**HTML, **auth(env["tokens"]["alice"])}):
        r = requests.get(url(env, service, ""), headers=headers, timeout=30)
        assert r.status_code == 200, r.text[:500]
        index = r.json()
        assert index["name"] == service and index["version"]
        assert all(v.startswith(f"/services/{service}/api/v1/") for v in index["links"].values())
    if service == scopes.QUERY_SERVICE:
        openapi = requests.get(env["hub"].url + index["links"]["openapi"], timeout=30)
        assert openapi.status_code == 200 and openapi.json()["openapi"]


@pytest.mark.parametrize("service", [scopes.CREDENTIALS_SERVICE, scopes.QUERY_SERVICE])
def test_root_gives_a_browser_a_page_in_the_hubs_look(env, service):
    """(fort-groups' root is the admin page: tests/test_groups_admin_page.py, and the refusal
    page below.)"""
    s = signed_in(env, "admin")
    r = s.get(url(env, service, ""), timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("text/html")
    assert 'href="/hub/static/css/style.min.css"' in r.text  # the hub's own stylesheet
    assert 'id="dark-theme-toggle"' in r.text and "admin" in text_of(r.text)  # the user menu
    css = s.get(env["hub"].url + "/hub/static/css/style.min.css", timeout=30)
    assert css.status_code == 200


def test_a_browser_opening_a_json_endpoint_is_signed_in_not_refused(env):
    """#14: a signed-in browser got 401 "send 'Authorization: token'" from the JSON GETs."""
    s = signed_in(env, "alice")
    r = s.get(url(env, scopes.QUERY_SERVICE, "api/v1/usage"), timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert r.url.endswith("/services/fort-query/api/v1/usage")
    assert r.json()["user"] == "alice"
    r = s.get(url(env, scopes.GROUPS_SERVICE, "api/v1/me"), timeout=30)
    assert r.status_code == 200 and r.json()["user"] == "alice"


def test_an_api_client_without_credentials_still_gets_401(env):
    r = requests.get(url(env, scopes.QUERY_SERVICE, "api/v1/usage"), timeout=30)
    assert r.status_code == 401 and "Authorization" in r.json()["error"]["message"]


def test_mutations_from_a_browser_session_still_need_xsrf(env):
    s = signed_in(env, "alice")
    s.get(url(env, scopes.QUERY_SERVICE, ""), timeout=30)  # the service's OAuth cookie
    r = s.post(url(env, scopes.QUERY_SERVICE, "api/v1/queries"), timeout=30,
               json={"sql": "SELECT 1", "dataset": "url_shares"},
               headers={"Accept": "application/json", "Sec-Fetch-Mode": "cors"})  # fmt: skip
    assert r.status_code in (401, 403), r.text[:300]
    assert "xsrf" in r.text.lower() or r.status_code == 401


def test_my_access_shows_alices_groups_data_quota_and_queries(env):
    r = call(env, scopes.QUERY_SERVICE, "POST", "api/v1/queries", user="alice",
             body={"sql": "SELECT country, count(*) AS n FROM url_shares GROUP BY country",
                   "dataset": "url_shares"})  # fmt: skip
    assert r.status_code == 202, r.text
    qid = r.json()["id"]
    done = call(env, scopes.QUERY_SERVICE, "GET", f"api/v1/queries/{qid}?wait=30", user="alice")
    assert done.json()["state"] == "succeeded", done.text
    s = signed_in(env, "alice")
    page = s.get(url(env, scopes.QUERY_SERVICE, ""), timeout=60)
    assert page.status_code == 200, page.text[:1000]
    text = text_of(page.text)
    assert "My access" in text and "What alice may do on this hub now" in text
    assert "urls-study" in text
    assert "url_shares" in text and "country" in text  # a table and one of its columns
    assert "Queries today: 1 of" in text
    assert f'data-query="{qid}"' in page.text and "succeeded" in text
    assert f"api/v1/queries/{qid}/results?format=csv" in page.text
    assert "fort-groups (admin)" not in text  # not an admin
    download = s.get(url(env, scopes.QUERY_SERVICE, f"api/v1/queries/{qid}/results?format=csv"),
                     timeout=30)  # fmt: skip
    assert download.status_code == 200 and download.text.startswith('"country","n"')


def test_my_access_reads_the_store_at_request_time(env):
    """A membership added in the store shows on the next page view (no cache)."""
    s = signed_in(env, "dave")
    before = text_of(s.get(url(env, scopes.QUERY_SERVICE, ""), timeout=30).text)
    assert "not a member of any study group" in before
    members = Memberships(store_of(env))
    until = dt.datetime(2031, 1, 1, tzinfo=UTC)
    members.upsert("ads-study", "dave", expires=until, source="api")
    try:
        after = s.get(url(env, scopes.QUERY_SERVICE, ""), timeout=30).text
        assert "ads-study" in text_of(after)
        assert "through 2030-12-31" in text_of(after)  # the last day, not 2031-01-01T00:00
        assert 'datetime="2031-01-01T00:00:00+00:00"' in after
    finally:
        members.remove("ads-study", "dave")


def test_admin_sees_the_way_to_fort_groups(env):
    text = text_of(signed_in(env, "admin").get(url(env, scopes.QUERY_SERVICE, ""), timeout=30).text)
    assert "manage memberships in fort-groups" in text and "fort-groups (admin)" in text


def test_a_researcher_on_the_admin_page_gets_a_page_not_bare_html(env):
    """#14: fort-groups opened by a researcher was an unstyled 403 naming a scope."""
    r = signed_in(env, "alice").get(url(env, scopes.GROUPS_SERVICE, ""), timeout=30)
    assert r.status_code == 403
    assert 'href="/hub/static/css/style.min.css"' in r.text
    text = text_of(r.text)
    assert "This page is for fort administrators: alice lacks the scope" in text
    assert "My access" in text and "request id" in text


def test_credentials_root_names_the_roles_alice_may_use(env):
    text = text_of(signed_in(env, "alice").get(url(env, scopes.CREDENTIALS_SERVICE, ""),
                                               timeout=30).text)  # fmt: skip
    assert "AWS credentials" in text and "fort-urls-study" in text

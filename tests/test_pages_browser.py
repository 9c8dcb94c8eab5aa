"""The fort pages in a real browser on the demo (playwright + Debian chromium): alice finds "My
access" in the hub's Services menu and reads her access there; carol's policy expiry reads as
the day the policy names; dave gets one no-access page with the ways on, and a reload of the
sign-in link leads somewhere. Every page is checked with axe-core (no serious or critical
violations) and photographed for the docs (tests/browser.py: FORT_DOCS_SCREENSHOTS=1 writes
docs/images/). The browser runs in New York time, so times shown are the viewer's, not UTC."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.browser import assert_accessible, keep_on_failure, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]
NEW_YORK = ZoneInfo("America/New_York")


def sign_in(page, url: str, who: str) -> None:
    page.goto(url + "/hub/login")
    page.get_by_text("Sign in with Facebook").click()
    page.wait_for_url("**/dialog/oauth**")
    page.get_by_role("button", name=f"Continue as {who}").click()


def visible_text(page) -> str:
    return " ".join(page.locator("body").inner_text().replace("\u202f", " ").split())


def run_query(demo, user: str, sql: str, dataset: str, state: str = "succeeded") -> dict:
    """Submit a query as *user* with a token of their own (as a notebook would), wait for it
    to end in *state*."""
    s = demo.login(user)
    r = s.post(f"{demo.url}/hub/api/users/{user}/tokens", headers=demo.xsrf(s), timeout=30,
               json={"note": "browser test", "scopes": ["access:services!service=fort-query",
                                                         "custom:fort-query:use"]})  # fmt: skip
    assert r.status_code == 201, r.text
    api = f"{demo.url}/services/fort-query/api/v1/queries"
    headers = {"Authorization": f"token {r.json()['token']}"}
    q = requests.post(api, json={"sql": sql, "dataset": dataset}, headers=headers, timeout=30)
    assert q.status_code == 202, q.text
    done = requests.get(f"{api}/{q.json()['id']}?wait=60", headers=headers, timeout=90).json()
    assert done["state"] == state, done
    return done


def new_york(iso: str) -> str:
    """How en-US Intl (dateStyle medium, timeStyle short) writes *iso* in New York."""
    t = dt.datetime.fromisoformat(iso).astimezone(NEW_YORK)
    hour = t.hour % 12 or 12
    return f"{t:%b} {t.day}, {t.year}, {hour}:{t:%M} {'AM' if t.hour < 12 else 'PM'}"


def test_alice_finds_my_access_in_the_menu_and_reads_her_access(page, fort_demo):
    query = run_query(fort_demo, "alice", "SELECT country, sum(shares) AS shares FROM url_shares "
                      "GROUP BY country ORDER BY country", "url_shares")  # fmt: skip
    # a failed query's message is shown in red: it must stay readable (axe color-contrast)
    run_query(fort_demo, "alice", "SELECT age FROM url_shares", "url_shares", state="failed")
    with keep_on_failure(page, "my-access-alice"):
        sign_in(page, fort_demo.url, "Alice Archer")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/hub/home")
        page.get_by_role("button", name="Services").click()
        menu = page.locator(".dropdown-menu").inner_text()
        assert "My access" in menu and "fort-groups" not in menu  # the admin page is not hers
        screenshot(page, "services-menu", full_page=False)
        page.get_by_role("link", name="My access").click()
        page.wait_for_url("**/services/fort-query/")
        text = visible_text(page)
        assert page.get_by_role("heading", name="My access", level=1).is_visible()
        assert "What alice may do on this hub now" in text
        assert "urls-study" in text and "no expiry" in text  # the policy lists her without end
        assert "Table url_shares.url_shares" in text
        assert "age_bracket" in text  # the columns, so the first natural query finds them
        assert "gaussian, variance 196 " in text  # shares' declared noise
        assert "URLs study, large" in text and "GPU" not in text  # her profiles only
        assert re.search(r"Queries today: \d+ of \d+", text), text
        row = page.locator(f'tr[data-query="{query["id"]}"]')
        assert "succeeded" in row.inner_text() and "download CSV" in row.inner_text()
        shown = " ".join(row.locator("time").first.inner_text().replace("\u202f", " ").split())
        assert shown == new_york(query["submitted"])  # the viewer's time zone, not UTC
        assert "+00:00" not in text and "T00:00:00" not in text  # no raw timestamps
        assert "Who to ask" in text and "admin@example.org" in text
        assert_accessible(page)
        screenshot(page, "my-access")
        page.emulate_media(color_scheme="dark")  # the hub's dark mode follows the system's
        page.reload()
        assert page.locator("html").get_attribute("data-bs-theme") == "dark"
        assert_accessible(page)
        screenshot(page, "my-access-dark", full_page=False)
        page.emulate_media(color_scheme="light")
        page.reload()
        with page.expect_download() as dl:
            row.get_by_role("link", name=re.compile("download CSV")).click()
        assert dl.value.path().read_text().splitlines()[0] == '"country","shares"'


def test_carols_policy_expiry_reads_as_the_day_the_policy_names(page, fort_demo):
    """#14: carol's policy date 2031-12-31 was shown as 2032-01-01."""
    with keep_on_failure(page, "my-access-carol"):
        sign_in(page, fort_demo.url, "Carol Chen")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/services/fort-query/")
        row = page.locator('tr[data-group="urls-study"]').inner_text()
        assert "through Dec 31, 2031" in row, row
        assert "2032" not in row


def test_admin_finds_fort_groups_in_the_menu(page, fort_demo):
    with keep_on_failure(page, "menu-admin"):
        sign_in(page, fort_demo.url, "Ada Admin")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/hub/home")
        page.get_by_role("button", name="Services").click()
        menu = page.locator(".dropdown-menu").inner_text()
        assert "My access" in menu and "fort-groups (admin)" in menu


def test_alice_on_the_admin_page_gets_a_page_of_the_hub(page, fort_demo):
    """#14: her only Services link opened an unstyled 403 naming a scope."""
    with keep_on_failure(page, "groups-refused-alice"):
        sign_in(page, fort_demo.url, "Alice Archer")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/services/fort-groups/")
        text = visible_text(page)
        assert page.get_by_role("heading", name="This is not open to you").is_visible()
        assert "This page is for fort administrators: alice lacks the scope" in text
        assert page.get_by_role("link", name="My access").first.is_visible()
        assert page.locator("#dark-theme-toggle").is_visible()  # the hub's navigation bar
        assert_accessible(page)
        screenshot(page, "service-error")


def test_alice_sees_her_aws_roles(page, fort_demo):
    with keep_on_failure(page, "credentials-alice"):
        sign_in(page, fort_demo.url, "Alice Archer")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/services/fort-credentials/")
        text = visible_text(page)
        assert "AWS credentials" in text and "fort-urls-study" in text
        assert_accessible(page)
        screenshot(page, "credentials")


def test_a_json_endpoint_opened_in_the_browser_answers_json(page, fort_demo):
    """#14: the APIs answered a signed-in browser with 401 "send 'Authorization: token'"."""
    with keep_on_failure(page, "usage-json-alice"):
        sign_in(page, fort_demo.url, "Alice Archer")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/services/fort-query/api/v1/usage")
        assert '"user": "alice"' in page.locator("body").inner_text()


def test_dave_gets_one_no_access_page_with_the_ways_on(page, fort_demo):
    with keep_on_failure(page, "no-access-dave"):
        sign_in(page, fort_demo.url, "Dave Diaz")
        page.wait_for_selector("#fort-login-refused")
        text = visible_text(page)
        assert text.count("no study membership") == 1, text  # once, not twice
        assert "403 :" not in text
        assert page.get_by_role("heading", name="No access yet").is_visible()
        assert "You are signed in with Facebook as dave, but you have no study" in text
        assert text.count("To request access, contact the demo's admin (admin@example.org)") == 1
        assert page.get_by_role("link", name="Sign out").is_visible()
        assert_accessible(page)
        screenshot(page, "no-access")
        page.reload()  # the sign-in link again: no dead end
        text = visible_text(page)
        assert "This sign-in link has expired" in text and "OAuth state missing" not in text
        assert_accessible(page)
        screenshot(page, "sign-in-link-expired")
        page.get_by_role("link", name="Sign in again").click()
        page.wait_for_url("**/dialog/oauth**")  # the way back in

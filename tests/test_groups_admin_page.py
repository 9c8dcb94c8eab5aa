"""The fort-groups admin page in real Chromium: hub login (dummy authenticator), OAuth into the
service, add / extend / remove a membership, audit filters; CSRF enforced on the forms."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from fort_hub import scopes
from fort_hub.services.groups import GroupsService
from fort_hub.store.memberships import Memberships
from tests.conftest import EXAMPLE_POLICY, IN_CI
from tests.forged_audit import FORGED_REASON, forge_row, legacy_audit_table
from tests.fortsvc import ServiceSlot, ServiceThread, hub_config, make_users
from tests.hubproc import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (CI must run the browser tests)")
        pytest.skip(f"{CHROMIUM} is missing")
    work = tmp_path_factory.mktemp("groupspage")
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    slot = ServiceSlot(
        scopes.GROUPS_SERVICE,
        oauth_scopes=[scopes.GROUPS_ADMIN, scopes.GROUPS_AUDIT, scopes.GROUPS_READ],
    )
    hub = RunningHub(work / "hub")
    # a membership manager: a current fort admin (store) whose hub scopes let him change
    # memberships but not read the audit log (the fort-admin role goes to 'admin' by name here,
    # not to the admins group, so the manager's admins membership gives him no hub scope)
    manager_role = (
        "c.JupyterHub.load_roles.append({'name': 'membership-manager', 'users': ['manager'], "
        "'scopes': [scopes.GROUPS_ADMIN, scopes.access(scopes.GROUPS_SERVICE)]})\n"
        "for r in c.JupyterHub.load_roles:\n"
        "    if r['name'] == 'fort-admin':\n"
        "        r.pop('groups', None); r['users'] = ['admin']"
    )
    hub.extra_config = hub_config([slot], hub.url, extra=manager_role)
    cfg = slot.config(hub, policy, f"sqlite:///{work / 'fort.sqlite'}")
    cfg.GroupsService.reconcile_interval = 3600
    app = GroupsService(config=cfg)
    app.initialize([])
    svc = ServiceThread(app).start()  # before the hub, which waits for its services
    try:
        hub.start()
        make_users(hub, "alice", "bob", "carol", "dave", "admin", "manager")
        Memberships(app.fort_store).upsert("admins", "manager")
        svc.call(app.reconcile, "test")
        yield {"hub": hub, "app": app, "svc": svc}
    finally:
        svc.stop()
        hub.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, request, artifacts_dir):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    failures = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failures:
        pg.screenshot(path=str(artifacts_dir / f"{request.node.name}.png"))
    context.close()


def login(page, env, user):
    url = f"{env['hub'].url}/services/fort-groups/"
    page.goto(url)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "any")
    page.click("#login_submit")
    page.wait_for_url(url + "*")


def test_admin_adds_extends_removes(page, env):
    env["app"].fort_store.usage.add("carol", "queries", "2026-11-25", 7)
    login(page, env, "admin")
    usage = page.locator("#usage").inner_text()
    assert "carol" in usage and "queries" in usage and "7" in usage
    assert page.locator("h1").inner_text() == "fort-groups"
    section = page.locator("#group-ads-study")
    assert section.locator("tr[data-user=bob]").count() == 1
    section.locator("form.add input[name=user]").fill("dave")
    section.locator("form.add input[name=expires]").fill("2031-01-31")
    section.locator("form.add button").click()
    page.wait_for_selector("#msg")
    assert "added dave in ads-study" in page.locator("#msg").inner_text()
    row = page.locator("#group-ads-study tr[data-user=dave]")
    assert "2031-02-01" in row.inner_text() and "yes" in row.inner_text()
    m = Memberships(env["app"].fort_store).get("ads-study", "dave")
    assert m is not None and m.source == "api" and m.expires.date().isoformat() == "2031-02-01"

    row.locator("form.extend input[name=expires]").fill("2032-06-30")
    row.locator("form.extend button").click()
    page.wait_for_selector("#msg")
    assert "extended dave" in page.locator("#msg").inner_text()
    assert "2032-07-01" in page.locator("#group-ads-study tr[data-user=dave]").inner_text()

    page.locator("#group-ads-study tr[data-user=dave] form.remove button").click()
    page.wait_for_selector("#msg")
    assert "removed dave from ads-study" in page.locator("#msg").inner_text()
    assert page.locator("#group-ads-study tr[data-user=dave]").count() == 0
    hub = env["hub"]
    r = requests.get(hub.api("groups/ads-study"), headers=hub.admin_headers, timeout=30)
    assert "dave" not in r.json()["users"]

    # bad input comes back as a clear message, nothing changes
    section = page.locator("#group-ads-study")
    section.locator("form.add input[name=user]").fill("dave")
    section.locator("form.add input[name=expires]").fill("2001-01-01")
    section.locator("form.add button").click()
    page.wait_for_selector("#msg.error")
    assert "in the past" in page.locator("#msg").inner_text()
    assert Memberships(env["app"].fort_store).get("ads-study", "dave") is None

    # audit filter
    page.fill("#audit-filter input[name=action]", "groups.remove")
    page.click("#audit-filter button")
    page.wait_for_url("**action=groups.remove**")
    cells = page.locator("#audit tr td:nth-child(4)").all_inner_texts()
    assert cells and set(cells) == {"groups.remove"}
    assert "admin" in page.locator("#audit").inner_text()

    # CSRF: the same browser session without (or with a wrong) _xsrf token changes nothing
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    post = f"{hub.url}/services/fort-groups/members"
    form = {"op": "add", "group": "ads-study", "user": "dave"}
    for extra in ({}, {"_xsrf": "forged"}):
        r = requests.post(post, data={**form, **extra}, cookies=cookies, timeout=30,
                          allow_redirects=False)  # fmt: skip
        assert r.status_code == 403, r.text
        assert "Traceback" not in r.text
        assert "_xsrf" in r.text or "XSRF" in r.text
    assert Memberships(env["app"].fort_store).get("ads-study", "dave") is None


def test_non_admin_is_refused(page, env):
    login(page, env, "alice")
    assert "lacks the scope" in page.content()
    assert page.locator("form.add").count() == 0


def test_audit_log_needs_the_audit_scope(page, env):
    login(page, env, "manager")
    assert page.locator("#group-ads-study form.add").count() == 1  # may manage memberships
    assert page.locator("#audit").count() == 0
    assert "custom:fort-groups:audit" in page.locator("#audit-needs-scope").inner_text()


def test_admin_page_shows_only_what_verify_verifies(page, env):
    """#10 finding 9: a forged ``seq = 0`` "admin added mallory to admins" row (possible in a
    store from before the check) showed on the admin page while ``audit verify`` passed."""
    store = env["app"].fort_store
    legacy_audit_table(store)
    forge_row(store, 0)
    try:
        login(page, env, "admin")
        audit_text = page.locator("#audit").inner_text()
        assert "groups/admins/members/mallory" not in audit_text
        assert FORGED_REASON not in audit_text
        assert "groups.add" in audit_text  # the genuine records are there
    finally:
        with store.transaction() as conn:
            conn.execute(text("DELETE FROM fort_audit_log WHERE seq <= 0"))
        store.create_schema()

"""The demo in a real browser (playwright driving Debian's chromium): alice signs in with the
Facebook stand-in, sees only her profiles, starts a server and JupyterLab loads; dave gets the
no-access page; the admin sees alice's login and spawn in fort-groups' audit view.
Screenshots of a failing step are kept in tests/artifacts/."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.conftest import IN_CI

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(msg + "; CI must run the browser tests")
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


@contextlib.contextmanager
def screenshot_on_failure(page, artifacts_dir: Path, name: str):
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(artifacts_dir / f"e2e-{name}.png"), full_page=True)
            (artifacts_dir / f"e2e-{name}.html").write_text(page.content())
        raise


def sign_in(page, url: str, who: str) -> None:
    page.goto(url + "/hub/login")
    page.get_by_text("Sign in with Facebook").click()
    page.wait_for_url("**/dialog/oauth**")
    page.get_by_role("button", name=f"Continue as {who}").click()


def test_alice_signs_in_sees_her_profiles_and_jupyterlab_loads(page, fort_demo, artifacts_dir):
    with screenshot_on_failure(page, artifacts_dir, "alice"):
        sign_in(page, fort_demo.url, "Alice Archer")
        page.wait_for_url("**/hub/spawn**")
        form = page.locator("form").first
        text = form.inner_text()
        assert "Python" in text and "URLs study, large" in text
        assert "GPU" not in text  # ads-study and admins only
        page.get_by_role("button", name="Start").click()
        page.wait_for_url("**/user/alice/lab**", timeout=180_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
        assert "JupyterLab" in page.title()
        page.goto(fort_demo.url + "/hub/home")
        page.get_by_role("button", name="Stop My Server").click()
        page.wait_for_selector("#start", timeout=60_000)


def test_dave_sees_the_no_access_page(page, fort_demo, artifacts_dir):
    with screenshot_on_failure(page, artifacts_dir, "dave"):
        sign_in(page, fort_demo.url, "Dave Diaz")
        page.wait_for_load_state()
        body = page.locator("body").inner_text()
        assert "no study membership" in body
        assert "admin@example.org" in body
        assert "/hub/spawn" not in page.url


def test_admin_sees_alices_login_and_spawn_in_the_audit_view(page, fort_demo, artifacts_dir):
    with screenshot_on_failure(page, artifacts_dir, "admin"):
        sign_in(page, fort_demo.url, "Ada Admin")
        page.wait_for_url("**/hub/**")
        page.goto(fort_demo.url + "/services/fort-groups/?user=alice")
        page.wait_for_url("**/services/fort-groups/**")
        body = page.locator("body").inner_text()
        assert "auth.login" in body, body[:2000]
        assert "spawn.start" in body
        assert "urls-study" in body  # the memberships table

"""Helpers for the browser tests (playwright driving Debian's chromium).

- :func:`launch_browser` / the ``browser`` and ``page`` fixtures (tests/conftest.py imports them,
  so every test module can ask for ``page``);
- :func:`assert_accessible`: injects axe-core (the npm package, installed by ``make browser-deps``
  into ``.cache/axe``) into the page and fails on serious or critical violations, listing them;
- :func:`screenshot`: a screenshot for the docs. Written to ``tests/artifacts/screenshots/``;
  with ``FORT_DOCS_SCREENSHOTS=1`` to ``docs/images/`` instead (commit those).

Without chromium or axe-core the tests are skipped, and fail under CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as tests/conftest.py
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: where ``make browser-deps`` installs axe-core (npm install --prefix .cache/axe)
AXE_JS = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
DOCS_IMAGES = ROOT / "docs" / "images"
ARTIFACT_IMAGES = ROOT / "tests" / "artifacts" / "screenshots"
#: the impacts that fail a page (axe's scale: minor, moderate, serious, critical)
FAILING_IMPACTS = ("serious", "critical")


def missing(what: str) -> None:
    """Skip (fail under CI) because *what* is not installed."""
    msg = f"{what} is missing: run `make browser-deps`"
    if IN_CI:
        pytest.fail(msg + " (CI must run the browser tests)")
    pytest.skip(msg)


@contextlib.contextmanager
def launch_browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) in a fixed size, English, New York time."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="America/New_York"
    )
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


def axe_violations(page, impacts: tuple[str, ...] = FAILING_IMPACTS) -> list[dict]:
    """axe-core's violations on *page* with one of *impacts* (WCAG 2.x A/AA and best
    practices), each ``{"id", "impact", "help", "targets"}``."""
    if not AXE_JS.exists():
        missing(f"axe-core ({AXE_JS.relative_to(ROOT)})")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate(
        """async () => {
            const r = await window.axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(" ")).slice(0, 5),
            }));
        }"""
    )
    return [v for v in result if v["impact"] in impacts]


def assert_accessible(page, impacts: tuple[str, ...] = FAILING_IMPACTS) -> None:
    """Fail when axe-core finds a violation of one of *impacts* on *page*."""
    bad = axe_violations(page, impacts)
    assert not bad, f"axe-core on {page.url}:\n" + "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']} ({', '.join(v['targets'])})" for v in bad
    )


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save a PNG of *page* as ``<name>.png`` (see the module docstring for where)."""
    folder = DOCS_IMAGES if os.environ.get("FORT_DOCS_SCREENSHOTS") == "1" else ARTIFACT_IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@contextlib.contextmanager
def keep_on_failure(page, name: str) -> Iterator[None]:
    """On a failing step, keep the page's screenshot and HTML in tests/artifacts/."""
    try:
        yield
    except BaseException:
        folder = ROOT / "tests" / "artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(folder / f"browser-{name}.png"), full_page=True)
            (folder / f"browser-{name}.html").write_text(page.content())
        raise

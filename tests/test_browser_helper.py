"""tests/browser.py's accessibility check finds what axe-core finds, and passes a clean page."""

from __future__ import annotations

import pytest

from tests.browser import assert_accessible, axe_violations

pytestmark = [pytest.mark.browser]


def test_axe_reports_a_nameless_button_and_an_image_without_text(page):
    page.set_content(
        "<html lang=en><title>t</title><main><h1>x</h1><img src=x.png><button></button></main>"
    )
    found = {v["id"]: v for v in axe_violations(page)}
    assert set(found) == {"button-name", "image-alt"}
    assert found["image-alt"]["targets"] == ["img"]
    with pytest.raises(AssertionError, match="critical button-name"):
        assert_accessible(page)


def test_a_clean_page_passes(page):
    page.set_content(
        "<html lang=en><title>t</title><main><h1>x</h1><img src=x.png alt=logo>"
        "<button>Go</button></main>"
    )
    assert_accessible(page)

"""Browser tests: Playwright driving the system Chromium (``/usr/bin/chromium``, never a
browser of Playwright's own) against the real app.

The app is served as in production by the session's uvicorn thread (``relay_server`` in
tests/conftest.py: ``config.asgi``, the site through Django and ``/v1`` through relay.http),
with the mock upstream behind a channel for the chat's model. Every test here is marked
``browser`` (``pytestmark``) and runs in the SQLite pass only (``make test``'s first pass):
the pages and their scripts are the same on PostgreSQL, which the site's other tests cover, so
the PostgreSQL pass deselects them (``-m "not browser"`` in scripts/test, and the hook below
for a bare ``pytest`` there) rather than collecting and skipping them.

Screenshots go to ``data/screenshots/`` (git-ignored), named page-language-width.png.
"""

import os
from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import need_service

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "data" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Playwright's synchronous API keeps an asyncio loop in this thread; Django's ORM refuses to
# run under a loop unless told it may (the calls here are the tests' own, never concurrent).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(config, items):
    """Deselect (not skip) the browser tests when the database is not SQLite.

    scripts/test's PostgreSQL pass already runs with ``-m "not browser"``; this keeps a bare
    ``pytest`` against PostgreSQL from running them too. They show as "deselected" in the
    summary, never as skips, so a skip in the suite's report always means something is missing.
    """
    from django.conf import settings

    if "sqlite" in settings.DATABASES["default"]["ENGINE"]:
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if not item.get_closest_marker("browser")]


# Module scope, not session: while sync_playwright's context is open, its event loop counts as
# running in this thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        need_service("Chromium", f"{CHROMIUM} is missing (scripts/install test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def site_url(relay_url):
    """The running app (site and /v1), with the test's committed rows visible to it."""
    return relay_url


@pytest.fixture
def browser_context(chromium, site_url):
    context = chromium.new_context(
        base_url=site_url, viewport=DESKTOP, locale="en-US", accept_downloads=True
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site_url)
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.js_errors = problems
    yield page
    assert not problems, f"JavaScript errors on the page: {problems}"


@pytest.fixture
def log_in(site_url):
    """``log_in(page, user)``: the browser signed in as ``user`` (a session made by Django's
    test client, handed to the browser as its cookie)."""

    def sign_in(page, user) -> None:
        client = Client()
        client.force_login(user)
        session = client.cookies["sessionid"].value
        page.context.add_cookies([{"name": "sessionid", "value": session, "url": site_url}])

    return sign_in


def screenshot(page, name: str) -> Path:
    """A full-page picture of what the browser shows, under data/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    language = page.evaluate("document.documentElement.lang") or "xx"
    width = page.viewport_size["width"]
    path = SCREENSHOTS / f"{name}-{language}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""What a person does on the site, in a real browser: sign up through an invite, log in with
GitHub, make a key and call the API with it, redeem a code, chat, read the logs."""

import json
import re

import openai
import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey, SiteSettings, User
from accounts.services import create_api_key
from billing.models import LedgerEntry, UsageLog
from billing.redemption import make_batch
from tests.browser.conftest import DESKTOP, PHONE, screenshot
from tests.conftest import eventually
from tests.fake_github import fake_github, fake_github_server  # noqa: F401

pytestmark = pytest.mark.browser


def test_sign_up_through_an_invite_link_gets_trial_and_reward(page, alice, site_url):
    site = SiteSettings.current()
    site.trial_quota, site.invitee_reward, site.inviter_reward = 1_000_000, 200_000, 300_000
    site.save()

    page.goto(f"/register?aff={alice.invite_code}")
    page.fill("#id_username", "newcomer")
    page.fill("#id_email", "newcomer@example.com")
    page.fill("#id_password1", "a-long-password-1")
    page.fill("#id_password2", "a-long-password-1")
    page.locator("form button[type=submit]").last.click()

    page.wait_for_url(re.compile(r"/dashboard$"))
    expect(page.locator("#stat-balance")).to_contain_text("$2.40")  # trial $2 + reward $0.40
    expect(page.locator("#nav-balance")).to_have_text("$2.40")
    newcomer = User.objects.get(username="newcomer")
    assert newcomer.inviter == alice

    page.goto("/logs?show=ledger")
    rows = page.locator("#log-rows tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#log-rows")).to_contain_text("Trial credit")
    expect(page.locator("#log-rows")).to_contain_text("Invite reward")
    expect(page.locator("#log-totals [data-total=net]")).to_have_text("+$2.40")


def test_log_in_with_github(page, fake_github):  # noqa: F811
    page.goto("/accounts/login/")
    page.get_by_role("button", name=re.compile("GitHub")).or_(
        page.get_by_role("link", name=re.compile("GitHub"))
    ).first.click()
    page.wait_for_url(re.compile(r"/accounts/github/login/"))
    page.locator("main form button[type=submit]").click()  # allauth's "Continue" (a POST)
    page.wait_for_url(re.compile(r"/dashboard$"))  # GitHub's authorize page and back
    expect(page.locator("#nav-logout")).to_be_visible()
    assert User.objects.filter(username="octocat").exists()


def test_a_new_key_copied_from_the_page_calls_the_api_and_shows_in_logs_and_dashboard(
    page, alice, log_in, openai_channel, site_url
):
    log_in(page, alice)
    page.goto("/keys")
    page.fill("#id_name", "browser key")
    page.click("#create-key-submit")
    expect(page.locator("#revealed-key-value")).to_have_value(re.compile(r"^sk-"))
    page.click("#copy-revealed-key")
    key = page.evaluate("navigator.clipboard.readText()")
    assert key.startswith("sk-") and ApiKey.objects.find(key).get().user == alice

    client = openai.OpenAI(base_url=f"{site_url}/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    eventually(lambda: UsageLog.objects.filter(user=alice).exists())

    page.goto("/logs")
    row = page.locator("#log-rows tbody tr").first
    expect(row).to_contain_text("browser key")
    expect(row).to_contain_text("gpt-4o-mini")
    expect(page.locator("#log-totals [data-total=calls]")).to_have_text("1")

    page.goto("/dashboard")
    expect(page.locator("#stat-requests")).to_have_text("1")
    expect(page.locator("#last-calls")).to_contain_text("gpt-4o-mini")


def test_redeeming_a_code_adds_its_credit(page, alice, log_in):
    _, [code] = make_batch(name="launch", quota=2_500_000, count=1)
    log_in(page, alice)
    page.goto("/topup")
    page.fill("#redeem-code", code)
    page.click("#redeem-submit")
    expect(page.locator("#messages")).to_contain_text("$5")
    expect(page.locator("#topup-balance")).to_contain_text("$25.00")  # $20 + $5
    page.goto("/logs?show=ledger&kind=redemption")
    expect(page.locator("#log-rows tbody tr")).to_have_count(1)
    assert LedgerEntry.objects.filter(user=alice, kind="redemption").count() == 1


# --- The built-in chat -----------------------------------------------------------------------

HOSTILE = (
    'Here is **bold** and `code` <img src=x onerror="window.hacked=1"> '
    "[a link](javascript:window.hacked=2)\n\n```python\nprint('<b>hi</b>')\n```\n"
)


def open_chat(page, log_in, user, key_id: int) -> None:
    log_in(page, user)
    page.goto(f"/chat?key={key_id}")
    expect(page.locator("#chat-model")).to_be_enabled()
    page.select_option("#chat-model", "gpt-4o-mini")


def test_chat_streams_an_answer_rendered_safely_and_keeps_it_in_the_browser(
    page, alice, log_in, openai_channel, mock_upstream
):
    row, _ = create_api_key(user=alice, name="chat key")
    mock_upstream.script({"text": HOSTILE, "chunks": 1})
    open_chat(page, log_in, alice, row.id)
    page.fill("#chat-input", "say something dangerous")
    page.keyboard.press("Enter")

    answer = page.locator(".chat-assistant .chat-body").last
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("pre code")).to_have_text("print('<b>hi</b>')")
    expect(answer).to_contain_text('<img src=x onerror="window.hacked=1">')
    assert page.locator("#chat-log img, #chat-log b, #chat-log script").count() == 0
    assert answer.locator("a").count() == 0  # javascript: links stay text
    assert page.evaluate("window.hacked") is None

    # The call went through the API with the key, streamed and billed like any other.
    usage = eventually(lambda: UsageLog.objects.filter(user=alice, api_key=row).first())
    assert usage.is_stream and usage.quota > 0
    sent = mock_upstream.requests[-1]["json"]
    assert sent["messages"][-1] == {"role": "user", "content": "say something dangerous"}

    # Kept in this browser only: back after a reload, gone after "New chat".
    page.reload()
    expect(page.locator(".chat-user .chat-body")).to_have_text("say something dangerous")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#chat-clear")
    expect(page.locator(".chat-msg")).to_have_count(0)


def test_the_stop_button_ends_a_streaming_answer(
    page, alice, log_in, openai_channel, mock_upstream
):
    row, _ = create_api_key(user=alice, name="chat key")
    mock_upstream.script({"text": "word ", "chunks": 200, "chunk_delay": 0.05})
    open_chat(page, log_in, alice, row.id)
    page.fill("#chat-input", "talk for a while")
    page.click("#chat-send")
    expect(page.locator(".chat-assistant .chat-body").last).to_contain_text("word")
    page.click("#chat-stop")
    expect(page.locator(".chat-assistant .chat-note").last).to_have_text("Stopped.")
    expect(page.locator("#chat-send")).to_be_visible()
    usage = eventually(lambda: UsageLog.objects.filter(user=alice).first(), timeout=15)
    assert usage.status == UsageLog.Status.CLIENT_GONE
    assert 0 < usage.output_tokens < 200


# --- Every page, in both languages, at both widths -------------------------------------------

SIGNED_IN_PAGES = [
    ("home", "/"),
    ("dashboard", "/dashboard"),
    ("keys", "/keys"),
    ("topup", "/topup"),
    ("logs", "/logs"),
    ("logs-ledger", "/logs?show=ledger"),
    ("invite", "/invite"),
    ("settings", "/settings"),
    ("chat", "/chat"),
    ("pricing", "/pricing"),
    ("docs", "/docs"),
]
ANONYMOUS_PAGES = [("login", "/accounts/login/"), ("signup", "/accounts/signup/")]
CHINESE = re.compile(r"[\u4e00-\u9fff]")
# Words of the Logs and Chat pages that must not be left in English on the Chinese pages.
ENGLISH_LEFT = re.compile(r"\b(Balance movements|Export CSV|New chat|Send|All keys|Filter)\b")

CONVERSATION = [
    {"role": "user", "content": "How do I list files in Python?"},
    {
        "role": "assistant",
        "content": "Use **pathlib**:\n\n```python\nfrom pathlib import Path\n"
        "for path in Path('.').iterdir():\n    print(path)\n```\n\n- `iterdir()` lists one "
        "folder\n- `rglob('*')` walks the tree",
    },
]


def visit(page, name: str, path: str, language: str) -> None:
    page.goto(path)
    assert page.evaluate("document.documentElement.lang") == language, (name, language)
    if path.startswith("/logs"):
        expect(page.locator("#log-totals")).to_have_attribute("data-state", "ready")
    if path == "/chat":
        expect(page.locator("#chat-model")).to_be_enabled()
    if page.viewport_size["width"] == PHONE["width"]:
        fits_a_phone(page, name)
    text = page.locator("main").inner_text()
    if language == "zh-hans":
        assert CHINESE.search(text), f"{name}: no Chinese on the page"
        assert not ENGLISH_LEFT.search(text), f"{name}: {ENGLISH_LEFT.search(text)[0]!r}"
    screenshot(page, name)


def fits_a_phone(page, name: str) -> None:
    """At 390 px: nothing makes the page itself scroll sideways; a table either fits its box
    or scrolls inside it with the model column kept in view; a model name is on one line."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the phone"
    if name == "dashboard":
        for table in ("#usage-by-model", "#last-calls"):
            wrap = page.locator(f"{table} .table-wrap")
            assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), f"{table} is cut off"
    if name == "pricing":
        model = page.locator("#price-table tbody td:first-child code").first
        box, lines = model.bounding_box(), model.evaluate("e => e.getClientRects().length")
        assert lines == 1 and box["height"] < 30, "a model name wraps"
        assert (
            page.locator("#price-table td:first-child").first.evaluate(
                "e => getComputedStyle(e).position"
            )
            == "sticky"
        )
        height = page.evaluate("document.documentElement.scrollHeight")
        rows = page.locator("#price-table tbody tr").count()
        assert height < 120 * rows, f"pricing is {height} px tall for {rows} models"


def switch_language(page, label: str, language: str) -> None:
    page.locator("#language-switch button", has_text=label).click()
    page.wait_for_function(f"document.documentElement.lang === '{language}'")


def test_every_page_in_english_and_chinese_at_desktop_and_phone_width(
    chromium, page, alice, log_in, openai_channel, site_url, make_openai
):
    row, key = create_api_key(user=alice, name="laptop")
    make_openai(key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    eventually(lambda: UsageLog.objects.filter(user=alice).exists())
    log_in(page, alice)
    page.goto("/")
    page.evaluate(
        "([name, value]) => localStorage.setItem(name, value)",
        [f"sluice-chat:{alice.id}", json.dumps({"messages": CONVERSATION, "keyId": row.id})],
    )
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)
        page.goto("/")
        if page.evaluate("document.documentElement.lang") != "en":
            switch_language(page, "EN", "en")
        for name, path in SIGNED_IN_PAGES:
            visit(page, name, path, "en")
        switch_language(page, "中文", "zh-hans")
        for name, path in SIGNED_IN_PAGES:
            visit(page, name, path, "zh-hans")

    # Signed out: the language is remembered by its cookie, or read from the browser.
    for locale, language in (("en-US", "en"), ("zh-CN", "zh-hans")):
        for viewport in (DESKTOP, PHONE):
            context = chromium.new_context(base_url=site_url, viewport=viewport, locale=locale)
            visitor = context.new_page()
            for name, path in ANONYMOUS_PAGES:
                visit(visitor, name, path, language)
            context.close()

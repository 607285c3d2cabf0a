"""What each page of the user site does for the person using it."""

from datetime import timedelta
from urllib.parse import unquote

import pytest
from django.utils import timezone

from accounts.models import AccessToken, ApiKey, SiteSettings
from accounts.services import create_api_key, create_user
from accounts.tokens import find_access_token
from billing import services as billing
from billing.models import LedgerEntry
from billing.redemption import make_batch
from tests.conftest import settled_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


# --- Keys -------------------------------------------------------------------------------------


def test_a_key_made_on_the_site_has_its_limits_and_is_revealed_to_its_owner(
    signed_in, alice, openai_channel, books_balance
):
    answer = signed_in.post(
        "/keys",
        {
            "name": "laptop",
            "expires_on": "2099-12-31",
            "quota_usd": "1.5",
            "allowed_models": ["gpt-4o-mini"],
            "allowed_ips": "10.0.0.0/8\n203.0.113.7",
        },
    )
    assert answer.status_code == 302
    key = ApiKey.objects.get(user=alice, name="laptop")
    assert not key.unlimited_quota and key.remaining_quota == 750_000
    assert key.allowed_models == ["gpt-4o-mini"]
    assert key.allowed_ips == ["10.0.0.0/8", "203.0.113.7"]
    assert timezone.localtime(key.expires_at).date().isoformat() == "2099-12-31"
    page = signed_in.get(answer["Location"]).content.decode()
    assert f'value="{key.reveal()}"' in page  # shown at once, ready to copy
    assert LedgerEntry.objects.filter(api_key=key, kind="key_limit", key_amount=750_000).exists()
    books_balance()


def test_the_model_choices_are_what_the_users_group_can_call(signed_in, openai_channel):
    page = signed_in.get("/keys").content.decode()
    assert 'value="gpt-4o-mini"' in page
    assert 'value="claude-sonnet-4-5"' not in page  # no channel serves it
    answer = signed_in.post("/keys", {"name": "x", "unlimited": "on", "allowed_models": ["o3"]})
    assert answer.status_code == 400


def test_bad_ips_and_a_missing_quota_are_refused_with_reasons(signed_in, alice):
    answer = signed_in.post("/keys", {"name": "x", "allowed_ips": "not-an-ip"})
    page = answer.content.decode()
    assert answer.status_code == 400
    assert "not-an-ip is not an IP address or CIDR range." in page
    assert "Give the key a quota, or tick Unlimited." in page
    assert not ApiKey.objects.filter(user=alice).exists()


def test_editing_a_keys_limit_goes_through_the_ledger(signed_in, alice, books_balance):
    key, _ = create_api_key(user=alice, name="k")
    answer = signed_in.post(f"/keys/{key.id}/edit", {"name": "renamed", "quota_usd": "2"})
    assert answer.status_code == 302
    key.refresh_from_db()
    assert key.name == "renamed" and not key.unlimited_quota
    assert key.remaining_quota == 1_000_000
    signed_in.post(f"/keys/{key.id}/edit", {"name": "renamed", "unlimited": "on"})
    key.refresh_from_db()
    assert key.unlimited_quota
    books_balance()


def test_a_key_can_be_disabled_enabled_and_deleted(signed_in, alice):
    key, _ = create_api_key(user=alice, name="k")
    signed_in.post(f"/keys/{key.id}/toggle")
    assert ApiKey.objects.get(id=key.id).status == "disabled"
    signed_in.post(f"/keys/{key.id}/toggle")
    assert ApiKey.objects.get(id=key.id).status == "enabled"
    signed_in.post(f"/keys/{key.id}/delete")
    assert not ApiKey.objects.filter(id=key.id).exists()


def test_the_chat_button_fills_the_operators_link_and_the_builtin_chat_link_names_the_key(
    signed_in, alice
):
    key, clear = create_api_key(user=alice, name="k")
    answer = signed_in.get(f"/keys/{key.id}/chat")
    assert answer.status_code == 302
    assert unquote(answer["Location"]) == (
        'https://app.nextchat.dev/#/?settings={"key":"' + clear + '","url":"http://testserver"}'
    )
    assert f'href="/chat?key={key.id}"' in signed_in.get("/keys").content.decode()


def test_a_key_made_on_the_site_calls_the_api(signed_in, alice, openai_channel, make_openai):
    signed_in.post("/keys", {"name": "sdk", "unlimited": "on"})
    key = ApiKey.objects.get(user=alice, name="sdk")
    answer = make_openai(key.reveal()).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content
    settled_usage(1)
    page = signed_in.get("/dashboard").content.decode()
    assert "gpt-4o-mini" in page.split('id="last-calls"')[1]
    assert "sdk" in page.split('id="last-calls"')[1]


# --- Dashboard, invite, top-up ----------------------------------------------------------------


def test_the_dashboard_shows_balance_in_dollars_and_display_currency(signed_in):
    page = signed_in.get("/dashboard").content.decode()
    assert "$20.00" in page and "¥144.00" in page  # $20 at the default 7.2
    assert page.count('class="bar"') == 7
    assert signed_in.get("/dashboard?days=30").content.decode().count('class="bar"') == 30


def test_the_invite_page_counts_invitees_and_rewards_from_the_ledger(signed_in, alice):
    invitee = create_user(username="friend", password="x")
    invitee.inviter = alice
    invitee.save(update_fields=["inviter"])
    billing.grant(user=alice, amount=250_000, kind=LedgerEntry.Kind.INVITE_REWARD, note="friend")
    page = signed_in.get("/invite")
    html = page.content.decode()
    assert f"/register?aff={alice.invite_code}" in html
    assert page.context["invitees"] == 1 and page.context["reward_quota"] == 250_000
    assert "$0.50" in html.split('id="invite-rewards"')[1]


def test_the_topup_note_is_markdown_with_html_escaped(signed_in):
    SiteSettings.objects.update_or_create(
        pk=1,
        defaults={
            "topup_note": "**$10** = ¥72\n<script>alert(1)</script>",
            "shop_url": "https://shop.example.com/buy",
        },
    )
    html = signed_in.get("/topup").content.decode()
    assert "<strong>$10</strong>" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'href="https://shop.example.com/buy"' in html


def test_redeeming_a_code_credits_it_once_and_says_why_a_code_fails(
    signed_in, alice, books_balance
):
    _, (code,) = make_batch(name="test", quota=1_000_000, count=1)
    answer = signed_in.post("/topup", {"code": code}, follow=True)
    assert "Redeemed: +$2.00 added to your balance." in answer.content.decode()
    alice.refresh_from_db()
    assert alice.quota == 10_000_000 + 1_000_000
    again = signed_in.post("/topup", {"code": code}, follow=True).content.decode()
    assert "This code has already been redeemed." in again
    unknown = signed_in.post("/topup", {"code": "NOPE-NOPE"}, follow=True).content.decode()
    assert "This code does not exist." in unknown
    books_balance()


def test_an_expired_code_is_refused_in_chinese_too(signed_in):
    _, (code,) = make_batch(
        name="old", quota=1, count=1, expires_at=timezone.now() - timedelta(days=1)
    )
    signed_in.post("/i18n/setlang/", {"language": "zh-hans"})
    page = signed_in.post("/topup", {"code": code}, follow=True).content.decode()
    assert "兑换码已过期" in page


def test_a_disabled_code_and_too_many_wrong_codes_are_explained(signed_in, alice, settings):
    from django.core.cache import caches

    from billing.redemption import disable_codes

    cache = caches["guards"]  # where wrong guesses are counted

    counters = [f"redeem-fail:user:{alice.id}", "redeem-fail:ip:127.0.0.1"]
    cache.delete_many(counters)
    batch, (code,) = make_batch(name="pulled", quota=1_000_000, count=1)
    disable_codes(batch=batch)
    page = signed_in.post("/topup", {"code": code}, follow=True).content.decode()
    assert "This code has been disabled." in page
    settings.REDEEM_FAILURES_PER_USER = 2
    for _ in range(2):
        signed_in.post("/topup", {"code": "WRONG-GUESS"})
    _, (good,) = make_batch(name="fresh", quota=1_000_000, count=1)
    page = signed_in.post("/topup", {"code": good}, follow=True).content.decode()
    assert "Too many wrong codes. Wait an hour before trying again." in page
    alice.refresh_from_db()
    assert alice.quota == 10_000_000  # nothing redeemed while refused
    cache.delete_many(counters)


# --- Settings: access tokens ------------------------------------------------------------------


def test_a_token_is_shown_once_stored_as_hmac_and_can_be_revoked(signed_in, alice):
    answer = signed_in.post("/settings/tokens", {"name": "ci"})
    token = answer.context["new_token"]
    assert token.startswith("slt-") and token in answer.content.decode()
    row = AccessToken.objects.get(user=alice)
    assert token not in (row.lookup_hash, row.hint) and find_access_token(token) == row
    assert token not in signed_in.get("/settings").content.decode()
    signed_in.post(f"/settings/tokens/{row.id}/revoke")
    assert find_access_token(token) is None


# --- Public pages -----------------------------------------------------------------------------


def test_home_and_docs_give_the_real_base_url_and_models_on_offer(client, openai_channel, settings):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    home = client.get("/", HTTP_HOST="api.example.com").content.decode()
    assert "http://api.example.com/v1" in home
    assert "gpt-4o-mini" in home.split('id="home-models"')[1]
    docs = client.get("/docs", HTTP_HOST="api.example.com").content.decode()
    assert 'base_url="http://api.example.com/v1"' in docs  # Python openai
    assert 'baseURL: "http://api.example.com/v1"' in docs  # Node openai
    assert 'anthropic.Anthropic(base_url="http://api.example.com"' in docs
    assert "insufficient_quota" in docs and "model_not_allowed" in docs
    # The examples name a model that chats: not the completion-only or embedding ones on offer.
    assert '"model": "gpt-4o"' in docs and "gpt-3.5-turbo-instruct" not in docs


def test_site_url_setting_wins_over_the_request_host(client, settings):
    settings.SITE_URL = "https://relay.example.org"
    assert "https://relay.example.org/v1" in client.get("/docs").content.decode()


def test_pricing_is_public_and_shows_list_prices(client):
    page = client.get("/pricing").content.decode()
    assert '<tr data-model="gpt-4o-mini">' in page
    assert "$0.15<" in page and "$0.60<" in page  # per 1M input / output
    assert 'id="group-ratio"' not in page


def test_every_page_speaks_chinese(signed_in):
    signed_in.post("/i18n/setlang/", {"language": "zh-hans"})
    expected = {
        "/": "模型",
        "/dashboard": "余额",
        "/keys": "创建密钥",
        "/topup": "兑换",
        "/invite": "邀请",
        "/settings": "设置",
        "/pricing": "价格",
        "/docs": "错误",
    }
    for path, word in expected.items():
        page = signed_in.get(path).content.decode()
        assert '<html lang="zh-hans">' in page, path
        assert word in page, path
        assert "Dashboard" not in page, path  # the navigation is translated too


def test_the_key_holders_page_speaks_the_browsers_language(client, alice):
    """/key has no language switch (white-label): a Chinese browser gets it in Chinese, key
    state, statuses and errors included."""
    row, clear = create_api_key(user=alice, name="sold")
    ApiKey.objects.filter(id=row.id).update(status=ApiKey.Status.DISABLED)
    chinese = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9"}
    page = client.get("/key", **chinese).content.decode()
    assert '<html lang="zh-hans">' in page and "查询" in page and "Check<" not in page
    page = client.post("/key", {"key": clear}, **chinese).content.decode()
    assert 'id="key-state">已停用<' in page and "余额" in page and "No calls yet" not in page
    refused = client.post("/key", {"key": "sk-" + "x" * 48}, **chinese)
    assert refused.status_code == 404 and "没有这个密钥" in refused.content.decode()
    english = client.post("/key", {"key": clear}, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="en">' in english and 'id="key-state">disabled<' in english

"""The site's frame: base template, navigation, balance, language switch, static files, money."""

from decimal import Decimal

import pytest

from accounts.templatetags.money import format_local, format_usd

pytestmark = pytest.mark.django_db


def test_money_is_shown_from_integer_quota_with_exact_decimals():
    assert format_usd(616_000) == "$1.23"
    assert format_usd(0) == "$0.00"
    assert format_usd(250) == "$0.0005"  # small sums keep their digits
    assert format_usd(-123_456_789) == "-$246.91"
    assert format_local(616_000, symbol="¥", rate=Decimal("7.2")) == "¥8.87"


def test_anonymous_visitor_sees_login_and_sign_up_not_a_balance(client):
    page = client.get("/").content.decode()
    assert 'id="nav-login"' in page and 'id="nav-signup"' in page
    assert 'id="nav-balance"' not in page


def test_a_signed_in_user_sees_the_balance_in_dollars_on_every_page(client, alice):
    client.force_login(alice)
    for path in ("/", "/dashboard", "/keys", "/topup", "/invite", "/settings", "/pricing", "/docs"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert '<a class="balance" id="nav-balance"' in page.content.decode(), path
        assert "$20.00" in page.content.decode(), path


def test_the_language_switch_remembers_chinese(client):
    answer = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/pricing"})
    assert answer.status_code == 302 and answer["Location"] == "/pricing"
    assert client.cookies["django_language"].value == "zh-hans"
    assert '<html lang="zh-hans">' in client.get("/pricing").content.decode()


def test_the_browser_language_picks_chinese(client):
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert '<html lang="zh-hans">' in page


def test_the_stylesheet_is_served_by_the_app(live_server):
    import httpx

    answer = httpx.get(f"{live_server.url}/static/site/site.css")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/css")
    assert ".topbar" in answer.text

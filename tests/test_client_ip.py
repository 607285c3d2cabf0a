"""The caller's IP: X-Forwarded-For counts only through TRUSTED_PROXIES."""

import httpx
import pytest

from accounts.services import create_api_key
from billing.models import UsageLog

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def call(relay_url: str, key: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.post(f"{relay_url}/v1/chat/completions", json=BODY, headers=headers)


def test_without_trusted_proxies_the_header_is_ignored(relay_url, alice_key, openai_channel):
    assert call(relay_url, alice_key, "203.0.113.9").status_code == 200
    assert UsageLog.objects.get().client_ip == "127.0.0.1"


def test_an_ip_allow_list_cannot_be_spoofed_with_the_header(relay_url, alice, openai_channel):
    _, key = create_api_key(user=alice, allowed_ips=["203.0.113.0/24"])
    response = call(relay_url, key, "203.0.113.9")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ip_not_allowed"


def test_behind_a_trusted_proxy_the_client_is_the_first_untrusted_hop(
    relay_url, alice, openai_channel, settings
):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    _, key = create_api_key(user=alice, allowed_ips=["203.0.113.0/24"])
    # A client may prepend anything; only the hops the trusted proxies appended count.
    assert call(relay_url, key, "198.51.100.1, 203.0.113.9, 10.1.2.3").status_code == 200
    assert UsageLog.objects.get().client_ip == "203.0.113.9"
    assert call(relay_url, key, "203.0.113.9, 198.51.100.1").status_code == 403

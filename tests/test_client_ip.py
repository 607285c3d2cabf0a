"""The caller's IP: X-Forwarded-For counts only through TRUSTED_PROXIES, and only its hops
that are IP addresses.

The calls go through the running relay (``relay_url`` brings a transactional database); the
header's parsing is also checked on ``client_ip`` directly, case by case.
"""

import ipaddress

import httpx
import pytest

from accounts.services import create_api_key
from billing.models import UsageLog
from relay.auth import client_ip
from relay.responses import Request
from tests.conftest import settled_usage, wait_until_settled

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def call(relay_url: str, key: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    response = httpx.post(f"{relay_url}/v1/chat/completions", json=BODY, headers=headers)
    wait_until_settled()  # a call settles just after its answer is sent
    return response


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


def test_junk_hops_from_a_trusted_proxy_are_skipped_and_the_call_is_billed(
    relay_url, alice_key, openai_channel, settings, books_balance
):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert call(relay_url, alice_key, "hello, 203.0.113.9:5678, banana").status_code == 200
    assert call(relay_url, alice_key, "banana").status_code == 200
    # The usage rows were written (on PostgreSQL their column takes addresses only).
    assert [row.client_ip for row in settled_usage(2)] == ["203.0.113.9", "127.0.0.1"]
    books_balance()


def ip_behind_proxy(forwarded_for: str | None, peer: str | None = "10.0.0.1") -> str | None:
    headers = {} if forwarded_for is None else {"x-forwarded-for": forwarded_for}
    return client_ip(Request(method="POST", path="/v1/x", headers=headers, peer=peer))


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("hello, 1.2.3.4", "1.2.3.4"),
        ("1.2.3.4, hello", "1.2.3.4"),
        ("banana", "10.0.0.1"),
        ("", "10.0.0.1"),
        (None, "10.0.0.1"),
        (" , ,", "10.0.0.1"),
        ("999.1.2.3", "10.0.0.1"),
        ("1.2.3.4/24", "10.0.0.1"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("1.2.3.4:5678:9", "10.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[::1]:80", "::1"),
        ("[2001:db8::1", "10.0.0.1"),
        ("[banana]:80", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("203.0.113.9, junk, 10.1.2.3", "203.0.113.9"),
        ("203.0.113.9, [fd00::5]:8080", "203.0.113.9"),
        ("10.1.2.3, 10.4.5.6", "10.1.2.3"),  # every hop trusted: the farthest
        ("junk, 10.1.2.3", "10.1.2.3"),
    ],
)
def test_the_client_is_the_nearest_untrusted_hop_that_is_an_address(
    behind_proxy, forwarded_for, client
):
    assert ip_behind_proxy(forwarded_for) == client


def test_the_chosen_ip_is_always_an_address(behind_proxy):
    junk = ["", "x", ":", "::", "[]", "[", "]", ":80", "1.2.3", "1.2.3.4.5", "1:2", "a:b:c"]
    junk += ["%", "1.2.3.4%eth0", "::ffff:1.2.3.4", "0x7f.1", "\u0661.2.3.4", "\x00", "1.2.3.4 5"]
    for first in junk:
        for second in junk:
            chosen = ip_behind_proxy(f"{first}, {second}")
            ipaddress.ip_address(chosen)
            assert "%" not in chosen and chosen == chosen.strip()


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_the_header(behind_proxy):
    assert ip_behind_proxy("1.2.3.4", peer="198.51.100.7") == "198.51.100.7"

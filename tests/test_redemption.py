"""Redemption codes: made once, stored as a keyed hash, credited exactly once, guessing limited."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import User
from billing.models import LedgerEntry, RedemptionBatch, RedemptionCode, VipTier
from billing.redemption import (
    CODE_ALPHABET,
    CODE_PREFIX,
    RedemptionRefused,
    canonical,
    disable_codes,
    make_batch,
    redeem_code,
)

pytestmark = pytest.mark.django_db

FIVE_DOLLARS = 2_500_000


@pytest.fixture(autouse=True)
def no_wrong_guesses_yet():
    caches["guards"].clear()
    yield
    caches["guards"].clear()


def refused(user, code, ip="203.0.113.5") -> str:
    with pytest.raises(RedemptionRefused) as refusal:
        redeem_code(user=user, code=code, ip=ip)
    return refusal.value.reason


def test_a_code_carries_at_least_128_random_bits_in_a_typeable_form():
    _, codes = make_batch(name="launch", quota=FIVE_DOLLARS, count=20)
    assert len(set(codes)) == 20
    for code in codes:
        body = code.removeprefix(CODE_PREFIX)
        assert code.startswith(CODE_PREFIX) and len(body) == 26
        assert set(body) <= set(CODE_ALPHABET)  # 26 × 5 bits = 130 bits
        assert canonical(code) == body


def test_the_database_keeps_no_unused_code_in_clear():
    _, codes = make_batch(name="launch", quota=FIVE_DOLLARS, count=3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_redemptioncode")
        stored = repr(cursor.fetchall())
    for code in codes:
        body = canonical(code)
        assert body not in stored and body.lower() not in stored
    hints = set(RedemptionCode.objects.values_list("hint", flat=True))
    assert {f"{CODE_PREFIX}{canonical(code)[:4]}…{canonical(code)[-4:]}" for code in codes} == hints


def test_redeeming_credits_once_with_a_ledger_row_naming_the_code(alice, books_balance):
    _, [code] = make_batch(name="launch", quota=FIVE_DOLLARS, count=1)
    before = alice.quota
    assert redeem_code(user=alice, code=code, ip="203.0.113.5") == FIVE_DOLLARS
    alice.refresh_from_db()
    assert alice.quota == before + FIVE_DOLLARS
    row = RedemptionCode.objects.get()
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.REDEMPTION)
    assert (row.used_by, row.entry, entry.amount) == (alice, entry, FIVE_DOLLARS)
    assert f"code {row.id}" in entry.note
    assert refused(alice, code) == "used"
    alice.refresh_from_db()
    assert alice.quota == before + FIVE_DOLLARS
    books_balance()


def test_a_code_may_be_typed_loosely(alice):
    _, [code] = make_batch(name="launch", quota=100, count=1)
    body = canonical(code)
    typed = " " + "-".join(body[i : i + 5] for i in range(0, 26, 5)).lower() + " "
    typed = typed.replace("o", "0").replace("i", "1")
    assert redeem_code(user=alice, code="slc-" + typed, ip=None) == 100


def test_expired_and_disabled_codes_are_refused_and_stay_listed(alice, bob):
    _, [old] = make_batch(
        name="old", quota=100, count=1, expires_at=timezone.now() - timedelta(seconds=1)
    )
    _, [one, two] = make_batch(name="pair", quota=100, count=2)
    batch, [three] = make_batch(name="batch", quota=100, count=1)
    assert refused(alice, old) == "expired"
    disable_codes(codes=[RedemptionCode.objects.get(hint__startswith=one[:8]).id])
    assert refused(alice, one) == "disabled"
    assert redeem_code(user=bob, code=two, ip=None) == 100
    disable_codes(batch=batch)
    assert refused(alice, three) == "disabled"
    assert RedemptionCode.objects.count() == 4
    assert RedemptionCode.objects.get(used_by=bob).used_at is not None
    assert RedemptionBatch.objects.get(id=batch.id).disabled


def test_wrong_guesses_are_limited_per_user_with_a_message_that_says_so(alice, settings):
    settings.REDEEM_FAILURES_PER_USER = 3
    _, [code] = make_batch(name="launch", quota=100, count=1)
    for _ in range(3):
        assert refused(alice, "SLC-" + "A" * 26) == "unknown"
    with pytest.raises(RedemptionRefused) as refusal:
        redeem_code(user=alice, code=code, ip="203.0.113.5")
    assert refusal.value.reason == "too_many_attempts"
    assert "too many" in refusal.value.message.lower()
    assert not RedemptionCode.objects.filter(used_at__isnull=False).exists()


def test_wrong_guesses_are_limited_per_ip_across_users(alice, bob, settings):
    settings.REDEEM_FAILURES_PER_IP = 4
    for user in (alice, bob, alice, bob):
        assert refused(user, "SLC-" + "B" * 26, ip="198.51.100.7") == "unknown"
    carol = User.objects.create(username="carol2")
    assert refused(carol, "SLC-" + "C" * 26, ip="198.51.100.7") == "too_many_attempts"
    assert refused(carol, "SLC-" + "C" * 26, ip="198.51.100.8") == "unknown"


def test_redemption_is_closed_when_the_cache_is_unreachable(alice, monkeypatch):
    _, [code] = make_batch(name="launch", quota=100, count=1)

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(caches["guards"], "get_many", down)
    assert refused(alice, code) == "too_many_attempts"
    assert not RedemptionCode.objects.filter(used_at__isnull=False).exists()


def test_a_code_bound_to_a_tier_grants_its_group_and_credit(alice, books_balance):
    tier = VipTier.objects.create(name="VIP", group="vip", days=30, included_quota=1000)
    _, [code] = make_batch(name="vip codes", quota=0, count=1, tier=tier)
    before = alice.quota
    assert redeem_code(user=alice, code=code, ip=None) == 1000
    alice.refresh_from_db()
    assert (alice.group, alice.quota) == ("vip", before + 1000)
    books_balance()


def test_a_batch_worth_nothing_is_refused():
    with pytest.raises(ValueError):
        make_batch(name="empty", quota=0, count=1)
    with pytest.raises(ValueError):
        make_batch(name="many", quota=1, count=0)


def test_make_codes_writes_them_once_to_a_csv_file(tmp_path, alice):
    out = tmp_path / "codes.csv"
    call_command(
        "make_codes",
        "--count",
        "3",
        "--quota",
        "500000",
        "--name",
        "shop",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--out",
        str(out),
        stdout=io.StringIO(),
    )
    rows = list(csv.DictReader(out.open()))
    assert [row["quota"] for row in rows] == ["500000"] * 3
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    batch = RedemptionBatch.objects.get()
    assert (batch.name, batch.count, batch.expires_at.year) == ("shop", 3, 2099)
    assert redeem_code(user=alice, code=rows[0]["code"], ip=None) == 500_000


def test_make_codes_prints_them_when_no_file_is_named():
    printed = io.StringIO()
    call_command("make_codes", "--count", "2", "--quota", "100", stdout=printed)
    lines = printed.getvalue().strip().splitlines()
    assert lines[0].startswith("code,") and len(lines) == 3


@pytest.fixture
def ops_client(client, ops):
    ops.is_superuser = True
    ops.save()
    client.force_login(ops)
    return client


def test_admin_makes_a_batch_and_shows_its_codes_once(ops_client, alice):
    response = ops_client.post(
        "/admin/billing/redemptionbatch/add/",
        {"name": "admin batch", "quota": "1000", "count": "2", "expires_at_0": "", "tier": ""},
    )
    assert response.status_code == 200, response.content[:3000]
    page = response.content.decode()
    batch = RedemptionBatch.objects.get()
    assert batch.codes.count() == 2
    codes = sorted(set(re.findall(r"SLC-[A-Z2-7]{26}", page)))
    assert len(codes) == 2
    assert redeem_code(user=alice, code=codes[0], ip=None) == 1000
    listing = ops_client.get(f"/admin/billing/redemptionbatch/{batch.id}/change/").content.decode()
    assert codes[1] not in listing
    codes_page = ops_client.get("/admin/billing/redemptioncode/").content.decode()
    assert "alice" in codes_page and codes[1] not in codes_page


def test_admin_disables_a_batch(ops_client, alice):
    batch, [code] = make_batch(name="b", quota=100, count=1)
    response = ops_client.post(
        "/admin/billing/redemptionbatch/",
        {"action": "disable_batches", "_selected_action": [batch.id]},
    )
    assert response.status_code == 302
    assert refused(alice, code) == "disabled"


@pytest.mark.redis
def test_wrong_guesses_are_counted_in_redis_when_it_is_the_cache(alice, settings, redis_url):
    """Production: every process shares the count (only this test's keys are touched: other
    runs may share the tests' Redis database)."""
    import redis

    settings.CACHES = {
        **settings.CACHES,
        "guards": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        },
    }
    cache = caches["guards"]
    settings.REDEEM_FAILURES_PER_USER = 2
    ip = "192.0.2.77"
    names = [f"redeem-fail:user:{alice.id}", f"redeem-fail:ip:{ip}"]
    cache.delete_many(names)
    try:
        for _ in range(2):
            assert refused(alice, "SLC-" + "D" * 26, ip=ip) == "unknown"
        assert cache.get(names[0]) == 2
        stored = redis.Redis.from_url(redis_url).keys(f"*{names[0]}")
        assert stored, "the count lives in Redis"
        assert refused(alice, "SLC-" + "D" * 26, ip=ip) == "too_many_attempts"
    finally:
        cache.delete_many(names)


def test_admin_disables_single_codes_and_lists_them_by_status(ops_client, alice):
    _, [one, two] = make_batch(name="pair", quota=100, count=2)
    first = RedemptionCode.objects.get(hint__startswith=one[:8], hint__endswith=one[-4:])
    response = ops_client.post(
        "/admin/billing/redemptioncode/",
        {"action": "disable_codes", "_selected_action": [first.id]},
    )
    assert response.status_code == 302
    assert refused(alice, one) == "disabled"
    assert redeem_code(user=alice, code=two, ip=None) == 100
    disabled = ops_client.get("/admin/billing/redemptioncode/?status=disabled").content.decode()
    used = ops_client.get("/admin/billing/redemptioncode/?status=used").content.decode()
    assert first.hint in disabled and first.hint not in used
    assert ops_client.get(f"/admin/billing/redemptioncode/{first.id}/delete/").status_code == 403

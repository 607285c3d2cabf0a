"""VIP tiers: bought with balance or a code, they set the group for N days and end once."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import User
from billing import tasks
from billing.models import GroupRatio, LedgerEntry, TierMembership, VipTier
from billing.tiers import TierRefused, buy_tier, current_membership, end_expired_tiers

PRICE = 5_000_000  # $10
INCLUDED = 2_500_000  # $5


@pytest.fixture
def vip(db):
    GroupRatio.objects.create(name="vip", ratio=Decimal("0.9"))
    return VipTier.objects.create(
        name="VIP", group="vip", days=30, price=PRICE, included_quota=INCLUDED
    )


def ledger(user):
    return list(
        LedgerEntry.objects.filter(user=user, kind=LedgerEntry.Kind.VIP_PURCHASE)
        .order_by("id")
        .values_list("amount", flat=True)
    )


def test_buying_a_tier_pays_its_price_adds_its_credit_and_sets_the_group(alice, vip, books_balance):
    before = alice.quota
    membership = buy_tier(user=alice, tier=vip)
    alice.refresh_from_db()
    assert alice.group == "vip"
    assert alice.quota == before - PRICE + INCLUDED
    assert ledger(alice) == [-PRICE, INCLUDED]
    assert membership.ends_at - membership.started_at == timedelta(days=30)
    assert current_membership(alice) == membership
    books_balance()


@pytest.mark.django_db
def test_a_balance_that_cannot_pay_moves_nothing(vip, books_balance):
    poor = User.objects.create(username="poor")
    with pytest.raises(TierRefused) as refusal:
        buy_tier(user=poor, tier=vip)
    assert refusal.value.reason == "insufficient_balance"
    poor.refresh_from_db()
    assert (poor.group, poor.quota, ledger(poor)) == ("default", 0, [])
    assert not TierMembership.objects.exists()
    books_balance()


def test_a_tier_not_for_sale_is_refused(alice, vip):
    vip.is_active = False
    vip.save()
    with pytest.raises(TierRefused) as refusal:
        buy_tier(user=alice, tier=vip)
    assert refusal.value.reason == "unavailable"


def test_buying_the_same_tier_again_extends_it(alice, vip):
    first = buy_tier(user=alice, tier=vip)
    second = buy_tier(user=alice, tier=vip)
    assert second.id == first.id
    assert second.ends_at - first.started_at == timedelta(days=60)
    assert TierMembership.objects.count() == 1


def test_buying_another_tier_replaces_the_current_one(alice, vip):
    svip = VipTier.objects.create(name="SVIP", group="svip", days=7, price=0)
    buy_tier(user=alice, tier=vip)
    buy_tier(user=alice, tier=svip)
    alice.refresh_from_db()
    assert alice.group == "svip"
    assert TierMembership.objects.filter(ended_at=None).get().tier == svip
    assert TierMembership.objects.exclude(ended_at=None).get().tier == vip


def test_vip_expiry_restores_the_group_once(alice, vip, books_balance):
    membership = buy_tier(user=alice, tier=vip)
    assert end_expired_tiers() == 0  # not yet
    TierMembership.objects.filter(id=membership.id).update(
        ends_at=timezone.now() - timedelta(seconds=1)
    )
    balance = User.objects.get(id=alice.id).quota
    assert tasks.end_expired_tiers() == 1  # the beat task
    assert end_expired_tiers() == 0
    alice.refresh_from_db()
    assert alice.group == "default"
    assert alice.quota == balance  # ending moves no money
    assert TierMembership.objects.get().ended_at is not None
    assert current_membership(alice) is None
    books_balance()


def test_an_operator_who_moved_the_user_meanwhile_keeps_the_last_word(alice, vip):
    membership = buy_tier(user=alice, tier=vip)
    alice.refresh_from_db()
    alice.group = "partner"
    alice.save()
    TierMembership.objects.filter(id=membership.id).update(ends_at=timezone.now())
    assert end_expired_tiers() == 1
    assert User.objects.get(id=alice.id).group == "partner"


def test_beat_ends_tiers():
    [entry] = [
        each
        for each in settings.CELERY_BEAT_SCHEDULE.values()
        if each["task"] == "billing.tasks.end_expired_tiers"
    ]
    assert entry["schedule"] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_end_a_membership_once(alice, vip, books_balance):
    membership = buy_tier(user=alice, tier=vip)
    TierMembership.objects.filter(id=membership.id).update(ends_at=timezone.now())
    start = threading.Barrier(8)

    def sweep(_):
        try:
            start.wait()
            return end_expired_tiers()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(sweep, range(8))) == 1
    assert User.objects.get(id=alice.id).group == "default"
    books_balance()


# --- The user admin's group --------------------------------------------------------------


@pytest.fixture
def ops_client(client, ops):
    ops.is_superuser = True
    ops.save()
    client.force_login(ops)
    return client


def user_form_data(ops_client, user):
    page = ops_client.get(f"/admin/accounts/user/{user.id}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update({"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    data.pop("password", None)
    data.pop("last_login", None)
    return data, form


def test_the_user_admin_offers_only_groups_that_exist(ops_client, alice, vip):
    data, form = user_form_data(ops_client, alice)
    assert [name for name, _ in form.fields["group"].choices] == ["default", "vip"]
    data["group"] = "vpi"  # a typo
    response = ops_client.post(f"/admin/accounts/user/{alice.id}/change/", data)
    assert response.status_code == 200  # the form again, with the error
    assert User.objects.get(id=alice.id).group == "default"
    data["group"] = "vip"
    response = ops_client.post(f"/admin/accounts/user/{alice.id}/change/", data)
    assert response.status_code == 302
    assert User.objects.get(id=alice.id).group == "vip"


def test_the_next_call_after_buying_a_tier_pays_the_tiers_ratio(
    alice, alice_key, vip, openai_channel, make_openai, mock_upstream, relay_url
):
    openai_channel.groups = [*openai_channel.groups, "vip"]
    openai_channel.save()
    client = make_openai(alice_key)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    client.chat.completions.create(**ask)  # the key is now cached with the default group
    buy_tier(user=alice, tier=vip)
    client.chat.completions.create(**ask)
    from tests.conftest import settled_usage

    before, after = settled_usage(2)
    assert (before.group_ratio, after.group_ratio) == (Decimal(1), Decimal("0.9"))


def test_the_tier_admin_offers_only_groups_that_exist(ops_client, vip):
    page = ops_client.get("/admin/billing/viptier/add/")
    choices = [name for name, _ in page.context["adminform"].form.fields["group"].choices]
    assert choices == ["default", "vip"]
    response = ops_client.post(
        "/admin/billing/viptier/add/",
        {"name": "typo", "group": "vpi", "days": "30", "price": "0", "included_quota": "0"},
    )
    assert response.status_code == 200
    assert not VipTier.objects.filter(name="typo").exists()

"""Invites and trial credit: what a new account gets, what its inviter gets, and how trial credit
leaves when it expires (never more than what is left of it, never paid money, exactly once)."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import SiteSettings, User
from accounts.services import create_api_key, create_user
from billing import services, trials
from billing.models import LedgerEntry, TrialGrant
from billing.operations import CallRecord, InsufficientQuota
from billing.pricing import Price, TokenUsage
from billing.tasks import expire_trials as expire_trials_task

PASSWORD = "a-long-Pass-phrase-7"
TRIAL = 1_000_000  # $2
INVITER_REWARD = 300_000
INVITEE_REWARD = 200_000
FLAT = Price("flat", Decimal(1), Decimal(1), Decimal(1), Decimal(1), None, False, None)
CALL = CallRecord(endpoint="chat", model="flat")


@pytest.fixture
def generous_site(db):
    site = SiteSettings.current()
    site.trial_quota, site.trial_days = TRIAL, 7
    site.inviter_reward, site.invitee_reward = INVITER_REWARD, INVITEE_REWARD
    site.save()
    return site


def sign_up(client, path: str, username: str = "dora") -> User:
    client.get(path)
    response = client.post(
        "/accounts/signup/",
        {
            "username": username,
            "email": f"{username}@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 302, response.content
    return User.objects.get(username=username)


def kinds(user) -> list[tuple[str, int]]:
    return list(LedgerEntry.objects.filter(user=user).order_by("id").values_list("kind", "amount"))


def spend(user, amount: int) -> None:
    """A settled call costing ``amount`` (1 quota per input token at the flat price)."""
    key, _ = create_api_key(user=user)
    hold = services.reserve_quota(
        user_id=user.id, api_key_id=key.id, unlimited_key=True, amount=amount
    )
    services.settle_hold(
        hold=hold,
        price=FLAT,
        group_ratio=Decimal(1),
        usage=TokenUsage(input_tokens=amount),
        call=CALL,
    )


@pytest.mark.django_db
def test_signing_up_through_an_invite_link_records_the_inviter_and_rewards_both(
    client, alice, generous_site, books_balance
):
    dora = sign_up(client, f"/register?aff={alice.invite_code}")
    assert dora.inviter == alice
    assert dora.quota == TRIAL + INVITEE_REWARD
    assert kinds(dora) == [("trial", TRIAL), ("invite_reward", INVITEE_REWARD)]
    trial = TrialGrant.objects.get(user=dora)
    assert trial.amount == TRIAL and trial.closed_at is None
    assert timedelta(days=7) - (trial.expires_at - timezone.now()) < timedelta(minutes=1)
    reward = LedgerEntry.objects.get(user=alice, kind="invite_reward")
    assert (reward.amount, reward.note) == (INVITER_REWARD, "invited dora")
    alice.refresh_from_db()
    assert alice.quota == 10_000_000 + INVITER_REWARD
    books_balance()


@pytest.mark.django_db
def test_the_invite_code_works_on_the_allauth_sign_up_page_too(client, alice, generous_site):
    dora = sign_up(client, f"/accounts/signup/?aff={alice.invite_code}")
    assert dora.inviter == alice


@pytest.mark.django_db
def test_the_sign_up_page_tells_what_a_new_account_gets(client, alice, generous_site):
    page = client.get(f"/register?aff={alice.invite_code}").text
    assert "New accounts get $2" in page and "It lasts 7 days" in page
    assert "you get $0.4" in page


@pytest.mark.django_db
def test_without_an_invite_or_with_an_unknown_code_only_the_trial_is_given(
    client, alice, generous_site, books_balance
):
    dora = sign_up(client, "/register?aff=no-such-code")
    assert dora.inviter is None
    assert kinds(dora) == [("trial", TRIAL)]
    assert not LedgerEntry.objects.filter(kind="invite_reward").exists()
    books_balance()


@pytest.mark.django_db
def test_with_no_trial_and_no_rewards_set_a_new_account_starts_empty(client, alice):
    dora = sign_up(client, f"/register?aff={alice.invite_code}")
    assert dora.inviter == alice  # still recorded, for the invite page's count
    assert (dora.quota, kinds(dora), TrialGrant.objects.count()) == (0, [], 0)


@pytest.mark.django_db
def test_accounts_made_by_the_operator_get_no_trial(generous_site):
    user = create_user(username="shell-made", password=PASSWORD)
    assert (user.quota, kinds(user)) == (0, [])


@pytest.mark.django_db
def test_a_trial_with_zero_days_never_expires(generous_site):
    generous_site.trial_days = 0
    generous_site.save()
    user = create_user(username="dora")
    trial = trials.grant_trial(user=user, amount=TRIAL, days=0)
    assert trial.expires_at is None
    assert trials.expire_trials(now=timezone.now() + timedelta(days=3650)) == 0
    user.refresh_from_db()
    assert user.quota == TRIAL


@pytest.mark.django_db
def test_expiry_takes_only_what_is_left_of_the_trial_and_never_paid_money(books_balance):
    user = create_user(username="dora")
    trial = trials.grant_trial(user=user, amount=TRIAL, days=7)
    services.grant(user=user, amount=5_000_000, kind=LedgerEntry.Kind.TOPUP, note="paid $10")
    spend(user, 400_000)  # counted against the trial first
    later = timezone.now() + timedelta(days=8)

    assert trials.expire_trials(now=timezone.now()) == 0  # not due yet
    assert trials.expire_trials(now=later) == 1
    user.refresh_from_db()
    assert user.quota == 5_000_000  # the whole paid $10 is left
    expiry = LedgerEntry.objects.get(user=user, kind="trial_expiry")
    assert expiry.amount == -(TRIAL - 400_000)
    trial.refresh_from_db()
    assert trial.closed_at is not None and trial.expired_amount == TRIAL - 400_000
    books_balance()


@pytest.mark.django_db
def test_a_trial_spent_in_full_expires_with_nothing_taken_and_no_ledger_row(books_balance):
    user = create_user(username="dora")
    trials.grant_trial(user=user, amount=TRIAL, days=1)
    services.grant(user=user, amount=500_000, kind=LedgerEntry.Kind.TOPUP)
    spend(user, TRIAL + 100_000)
    assert trials.expire_trials(now=timezone.now() + timedelta(days=2)) == 1
    user.refresh_from_db()
    assert user.quota == 400_000
    assert not LedgerEntry.objects.filter(kind="trial_expiry").exists()
    assert TrialGrant.objects.get(user=user).expired_amount == 0
    books_balance()


@pytest.mark.django_db
def test_expiry_never_takes_more_than_the_balance(books_balance):
    user = create_user(username="dora")
    trials.grant_trial(user=user, amount=TRIAL, days=1)
    # Money left by another way than a settled call (an operator took some back).
    services.grant(user=user, amount=-900_000, note="chargeback")
    trials.expire_trials(now=timezone.now() + timedelta(days=2))
    user.refresh_from_db()
    assert user.quota == 0
    assert LedgerEntry.objects.get(kind="trial_expiry").amount == -100_000
    books_balance()


@pytest.mark.django_db
def test_each_grant_expires_exactly_once_and_the_beat_task_runs_it(books_balance):
    user = create_user(username="dora")
    trial = trials.grant_trial(user=user, amount=TRIAL, days=1)
    TrialGrant.objects.filter(id=trial.id).update(expires_at=timezone.now() - timedelta(hours=1))
    assert expire_trials_task.apply().get() == 1
    assert expire_trials_task.apply().get() == 0
    assert trials.expire_trial(trial_id=trial.id) is None
    assert LedgerEntry.objects.filter(kind="trial_expiry").count() == 1
    user.refresh_from_db()
    assert user.quota == 0
    books_balance()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_expiry_racing_calls_keeps_the_books_and_the_balance_never_below_zero(books_balance):
    """Calls spend trial credit while the expiry runs: whatever the interleaving, the books
    balance, the balance stays at or above zero, and the trial ends exactly once."""
    users = [create_user(username=f"racer{n}") for n in range(6)]
    for user in users:
        trials.grant_trial(user=user, amount=100_000, days=1)
    TrialGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    keys = {user.id: create_api_key(user=user)[0] for user in users}
    start = threading.Barrier(len(users) + 2)

    def calls(user):
        try:
            start.wait()
            for _ in range(15):
                try:
                    hold = services.reserve_quota(
                        user_id=user.id,
                        api_key_id=keys[user.id].id,
                        unlimited_key=True,
                        amount=5_000,
                    )
                except InsufficientQuota:
                    return
                services.settle_hold(
                    hold=hold,
                    price=FLAT,
                    group_ratio=Decimal(1),
                    usage=TokenUsage(input_tokens=4_000),
                    call=CALL,
                )
        finally:
            connection.close()

    ended = []

    def expiry():
        try:
            start.wait()
            ended.append(trials.expire_trials())
        finally:
            connection.close()

    threads = [threading.Thread(target=calls, args=(user,)) for user in users]
    threads += [threading.Thread(target=expiry), threading.Thread(target=expiry)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(ended) == len(users)  # each grant ended once, by one of the two sweeps
    assert LedgerEntry.objects.filter(kind="trial_expiry").count() <= len(users)
    for user in users:
        user.refresh_from_db()
        assert user.quota >= 0
        trial = TrialGrant.objects.get(user=user)
        consumed = trials.consumed_since(user_id=user.id, since=trial.entry.created_at)
        # What was taken plus what was spent is never more than the trial gave.
        assert trial.expired_amount + consumed <= trial.amount
    books_balance()

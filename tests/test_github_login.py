"""GitHub login, the whole OAuth round trip, against a loopback fake of GitHub (tests/fake_github):
sign up with GitHub (through an invite too), sign in again, link and unlink GitHub on an
existing account, and what happens when the person cancels on GitHub's page."""

import pytest
from allauth.socialaccount.models import SocialAccount

from accounts.models import SiteSettings, User
from billing.models import LedgerEntry
from tests.fake_github import CLIENT_SECRET, fake_github, fake_github_server  # noqa: F401

pytestmark = pytest.mark.django_db


def through_github(client, fake, *, process: str = "login") -> object:
    """Leave for "GitHub" (a POST, with the session's CSRF protection), click Authorize there,
    come back to the callback; the site's answer to the callback."""
    response = client.post(f"/accounts/github/login/?process={process}")
    assert response.status_code == 302
    assert response["Location"].startswith(f"{fake.url}/login/oauth/authorize?")
    return client.get(fake.authorize(response["Location"]))


def test_signing_up_with_github_makes_an_account_with_the_verified_email(
    client,
    fake_github,  # noqa: F811
):
    response = through_github(client, fake_github)
    assert response.status_code == 302 and response["Location"] == "/dashboard"
    account = SocialAccount.objects.get(provider="github", uid="4242")
    user = account.user
    assert (user.username, user.email) == ("octocat", "octocat@example.com")
    assert not user.has_usable_password()
    assert client.session["_auth_user_id"] == str(user.id)
    # The site traded the code with its secret, then read the profile with the token.
    [exchange] = fake_github.token_requests
    assert exchange["client_secret"] == CLIENT_SECRET
    assert ("GET", "/api/v3/user") in fake_github.requests


def test_github_sign_up_through_an_invite_gets_the_trial_and_both_rewards(
    client,
    alice,
    fake_github,  # noqa: F811
    books_balance,
):
    site = SiteSettings.current()
    site.trial_quota, site.trial_days = 1_000_000, 3
    site.inviter_reward, site.invitee_reward = 300_000, 200_000
    site.save()
    client.get(f"/register?aff={alice.invite_code}")  # the invite link, then "GitHub"
    through_github(client, fake_github)
    user = User.objects.get(username="octocat")
    assert user.inviter == alice
    assert sorted(LedgerEntry.objects.filter(user=user).values_list("kind", "amount")) == [
        ("invite_reward", 200_000),
        ("trial", 1_000_000),
    ]
    assert LedgerEntry.objects.get(user=alice, kind="invite_reward").amount == 300_000
    books_balance()


def test_signing_in_again_with_github_finds_the_same_account_and_grants_nothing_twice(
    client,
    fake_github,  # noqa: F811
):
    site = SiteSettings.current()
    site.trial_quota = 1_000_000
    site.save()
    through_github(client, fake_github)
    client.post("/accounts/logout/")
    response = through_github(client, fake_github)
    assert response.status_code == 302
    assert User.objects.filter(username__startswith="octocat").count() == 1
    assert LedgerEntry.objects.filter(kind="trial").count() == 1


def test_a_person_links_github_to_their_account_and_unlinks_it(
    client,
    alice,
    fake_github,  # noqa: F811
):
    client.force_login(alice)
    fake_github.sign_in_as(login="alice-gh", id=777, email="alice@example.com")
    response = through_github(client, fake_github, process="connect")
    assert response.status_code == 302 and response["Location"] == "/accounts/3rdparty/"
    account = SocialAccount.objects.get(provider="github", uid="777")
    assert account.user == alice
    page = client.get("/accounts/3rdparty/")
    assert page.status_code == 200 and "alice-gh" in page.text

    # Signing out, then in with GitHub, reaches alice's account.
    client.post("/accounts/logout/")
    through_github(client, fake_github)
    assert client.session["_auth_user_id"] == str(alice.id)

    response = client.post("/accounts/3rdparty/", {"account": account.id})
    assert response.status_code == 302
    assert not SocialAccount.objects.filter(user=alice).exists()


def test_github_sign_up_is_refused_when_sign_up_is_closed(client, fake_github):  # noqa: F811
    site = SiteSettings.current()
    site.registration_open = False
    site.save()
    response = through_github(client, fake_github)
    assert response.status_code == 200 and "Sign Up Closed" in response.text
    assert not User.objects.exists()


def test_cancelling_on_github_leaves_no_account_and_says_so(client, fake_github):  # noqa: F811
    fake_github.deny = True
    response = through_github(client, fake_github)
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert page.status_code == 200 and "cancel" in page.text.lower()
    assert '<link rel="stylesheet"' in page.text  # inside the site's frame
    assert not User.objects.exists()


def test_a_github_account_with_a_taken_email_must_finish_on_the_form_and_takes_nothing(
    client,
    alice,
    fake_github,  # noqa: F811
):
    """A GitHub account claiming alice's address does not sign in as alice: it is asked to
    finish signing up with an address of its own."""
    fake_github.sign_in_as(login="mallory", id=666, email="alice@example.com")
    response = through_github(client, fake_github)
    assert response["Location"] == "/accounts/3rdparty/signup/"
    page = client.get("/accounts/3rdparty/signup/")
    assert "account to login to\nSluice" in page.text or "login to Sluice" in page.text
    assert '<link rel="stylesheet"' in page.text
    assert client.session.get("_auth_user_id") != str(alice.id)
    assert not SocialAccount.objects.filter(user=alice).exists()

    response = client.post(
        "/accounts/3rdparty/signup/", {"username": "mallory", "email": "mallory@example.com"}
    )
    assert response.status_code == 302
    mallory = User.objects.get(username="mallory")
    assert SocialAccount.objects.get(uid="666").user == mallory

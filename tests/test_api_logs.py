"""REST API: a person's calls, filtered and paged by cursor, never anyone else's."""

import pytest

from accounts.services import create_api_key
from accounts.tokens import create_access_token
from billing.models import UsageLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, alice):
    _, token = create_access_token(user=alice, name="tests")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def call(user, key=None, model="gpt-4o", quota=10):
    return UsageLog.objects.create(
        user=user, api_key=key, endpoint="chat", model=model, quota=quota, input_tokens=5
    )


def test_logs_are_mine_newest_first_and_paged_by_cursor(api, alice, bob):
    mine = [call(alice, quota=n) for n in range(5)]
    call(bob)
    seen, url = [], "/api/logs?page_size=2"
    while url:
        page = api.get(url)
        assert page.status_code == 200
        body = page.json()
        assert len(body["results"]) <= 2
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert seen == [row.id for row in reversed(mine)]
    first = api.get("/api/logs").json()["results"][0]
    assert first["quota"] == 4 and first["usd"] == "0.000008"
    assert "prompt" not in first and "messages" not in first


def test_logs_filter_by_key_model_and_time(api, alice, bob):
    key, _ = create_api_key(user=alice)
    bobs_key, _ = create_api_key(user=bob)
    one = call(alice, key=key, model="gpt-4o-mini")
    call(alice, model="gpt-4o")
    call(bob, key=bobs_key, model="gpt-4o-mini")
    ids = lambda query: [row["id"] for row in api.get(f"/api/logs?{query}").json()["results"]]  # noqa: E731
    assert ids(f"key={key.id}") == [one.id]
    assert ids("model=gpt-4o-mini") == [one.id]
    assert ids(f"key={bobs_key.id}") == []  # someone else's key: nothing
    assert ids("start=2000-01-01T00:00:00Z&end=2000-01-02T00:00:00Z") == []
    assert len(ids("start=2000-01-01T00:00:00Z")) == 2


@pytest.mark.parametrize("query", ["start=yesterday", "key=abc", "status=great", "cursor=zzz"])
def test_bad_filters_are_a_400_or_404(api, alice, query):
    call(alice)
    assert api.get(f"/api/logs?{query}").status_code in ({400} if "cursor" not in query else {404})

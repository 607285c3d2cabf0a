"""Shared fixtures: the named people, channels to the mock upstream, and the running relay.

The relay is served for real: uvicorn runs ``config.asgi.application`` in a thread of the test
process, on a loopback port, against the test database; the mock upstream (tests/mock_upstream)
is another loopback server. Tests that call it use ``transactional_db`` so the server's own
connections see their rows.

``REQUIRE_SERVICES=1`` (CI) turns a missing PostgreSQL or Redis from a skip into a failure.

Redis: the tests use one database of their own, ``TEST_REDIS_URL`` (default db 15), and flush
it only when it is empty or carries the tests' mark (``REDIS_MARK``, set the first time), so a
database someone else uses is never flushed. ``REDIS_URL`` (the settings' cache, which the
``fresh_caches`` fixture clears, a FLUSHDB on Redis) must be unset, or that same database.
"""

import os
import socket
import threading
import time

import anthropic
import httpx
import openai
import pytest
import uvicorn
from django.conf import settings as django_settings
from django.db import connection

from accounts.services import create_api_key, create_user
from billing import services as billing
from billing.default_prices import load_default_prices
from billing.models import ModelPrice
from billing.reconcile import reconcile
from relay.models import Channel
from tests.mock_upstream import mock_upstream  # noqa: F401 (a fixture)

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REDIS_MARK = "sluice-tests:this-database-belongs-to-the-test-suite"
UPSTREAM_KEY = "upstream-test-key"
ALICE_CREDIT = 10_000_000  # quota units: $20


def pytest_configure(config):
    # Hashing with Django's default (PBKDF2, a million rounds) is most of the time of a test
    # that creates users; the tests check who may do what, not the hash's strength.
    django_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The test servers run inside this process: freezing its heap at each start would keep
    # every earlier test's cyclic garbage for good (tests/test_health.py tries the freeze).
    django_settings.FREEZE_HEAP_AT_START = False
    _flush_by_delete_on_postgres()
    if django_settings.REDIS_URL:
        if redis_database(django_settings.REDIS_URL) != redis_database(TEST_REDIS_URL):
            raise pytest.UsageError(
                f"REDIS_URL is {django_settings.REDIS_URL}: the tests clear the cache, which "
                "flushes that Redis database. Unset REDIS_URL (scripts/test does) or set it to "
                f"the tests' own database, TEST_REDIS_URL ({TEST_REDIS_URL})."
            )
        problem = claim_redis(TEST_REDIS_URL)
        if problem:
            raise pytest.UsageError(problem)


def _flush_by_delete_on_postgres() -> None:
    """Empty the tables after a transactional test with DELETE rather than Django's TRUNCATE.

    TRUNCATE gives every table, index and TOAST table new files: on PostgreSQL that made each
    transactional test's teardown take about 0.4 s on a slow machine, some 40 % of the
    PostgreSQL pass. The tests leave a few rows each, which DELETE removes in milliseconds;
    every foreign key Django makes is deferred to the commit, so the order does not matter.
    Sequences are left alone, as TRUNCATE without RESTART IDENTITY leaves them (Django's flush
    runs all of it in one transaction)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or not tables:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        names = [self.quote_name(table) for table in tables]
        # The locks TRUNCATE would take, all at once: a ledger batch still running after its
        # test is waited for, as before, rather than deadlocked with row by row.
        lock = f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE;"
        return [lock] + [f"DELETE FROM {name};" for name in names]

    DatabaseOperations.sql_flush = sql_flush


def need_service(name: str, reason: str) -> None:
    """Skip a test whose service is missing, or fail it when CI requires services."""
    message = f"{name} is not available: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("postgres"):
            item.fixturenames.insert(0, "require_postgres")


@pytest.fixture
def require_postgres():
    if connection.vendor != "postgresql":
        need_service("PostgreSQL", "run with DATABASE_URL pointing at PostgreSQL (make test)")


def redis_database(url: str) -> tuple:
    """(host, port, database number) of a Redis URL: which database it names."""
    import redis

    options = redis.connection.parse_url(url)
    return (options.get("host", "localhost"), options.get("port", 6379), options.get("db", 0))


_claimed_redis: set[tuple] = set()


def claim_redis(url: str) -> str | None:
    """Mark ``url``'s database as the tests' own, once per session; why not, if it is not
    theirs to flush: database 0 (everybody's default), or one holding keys without the mark
    (someone else's data, or a typo in ``TEST_REDIS_URL``)."""
    import redis

    database = redis_database(url)
    if database in _claimed_redis:
        return None
    if database[2] == 0:
        return f"{url}: the tests flush their Redis database; give them one of their own (not 0)"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        if client.dbsize() and not client.exists(REDIS_MARK):
            return (
                f"{url} holds keys the tests did not write (no {REDIS_MARK!r} key): not flushing "
                "it. Point TEST_REDIS_URL at an empty database, or flush this one yourself."
            )
        client.set(REDIS_MARK, "1")
    finally:
        client.close()
    _claimed_redis.add(database)
    return None


def flush_test_redis(url: str) -> None:
    """Empty the tests' own Redis database (claimed by the ``redis_url`` fixture)."""
    import redis

    assert redis_database(url) in _claimed_redis, f"{url} is not the tests' database"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        client.set(REDIS_MARK, "1")
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url():
    """The tests' own Redis database (``TEST_REDIS_URL``), claimed: safe to flush."""
    import redis

    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as problem:
        need_service("Redis", str(problem))
    problem = claim_redis(TEST_REDIS_URL)
    if problem:
        pytest.fail(problem)
    return TEST_REDIS_URL


@pytest.fixture(autouse=True)
def shipped_prices(request):
    """The default price table, as a migrated site has it (a transactional test's flush
    empties every table, data migrations' rows included)."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(
        request.fixturenames
    )
    if uses_db:
        request.getfixturevalue("db" if "db" in request.fixturenames else "transactional_db")
        load_default_prices(ModelPrice)


@pytest.fixture(autouse=True)
def fresh_caches():
    """Cached keys, prices, channels and spent balances must not leak from one test's database
    to the next: every copy goes, in this process and in the shared cache (config.cache); so do
    the settlements the ledger writer's journal keeps (billing.journal), which would otherwise
    be made again in the next test's database."""
    from billing import journal, writer
    from config.cache import forget_all
    from relay import ready_holds

    forget_all()
    journal.forget()
    writer.forget()
    ready_holds.forget()
    _clear_local_guards()
    yield
    forget_all()
    journal.forget()
    writer.forget()
    ready_holds.forget()


def _clear_local_guards() -> None:
    """Counts of wrong guesses (codes, keys) start at zero in every test: only a cache in this
    process's memory is cleared, never a Redis database."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["guards"], LocMemCache):
        caches["guards"].clear()


@pytest.fixture(autouse=True)
def no_ready_holds(settings):
    """Calls place their own holds unless a test turns ready holds on (tests/test_ready_holds.py):
    holds placed ahead would show in the balances the tests check."""
    settings.RELAY_READY_HOLDS = 0


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, which it drops at the end: by then the ledger writer
    must have handed its connection back (it keeps it while calls keep coming)."""
    yield
    from billing import writer

    writer.let_go(timeout=writer.IDLE_SECONDS + 5)


@pytest.fixture(autouse=True, scope="session")
def no_journal_of_earlier_runs():
    """Settlements an earlier test run left in its journal belong to databases long gone."""
    import shutil

    from billing import journal

    shutil.rmtree(journal.journal_folder(), ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """uvicorn serving the ASGI app in a background thread, with the protocol production uses
    (``http``: config.server's guarded httptools or h11)."""

    def __init__(
        self,
        app: str = "config.asgi:application",
        http: str = "config.server:GuardedHttpToolsProtocol",
    ):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
                http=http,
                # Client IPs are Sluice's business (TRUSTED_PROXIES), not uvicorn's.
                proxy_headers=False,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the relay server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def relay_server():
    server = ServerThread().start()
    yield server
    server.stop()


@pytest.fixture
def relay_url(relay_server, transactional_db):
    """Base URL of the running relay (without /v1), with committed test data visible to it.

    At teardown it waits for the calls the test left in flight (a client that stops reading
    at [DONE] is ahead of the settlement) so none of them settles into the next test's tables.
    """
    yield relay_server.url
    from relay.calls import calls_in_flight

    eventually(lambda: calls_in_flight() == 0, timeout=15)


# --- The named people ----------------------------------------------------------------------


@pytest.fixture
def alice(db):
    """A user with $20 of credit."""
    user = create_user(username="alice", password="alice-password", email="alice@example.com")
    billing.grant(user=user, amount=ALICE_CREDIT, note="test credit")
    return user


@pytest.fixture
def bob(db):
    """Another user, who must never see alice's things."""
    user = create_user(username="bob", password="bob-password")
    billing.grant(user=user, amount=ALICE_CREDIT, note="test credit")
    return user


@pytest.fixture
def carol(db):
    """A reseller (marked so by the operator: she may carve sub-keys)."""
    user = create_user(username="carol", password="carol-password", group="reseller")
    user.is_reseller = True
    user.save(update_fields=["is_reseller"])
    billing.grant(user=user, amount=ALICE_CREDIT, note="test credit")
    return user


@pytest.fixture
def ops(db):
    """An operator."""
    return create_user(username="ops", password="ops-password", is_staff=True)


@pytest.fixture
def alice_key(alice) -> str:
    """Alice's unlimited key, in clear."""
    _, key = create_api_key(user=alice, name="alice's key")
    return key


# --- Channels to the mock upstream ---------------------------------------------------------


def add_channel(
    upstream_url: str,
    *,
    type="openai",
    name=None,
    models=(),
    key=UPSTREAM_KEY,
    groups=("default", "reseller"),
    **fields,
) -> Channel:
    """A channel to a mock upstream (fields: priority, weight, model_mapping, status...)."""
    channel = Channel(
        type=type,
        name=name or f"{type} mock",
        base_url=upstream_url,
        served_models=list(models),
        groups=list(groups),
        **fields,
    )
    channel.set_key(key)
    channel.save()
    return channel


OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")


@pytest.fixture
def openai_channel(mock_upstream, db) -> Channel:  # noqa: F811
    return add_channel(mock_upstream.url, models=OPENAI_MODELS)


@pytest.fixture
def anthropic_channel(mock_upstream, db) -> Channel:  # noqa: F811
    return add_channel(mock_upstream.url, type="anthropic", models=ANTHROPIC_MODELS)


def wait_until_settled(timeout: float = 10.0) -> bool:
    """Wait until the test server has closed every call it admitted: a call is settled (or
    released) just after its answer reached the client, not before."""
    from relay.calls import calls_in_flight

    return bool(eventually(lambda: calls_in_flight() == 0, timeout=timeout))


def settled_after_whole_answers(response: httpx.Response) -> None:
    """An SDK client's response hook: once a whole (non-stream) answer is in, wait for its
    settlement, so a test reads the books as the call left them."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        response.read()
        wait_until_settled()


def settling_http_client(sdk) -> httpx.Client:
    """The SDK's own httpx client, waiting for the settlement of each whole answer."""
    return sdk.DefaultHttpxClient(event_hooks={"response": [settled_after_whole_answers]})


@pytest.fixture
def make_openai(relay_url):
    def make(key: str, **options) -> openai.OpenAI:
        options.setdefault("http_client", settling_http_client(openai))
        return openai.OpenAI(
            base_url=f"{relay_url}/v1",
            api_key=key,
            max_retries=options.pop("max_retries", 0),
            **options,
        )

    return make


@pytest.fixture
def make_anthropic(relay_url):
    def make(key: str, **options) -> anthropic.Anthropic:
        options.setdefault("http_client", settling_http_client(anthropic))
        return anthropic.Anthropic(
            base_url=relay_url, api_key=key, max_retries=options.pop("max_retries", 0), **options
        )

    return make


def eventually(check, *, timeout: float = 10.0):
    """Poll until ``check()`` is truthy and return its value (a stream is settled just after
    its last event reaches the client, so a test that read to the end waits a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def settled_usage(count: int = 1):
    """The journal rows, once ``count`` calls have settled."""
    from billing.models import UsageLog

    rows = eventually(
        lambda: (
            len(UsageLog.objects.all()[:count]) >= count and list(UsageLog.objects.order_by("id"))
        )
    )
    assert rows, f"expected {count} settled call(s)"
    return rows


@pytest.fixture
def books_balance():
    """Assert that every user's and key's books balance (billing.reconcile)."""

    def check():
        problems = reconcile()
        assert problems == [], "\n".join(map(str, problems))

    return check

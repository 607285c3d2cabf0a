"""Per-process memos stay bounded however many distinct keys callers make up."""

import asyncio
import threading
import tracemalloc

from config import cache
from config.cache import LocalMemo
from relay import auth


def test_a_memo_keeps_no_more_than_its_bound_however_many_keys_are_put():
    memo = LocalMemo(seconds=60, max_entries=1_000)
    for number in range(12_000):
        memo.put(f"model-{number}", number)
    assert len(memo) == 1_000


def test_a_memo_is_bounded_by_the_setting_unless_told_otherwise(settings):
    settings.RELAY_LOCAL_CACHE_ENTRIES = 50
    memo = LocalMemo(seconds=60)
    for number in range(10_001):
        memo.put(number, number)
    assert len(memo) == 50


def test_the_most_recently_used_entries_survive():
    memo = LocalMemo(seconds=60, max_entries=100)
    for number in range(100):
        memo.put(number, f"value {number}")
    assert memo.lookup(0) == (True, "value 0")  # read again: now the most recent
    for number in range(100, 150):
        memo.put(number, f"value {number}")
    assert memo.lookup(0) == (True, "value 0")
    assert memo.lookup(1) == (False, None)  # the least recently used went first
    assert memo.lookup(50) == (False, None)
    assert all(memo.lookup(number)[0] for number in range(51, 150))


def test_putting_a_known_key_again_makes_it_recent_without_growing():
    memo = LocalMemo(seconds=60, max_entries=3)
    for key in "abc":
        memo.put(key, key)
    memo.put("a", "again")
    memo.put("d", "d")
    assert len(memo) == 3
    assert memo.lookup("a") == (True, "again")
    assert memo.lookup("b") == (False, None)


def test_an_expired_entry_is_dropped_when_met():
    memo = LocalMemo(seconds=0, max_entries=10)
    memo.put("price:gpt-4o", 1)
    assert memo.lookup("price:gpt-4o") == (False, None)
    assert len(memo) == 0


def test_the_memory_of_a_memo_fed_large_values_stays_within_its_entries():
    bound, value_size = 10, 100_000
    memo = LocalMemo(seconds=60, max_entries=bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(1_000):
            memo.put(f"model-{number}", b"%d" % number + bytes(value_size))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Unbounded, this would be 1,000 values (100 MB); kept are `bound` of them, plus overhead.
    assert len(memo) == bound
    assert held < (bound + 2) * value_size


def test_a_memo_cleared_from_another_thread_stays_whole():
    memo = LocalMemo(seconds=60, max_entries=100)
    failures = []
    done = threading.Event()

    def clear_repeatedly():
        while not done.is_set():
            memo.clear()

    clearer = threading.Thread(target=clear_repeatedly)
    clearer.start()
    try:
        for number in range(50_000):
            try:
                memo.put(number % 300, number)
                memo.lookup((number * 7) % 300)
            except Exception as problem:  # noqa: BLE001 - any error here is a torn dictionary
                failures.append(problem)
    finally:
        done.set()
        clearer.join()
    assert failures == []
    assert len(memo) <= 100


def test_made_up_keys_are_kept_apart_and_cannot_push_real_keys_out(monkeypatch):
    real = auth.KeyInfo(
        id=1,
        user_id=1,
        group="default",
        enabled=True,
        user_active=True,
        expires_at=None,
        unlimited_quota=True,
        allowed_models=(),
        allowed_ips=(),
    )
    loads = []

    def find_key(lookup_hash):
        loads.append(lookup_hash)
        return real if lookup_hash == "real" else None

    monkeypatch.setattr(auth, "find_key", find_key)
    # Room for only a few real keys, so that made-up ones sharing it would push them out.
    monkeypatch.setattr(cache, "known_keys", LocalMemo(seconds=60, max_entries=5))
    made_up = 3 * cache.UNKNOWN_KEYS_KEPT

    async def scenario():
        assert await auth.key_info("real") == real
        for number in range(made_up):
            assert await auth.key_info(f"made-up-{number}") is None
        loads.clear()
        assert await auth.key_info("real") == real
        assert await auth.key_info(f"made-up-{made_up - 1}") is None

    asyncio.run(scenario())
    assert loads == []  # both answered from memory
    assert len(cache.unknown_keys) == cache.UNKNOWN_KEYS_KEPT


def test_the_keys_remembered_as_in_steady_use_are_bounded(monkeypatch):
    from relay import ready_holds

    monkeypatch.setattr(ready_holds, "MAX_KEYS", 100)
    ready_holds.forget()
    try:
        for number in range(1_000):
            ready_holds._remember_steady((1, number, True), float(number))
        assert len(ready_holds._steady_before) == 100
        assert (1, 999, True) in ready_holds._steady_before  # the newest stay
        assert (1, 0, True) not in ready_holds._steady_before
    finally:
        ready_holds.forget()

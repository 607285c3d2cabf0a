"""Holds placed ahead of the calls that will use them, so a call does not wait for its hold.

Placing a hold is a transaction (billing.writer), and on a busy PostgreSQL it is most of what
the relay adds to a call at one connection (bench/README.md). So once a key has made a call,
this process places the next call's hold in the background, while the current call is still
being answered: up to ``RELAY_READY_HOLDS`` holds per key, each a normal hold (one row, its
amount taken from the balance and the key's allowance, settled exactly once or released), sized
to cover the key's last call in full. A call that finds a ready hold covering the most it can
cost takes it and goes upstream at once; any other call places its own hold as before.

Only a key in steady use gets them: a call places holds ahead only if the key's previous call
came less than half of ``RELAY_READY_HOLD_IDLE_SECONDS`` before it, and they are given back
only once the key has been idle for all of it. A key called less often places its own holds as
they come; without that margin, a key called about as often as holds are given back would
place holds for every call only to give them back unused, which costs the writer more than it
saves (bench/README.md). A key that was in steady use when it went idle (within the last
``REMEMBER_SECONDS``) is taken to be in steady use again from its first call after the rest:
that call places holds ahead, so only it waits for its own hold, not its second call too. A
key whose spell of use had no steady call is forgotten, so calls that come one at a time never
place holds ahead. Ready holds are sized to the largest of the key's calls since it was
idle; smaller ones are given back when a larger call comes.

Nothing about the money changes: a ready hold is placed under the same rules as any hold (no
hold once the balance is at or below zero; the balance and the allowance cover it in full), a
call uses only a hold that covers its own most, and is settled or released through its hold
exactly as before. A ready hold is placed only while the balance (and a limited key's
allowance) would still cover ``SPARE_CALLS`` more such calls after it, so that holds set
aside for calls that may never come cannot leave the user's other keys short; once one is
refused for that, the key places its own holds until it goes idle. What a person sees: while
a key is in use, its balance shows up to ``RELAY_READY_HOLDS`` calls' worth set aside, given
back ``RELAY_READY_HOLD_IDLE_SECONDS`` after the key's last call (or when the process stops; if
it dies, when the holds expire).
"""

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings

from billing import writer
from billing.operations import HeldQuota, Release, Reserve

# A ready hold is used only while young: its expiry must leave a whole call's time.
MAX_AGE_SECONDS = 60.0
# Ready holds in all, per process: keys beyond this place their holds as they come.
MAX_READY = 1000
# Keys followed at once, per process (each a few numbers): keys beyond this get no ready holds.
MAX_KEYS = 10_000
# A ready hold is placed only if the balance would still cover this many calls like it after.
SPARE_CALLS = 8
# How long a key that went idle in steady use is remembered as such.
REMEMBER_SECONDS = 600.0

Scope = tuple[int, int, bool]  # user id, key id, whether the key is unlimited


@dataclass
class _Pool:
    ready: list[tuple[HeldQuota, float]] = field(default_factory=list)  # hold, when placed
    placing: int = 0
    amount: int = 0  # what the next ready hold is sized to (the key's last call)
    used: float = 0.0  # monotonic time of the key's last call
    short: bool = False  # a ready hold was refused (balance short): none until the key idles
    steady: bool = False  # a call of this spell came soon after the one before


_pools: dict[Scope, _Pool] = {}
# Keys that went idle in steady use, and when (oldest first; at most MAX_KEYS).
_steady_before: "OrderedDict[Scope, float]" = OrderedDict()
_sweeper: "asyncio.Task | None" = None
_outstanding = [0]  # ready holds and placements under way, in all pools


def forget() -> None:
    """Drop this process's ready holds without releasing them (tests only: each test's database
    is new, and its holds went with the old one)."""
    _pools.clear()
    _steady_before.clear()
    _outstanding[0] = 0


def _scope(reserve: Reserve) -> Scope:
    return (reserve.user_id, reserve.api_key_id, reserve.unlimited_key)


def take(reserve: Reserve) -> HeldQuota | None:
    """A ready hold of this key covering ``reserve.amount`` in full, or None."""
    pool = _pools.get(_scope(reserve))
    if pool is None:
        return None
    now = time.monotonic()
    for index, (hold, placed) in enumerate(pool.ready):
        if hold.amount >= reserve.amount and now - placed < MAX_AGE_SECONDS:
            del pool.ready[index]
            _outstanding[0] -= 1
            return hold
    return None


def refill(reserve: Reserve) -> None:
    """After a call of this key: place holds for its next calls, in the background."""
    wanted = settings.RELAY_READY_HOLDS
    if wanted <= 0:
        return
    scope = _scope(reserve)
    pool = _pools.get(scope)
    now = time.monotonic()
    if pool is None:  # the key's first call since it was idle
        if len(_pools) >= MAX_KEYS:
            return
        pool = _pools[scope] = _Pool(amount=max(reserve.amount, 1), used=now)
        _watch()
        went_idle = _steady_before.pop(scope, None)
        if went_idle is None or now - went_idle > REMEMBER_SECONDS:
            return  # not known to be in steady use: place nothing yet
    else:
        steady = now - pool.used < settings.RELAY_READY_HOLD_IDLE_SECONDS / 2
        pool.used = now
        if reserve.amount > pool.amount:  # the key's calls grew: the smaller holds will not do
            pool.amount = reserve.amount
            _give_back_smaller(pool)
        if not steady:
            return  # called, but not often enough to gain from holds placed ahead
        pool.steady = True  # remembered when it goes idle: its next spell places ahead at once
    while (
        not pool.short and len(pool.ready) + pool.placing < wanted and _outstanding[0] < MAX_READY
    ):
        pool.placing += 1
        _outstanding[0] += 1
        ahead = Reserve(
            user_id=reserve.user_id,
            api_key_id=reserve.api_key_id,
            unlimited_key=reserve.unlimited_key,
            amount=pool.amount,
            spare=pool.amount * SPARE_CALLS,
        )
        writer.submit(ahead).add_done_callback(lambda placing: _placed(scope, placing))
    _watch()


def _give_back_smaller(pool: _Pool) -> None:
    keep = []
    for hold, placed in pool.ready:
        if hold.amount >= pool.amount:
            keep.append((hold, placed))
            continue
        _outstanding[0] -= 1
        writer.submit(Release(hold))
    pool.ready = keep


def _placed(scope: Scope, placing: "asyncio.Future") -> None:
    pool = _pools.get(scope)
    outcome = None if placing.cancelled() else placing.result()
    if pool is not None:
        pool.placing -= 1
    if not isinstance(outcome, HeldQuota):
        _outstanding[0] -= 1
        if pool is not None:
            pool.short = True  # refused (short of credit) or failed: calls place their own
        return
    if pool is None or settings.RELAY_READY_HOLDS <= 0:
        _outstanding[0] -= 1
        writer.submit(Release(outcome))
        return
    pool.ready.append((outcome, time.monotonic()))


def _watch() -> None:
    """Start, on this event loop, the task that gives idle keys' holds back."""
    global _sweeper
    if _sweeper is None or _sweeper.done():
        _sweeper = asyncio.get_running_loop().create_task(_sweep())


async def _sweep() -> None:
    while _pools:
        await asyncio.sleep(min(settings.RELAY_READY_HOLD_IDLE_SECONDS, 1.0))
        give_back(idle_for=settings.RELAY_READY_HOLD_IDLE_SECONDS)


async def give_back_all() -> None:
    """Release every ready hold and wait (a little) for the releases to commit: the process is
    stopping."""
    releasing = give_back()
    if releasing:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*releasing, return_exceptions=True), 5.0)


def give_back(*, idle_for: float = 0.0) -> "list[asyncio.Future]":
    """Release the ready holds of keys idle for ``idle_for`` seconds (all: 0), and any too old
    to be used; the releases under way."""
    now = time.monotonic()
    released: list[asyncio.Future] = []
    for scope, pool in list(_pools.items()):
        idle = now - pool.used >= idle_for
        keep = []
        for hold, placed in pool.ready:
            if idle or now - placed >= MAX_AGE_SECONDS:
                _outstanding[0] -= 1
                with contextlib.suppress(RuntimeError):  # no event loop: the expiry sweep's
                    released.append(writer.submit(Release(hold)))
            else:
                keep.append((hold, placed))
        pool.ready = keep
        if idle and not pool.placing:
            del _pools[scope]
            if pool.steady and not pool.short:
                _remember_steady(scope, now)
    return released


def _remember_steady(scope: Scope, now: float) -> None:
    _steady_before.pop(scope, None)
    _steady_before[scope] = now
    while len(_steady_before) > MAX_KEYS:
        _steady_before.popitem(last=False)

"""A server process moves what its start made out of the garbage collector's sight
(config.asgi.settle_the_heap), so a full collection no longer walks Django and the relay's
tables: on the bench those collections stopped the process for 100-130 ms every few seconds."""

import gc

from tests.conftest import ServerThread


class Cycle:
    def __init__(self):
        self.me = self


def test_a_server_freezes_what_its_start_made_and_still_collects_what_comes_later(settings):
    settings.FREEZE_HEAP_AT_START = True
    gc.unfreeze()
    server = ServerThread().start()
    try:
        # Everything alive at start: this test process's heap, Django's and the relay's.
        assert gc.get_freeze_count() > 10_000
        Cycle()  # garbage made after the start, reachable only from itself
        assert gc.collect() >= 1
    finally:
        server.stop()
        gc.unfreeze()


def test_no_freeze_when_turned_off(settings):
    settings.FREEZE_HEAP_AT_START = False
    gc.unfreeze()
    server = ServerThread().start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        server.stop()

"""The CLI's processes move what they built at start-up out of the garbage collector's sight, once started."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from jobyard import cli


class FakeServer:
    def __init__(self, *, starts: bool) -> None:
        self.started = False
        self.starts = starts
        self.seen_at_settle: list[bool] = []

    async def serve(self) -> None:
        await asyncio.sleep(0.1)  # the lifespan's start-up
        if not self.starts:
            return  # uvicorn returns when the lifespan fails to start
        self.started = True
        await asyncio.sleep(0.2)  # serving


async def test_the_api_settles_its_heap_once_started_and_not_when_start_up_fails(monkeypatch: Any) -> None:
    for starts in (True, False):
        server = FakeServer(starts=starts)
        monkeypatch.setattr(cli, "_settle_heap", lambda *young, s=server: s.seen_at_settle.append((s.started, young)))
        await cli._serve_and_settle(server)
        # The API keeps the interpreter's young-generation threshold (see _serve_and_settle).
        assert server.seen_at_settle == ([(True, ())] if starts else [])


@pytest.fixture
def unfrozen() -> Any:
    yield
    gc.unfreeze()  # the test process's heap must stay collectable


def test_settling_collects_the_garbage_then_freezes_what_is_alive(unfrozen: Any) -> None:
    class Node:
        other: Any = None

    gc.unfreeze()
    built_at_start_up = [{"pool": i} for i in range(1000)]
    garbage_a, garbage_b = Node(), Node()
    garbage_a.other, garbage_b.other = garbage_b, garbage_a  # a cycle only the collector can free
    gone = weakref.ref(garbage_a)
    del garbage_a, garbage_b
    cli._settle_heap()
    assert gone() is None  # collected, not frozen for the life of the process
    assert gc.get_freeze_count() >= len(built_at_start_up)


@pytest.fixture
def thresholds() -> Any:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_settling_sets_the_young_generations_threshold_and_keeps_the_others(unfrozen: Any, thresholds: Any) -> None:
    gc.set_threshold(700, 11, 12)
    cli._settle_heap(2000)
    assert gc.get_threshold() == (2000, 11, 12)
    cli._settle_heap(0)  # 0: the interpreter's own, left as it is
    assert gc.get_threshold() == (2000, 11, 12)


def test_the_young_threshold_is_a_setting_with_cpython_3_13s_default() -> None:
    from jobyard.config import Settings

    assert Settings.from_env({}).gc_young_threshold == 2000
    assert Settings.from_env({"JOBYARD_GC_YOUNG_THRESHOLD": "0"}).gc_young_threshold == 0

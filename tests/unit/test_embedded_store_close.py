"""A query of the embedded store cancelled mid-way leaves nothing waiting, and the event loop still closes.

The query runs ``block()``, a SQL function that holds aiosqlite's worker thread until the scenario lets it go, so
every cancellation lands while the thread is known to be busy with the query (the scenario waits until ``block()``
has started, and lets it end only after the cancellations it is about). Each scenario runs in its own interpreter, as
a hung event loop cannot be stopped from inside. With SQLAlchemy 2.1.9 and aiosqlite 0.22.1, a plain engine
(``python -c "$SCENARIO" db plain shutdown``) hangs for ever in the first and third and leaves SQLAlchemy's
``_terminate_graceful_close`` task waiting for ever in the second; see ``_close_sqlite_connection_on_terminate``.
The third also fails with a close that is not its own task: the loop closes while the worker thread still has to
answer it, and the thread's answer raises "Event loop is closed".
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCENARIO = textwrap.dedent(
    """
    import asyncio, sys, threading, time
    from sqlalchemy import event, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from jobyard.config import Settings
    from jobyard.store.repository import create_repository

    path, which, case = sys.argv[1:4]
    started, release = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(20)
        return 1

    def engine():
        if which == "store":
            return create_repository(Settings(database_url="sqlite:///" + path)).engine
        return create_async_engine("sqlite+aiosqlite:///" + path)

    async def main():
        eng = engine()

        def add_block(dbapi_connection, _record):
            dbapi_connection.run_async(lambda conn: conn.create_function("block", 0, block))

        event.listen(eng.sync_engine, "connect", add_block)

        async def query():
            async with eng.connect() as conn:
                await conn.execute(text("SELECT block()"))

        task = asyncio.create_task(query())
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        # The cancelled query's connection is now being closed, behind the query still holding the thread.
        await asyncio.sleep(0.05)
        if case == "cancelled-twice-then-shutdown":
            task.cancel()
            await asyncio.sleep(0.05)
        if case != "cancelled-twice":
            # Return while that close waits: asyncio.run cancels what is left, then the query ends.
            threading.Timer(0.3, release.set).start()
            return
        task.cancel()
        release.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.5)
        left = [t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        print("left:", left)
        await eng.dispose()
        sys.exit(1 if left else 0)

    asyncio.run(main())
    time.sleep(0.6)  # the query ends meanwhile: the worker thread has its last answers to give, and any error shows
    """
)


def _run(tmp_path: Path, which: str, case: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            [sys.executable, "-c", _SCENARIO, str(tmp_path / "store.db"), which, case],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("case", ["shutdown", "cancelled-twice", "cancelled-twice-then-shutdown"])
def test_a_cancelled_query_of_the_embedded_store_leaves_nothing_waiting(tmp_path: Path, case: str) -> None:
    done = _run(tmp_path, "store", case)
    assert done is not None, "the event loop never closed"
    assert done.returncode == 0, done.stdout + done.stderr
    # The worker thread answered while the loop was still there to take the answer.
    assert "Exception in thread" not in done.stderr, done.stderr

"""Keeping a mailbox's requests in flight while what came back is stored.

Microsoft lets an app keep 4 requests in flight per mailbox, and a mailbox's backup is
bound by how close it stays to that. A collector that fetches a group of items, stores them,
commits, and only then asks for the next group leaves the mailbox idle for as long as it
stores; and one that fetches a delta page only after the previous page is committed leaves
it idle for a page's worth of work every page. ``ahead`` runs the next steps (delta pages,
``$batch`` fetches of the next groups, the next folders) while the current one is stored,
and hands their results back in order, so everything durable still happens in the order
the sequential code had: a page's blobs, then its transaction with its delta link.

What runs ahead is bounded by a count of steps (started, or finished and not yet taken),
not by the mailbox: memory stays that of ``width`` steps. The mailbox's adaptive limiter
(``safekeep.graph.throttle``) still decides how many requests actually go at once: steps
started ahead wait there, ready to go the moment a slot is free, and a 429 that cuts the
window slows them as it slows everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from safekeep.storage.repository import UPLOADS_AT_ONCE

T = TypeVar("T")


class _End:
    """The source is exhausted."""


class _Failed:
    """The source raised: the error comes out after the steps queued before it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Ready(Generic[T]):
    """A step with nothing to wait for (a marker in the stream: a page ends, a folder
    starts): it keeps its place in the order but not a place among the ``width`` steps that
    fetch, so markers never hold back the next fetch (their own bound is ``markers``)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def ready(value: T) -> Ready[T]:
    return Ready(value)


@asynccontextmanager
async def ahead(
    source: AsyncIterator[Awaitable[T] | Ready[T]], width: int, *, markers: int | None = None
) -> AsyncIterator[AsyncIterator[T]]:
    """Run the steps ``source`` yields up to ``width`` at a time, ahead of the consumer;
    yield their results in the order ``source`` gave them.

    ``source`` is pulled from a task of its own (its own requests, a delta page, overlap the
    consumer's work too), and only once a place is free: a step is created when it may
    start, so a step's memory (a page, a group's bodies) exists only while it counts
    against ``width``. ``Ready`` markers count against ``markers`` instead (``4 * width``
    unless given): a marker may hold a page, so they are bounded too. A step's error, or
    the source's, comes out at its turn, after the results before it. Leaving the block
    (done, an error, a cancel) cancels what is still running and waits for it, so nothing
    outlives the collector that started it.
    """
    if width < 1:
        raise ValueError("width must be at least 1")
    places = asyncio.Semaphore(width)
    marks = asyncio.Semaphore(markers if markers is not None else 4 * width)
    queue: asyncio.Queue[tuple[asyncio.Future[T] | Ready[T], asyncio.Semaphore] | _End | _Failed]
    queue = asyncio.Queue()
    started: set[asyncio.Future[Any]] = set()

    async def feed() -> None:
        while True:
            await places.acquire()
            try:
                step = await anext(source)
            except StopAsyncIteration:
                queue.put_nowait(_End())
                return
            except Exception as exc:  # handed to the consumer, in order
                queue.put_nowait(_Failed(exc))
                return
            if isinstance(step, Ready):
                places.release()  # a marker takes no fetching place
                await marks.acquire()
                queue.put_nowait((step, marks))
                continue
            task = asyncio.ensure_future(step)
            started.add(task)
            task.add_done_callback(started.discard)
            queue.put_nowait((task, places))

    async def results() -> AsyncGenerator[T, None]:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            step, place = item
            try:
                value = step.value if isinstance(step, Ready) else await step
            finally:
                place.release()
            yield value

    feeder = asyncio.create_task(feed())
    out = results()
    try:
        yield out
    finally:
        feeder.cancel()
        running = [feeder, *started]
        for task in started:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await out.aclose()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def gather_bounded(coros: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run ``coros`` (each bounding its own concurrency); if one fails, cancel the others
    and raise that failure itself (not a group: callers sort failures by class)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# A page's items stored at once (their blobs, their search text): as many as a repository
# uploads at once. The repository's budget bounds the bytes in flight; this bounds what the
# items not yet started hold (a Teams channel or a chat may be thousands of messages).
STORES_AT_ONCE = UPLOADS_AT_ONCE


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int = STORES_AT_ONCE) -> list[T]:
    """``coros``' results in their order, at most ``limit`` running at once; each is taken
    from ``coros`` only when a place is free (pass a generator to start nothing early). A
    failure cancels the rest and is raised, as in ``gather_bounded``."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    source = enumerate(coros)
    results: dict[int, T] = {}

    async def place() -> None:
        for n, coro in source:  # one iterator shared by the places: each takes the next
            results[n] = await coro

    try:
        await gather_bounded(place() for _ in range(limit))
    finally:
        for _, left in source:  # a failure left these unstarted: close, do not leak them
            if asyncio.iscoroutine(left):
                left.close()
    return [results[n] for n in range(len(results))]

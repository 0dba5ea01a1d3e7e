"""``pipeline.ahead``: steps run ahead of the consumer, results come back in order, what runs
ahead is bounded, and nothing outlives the block. ``pipeline.gather_bounded``: a failure
cancels the rest and comes out as itself."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping

import pytest

from safekeep.backup.outlook import MailboxReader
from safekeep.backup.pipeline import Ready, ahead, gather_bounded, gather_limited, ready
from safekeep.graph.client import DeltaPage
from safekeep.graph.errors import ResyncRequired


class Probe:
    """Steps that finish when told to, counting how many exist at once."""

    def __init__(self) -> None:
        self.alive = 0
        self.peak = 0
        self.pulled = 0
        self.cancelled: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def step(self, n: int) -> int:
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        try:
            await self.gates.setdefault(n, asyncio.Event()).wait()
            return n
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        finally:
            self.alive -= 1

    async def source(self, count: int) -> AsyncIterator[Awaitable[int]]:
        for n in range(count):
            self.pulled += 1
            yield self.step(n)

    def open(self, *numbers: int) -> None:
        for n in numbers:
            self.gates.setdefault(n, asyncio.Event()).set()


async def consume(
    source: AsyncIterator[Awaitable[int] | Ready[int]], width: int, into: list[int]
) -> None:
    async with ahead(source, width) as results:
        async for value in results:
            into.append(value)


async def test_markers_take_no_fetching_place() -> None:
    """A page's end or a folder's start never holds back the next fetch."""
    probe = Probe()

    async def source() -> AsyncIterator[Awaitable[int] | Ready[int]]:
        for n in range(3):
            yield ready(-1)  # e.g. a folder starts
            yield probe.step(n)
            yield ready(-2)  # its page ends

    async with ahead(source(), 3) as results:
        for _ in range(5):
            await asyncio.sleep(0)
        assert probe.alive == 3  # all three fetches run though six markers sit between
        probe.open(0, 1, 2)
        assert [v async for v in results] == [-1, 0, -2, -1, 1, -2, -1, 2, -2]


async def test_results_come_in_source_order_whatever_order_steps_finish_in() -> None:
    probe = Probe()
    got: list[int] = []
    async with ahead(probe.source(6), 3) as results:
        probe.open(2, 1)  # later steps finish first
        await asyncio.sleep(0)
        probe.open(0, 3, 4, 5)
        async for value in results:
            got.append(value)
    assert got == [0, 1, 2, 3, 4, 5]


async def test_steps_run_concurrently_up_to_width_and_no_further() -> None:
    probe = Probe()
    async with ahead(probe.source(10), 3) as results:
        for _ in range(5):
            await asyncio.sleep(0)
        # Three steps started at once before anything was consumed; the source was not
        # pulled further (a step's memory exists only once it may start).
        assert (probe.alive, probe.pulled) == (3, 3)
        probe.open(*range(10))
        assert [v async for v in results] == list(range(10))
    assert probe.peak == 3


async def test_a_step_error_comes_out_at_its_turn_after_the_results_before_it() -> None:
    async def failing() -> int:
        raise ValueError("step 2 broke")

    async def source() -> AsyncIterator[Awaitable[int] | Ready[int]]:
        yield ready(0)
        yield ready(1)
        yield failing()
        yield ready(3)

    got: list[int] = []
    with pytest.raises(ValueError, match="step 2 broke"):
        await consume(source(), 4, got)
    assert got == [0, 1]


async def test_a_source_error_comes_out_after_the_steps_it_yielded() -> None:
    async def source() -> AsyncIterator[Awaitable[int] | Ready[int]]:
        yield ready(0)
        yield ready(1)
        raise LookupError("delta page failed")

    got: list[int] = []
    with pytest.raises(LookupError, match="delta page failed"):
        await consume(source(), 8, got)
    assert got == [0, 1]


async def test_leaving_early_cancels_what_runs_ahead_and_closes_the_source() -> None:
    probe = Probe()
    closed = asyncio.Event()

    async def source() -> AsyncIterator[Awaitable[int] | Ready[int]]:
        try:
            async for step in probe.source(100):
                yield step
        finally:
            closed.set()

    probe.open(0)
    async with ahead(source(), 4) as results:
        async for value in results:
            assert value == 0
            for _ in range(5):
                await asyncio.sleep(0)
            assert probe.alive == 4  # steps 1-4 started while 0 was handled
            break
    assert closed.is_set()
    assert probe.alive == 0
    assert sorted(probe.cancelled) == [1, 2, 3, 4]


async def test_gather_bounded_cancels_the_rest_and_raises_the_failure_itself() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def slow(name: str) -> str:
        try:
            started.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    async def failing() -> str:
        await started.wait()
        raise ResyncRequired(410, "SyncStateNotFound", "the delta link expired")

    assert await gather_bounded([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]
    with pytest.raises(ResyncRequired):  # itself, not an ExceptionGroup
        await gather_bounded([slow("stream 1"), failing(), slow("stream 2")])
    assert sorted(cancelled) == ["stream 1", "stream 2"]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_gather_limited_keeps_order_and_starts_each_only_when_a_place_is_free() -> None:
    running = 0
    peak = 0
    taken = 0
    finished = 0

    async def store(n: int) -> int:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (n % 3))  # finishing out of order
        running -= 1
        finished += 1
        return n * 10

    def coros() -> Iterator[Awaitable[int]]:
        nonlocal taken
        for n in range(10):
            taken += 1
            assert taken - finished <= 3  # taken only when one of the 3 places is free
            yield store(n)

    assert await gather_limited(coros(), 3) == [n * 10 for n in range(10)]
    assert peak == 3
    assert await gather_limited([], 3) == []
    with pytest.raises(ValueError, match="limit"):
        await gather_limited([], 0)


async def test_gather_limited_cancels_the_running_and_closes_the_unstarted_on_a_failure() -> None:
    cancelled: list[int] = []
    started: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        if n == 1:
            raise ResyncRequired(410, "SyncStateNotFound", "the delta link expired")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    made = [step(n) for n in range(6)]  # created up front: the unstarted must be closed
    with pytest.raises(ResyncRequired):
        await gather_limited(made, 2)
    assert started == [0, 1]  # the second place failed at once: nothing more was started
    assert cancelled == [0]
    assert {inspect.getcoroutinestate(c) for c in made} == {"CORO_CLOSED"}  # none left open
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_width_must_be_positive() -> None:
    async def run() -> None:
        async with ahead(Probe().source(1), 0):
            pass

    with pytest.raises(ValueError, match="width"):
        asyncio.run(run())


async def test_delta_pages_fetch_the_next_page_while_the_current_one_is_stored() -> None:
    """``MailboxReader.delta_pages``, what calendars and contacts can read rounds with: the
    next page is on its way while the caller stores one, and a page's error comes out at
    its turn."""
    fetched: list[int] = []

    class Graph:
        async def delta(
            self, link: str, *, headers: Mapping[str, str], mailbox: str
        ) -> AsyncIterator[DeltaPage]:
            for n in range(3):
                fetched.append(n)
                yield DeltaPage([{"id": str(n)}], f"next-{n + 1}", None)
            raise ResyncRequired(410, "SyncStateNotFound", "expired", location="again")

    reader = object.__new__(MailboxReader)
    reader.graph = Graph()  # type: ignore[assignment]
    reader.user = "user-1"
    stored: list[str] = []
    overlapped: list[bool] = []

    async def store_all() -> None:
        async with reader.delta_pages("link", {}) as pages:
            async for page in pages:
                for _ in range(5):
                    await asyncio.sleep(0)  # storing the page
                overlapped.append(len(fetched) > len(stored) + 1)
                stored.append(page.items[0]["id"])

    with pytest.raises(ResyncRequired):
        await store_all()
    assert overlapped[0]  # page 1 came while page 0 was stored
    assert stored == ["0", "1", "2"]  # every page before the error, in order

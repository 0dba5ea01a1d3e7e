"""The upload budget: many small uploads at once, few large ones, none starved or leaked."""

import asyncio

import pytest

from safekeep.storage.repository import _InFlight


async def admitted(budget: _InFlight, sizes: list[int]) -> list[int]:
    """Start acquires for ``sizes`` in order; return the indexes admitted without a release."""
    tasks = [asyncio.create_task(budget.acquire(n)) for n in sizes]
    await asyncio.sleep(0.01)
    done = [i for i, t in enumerate(tasks) if t.done()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return done


async def test_count_and_byte_limits() -> None:
    assert await admitted(_InFlight(3, 1000), [1, 1, 1, 1]) == [0, 1, 2]
    assert await admitted(_InFlight(10, 1000), [400, 400, 400, 1]) == [0, 1]  # FIFO: 1 waits too


async def test_one_oversized_upload_is_always_admitted() -> None:
    budget = _InFlight(4, 100)
    await budget.acquire(5000)
    waiter = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    budget.release(5000)
    await asyncio.wait_for(waiter, 1)
    budget.release(10)


async def test_release_wakes_waiters_in_order_and_cancel_gives_back() -> None:
    budget = _InFlight(1, 1000)
    await budget.acquire(1)
    order: list[str] = []

    async def take(name: str) -> None:
        await budget.acquire(1)
        order.append(name)

    first, second = asyncio.create_task(take("first")), asyncio.create_task(take("second"))
    cancelled = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    budget.release(1)
    await asyncio.wait_for(first, 1)
    assert order == ["first"]
    budget.release(1)
    await asyncio.wait_for(second, 1)
    assert order == ["first", "second"]
    budget.release(1)
    await asyncio.wait_for(budget.acquire(1), 1)  # nothing leaked by the cancelled waiter

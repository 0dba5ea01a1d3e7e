"""Downloads: HTTP Range (RFC 9110 §14), one range per request, which is what resuming
clients send (anything else gets the whole body, or 416 when unsatisfiable); and bodies
whose first piece is read before the answer starts (``started``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from safekeep.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII)
# 18 digits reach an exabyte; longer numbers are refused before int() (which rejects more
# than 4300 digits with a ValueError, and would spend time on anything long).
MAX_DIGITS = 18


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end_inclusive) for a satisfiable single range, None for "send it all"."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multiple ranges or another unit: ignore, as RFC 9110 allows
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if len(first) > MAX_DIGITS or len(last) > MAX_DIGITS:
        raise RangeNotSatisfiable(
            f"Range positions have at most {MAX_DIGITS} digits",
            headers={"Content-Range": f"bytes */{size}"},
        )
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(
                "Empty suffix range", headers={"Content-Range": f"bytes */{size}"}
            )
        start = max(0, size - length)
        end = size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    if start >= size or size == 0:
        raise RangeNotSatisfiable(
            f"The range starts beyond the {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


async def started(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``stream`` with its first piece already read. A download's status and length go out
    before its body: what fails in reaching the stored bytes (a blob gone, the store down)
    fails here instead, as a problem answer (410, 503...) rather than a 200 cut off after
    its head."""
    first = await anext(stream, None)

    async def whole() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
        async for piece in stream:
            yield piece

    return whole()

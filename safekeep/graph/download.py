"""Content downloads (``$value``, drive ``content``), streamed and resumed.

Drive content answers 302 to a short-lived pre-authenticated URL; it is fetched without the
Authorization header (and a ``Range`` goes to it, not to Graph). If the transfer breaks, it
resumes from the last byte received (a new redirect each time, since the URL may have
expired), skipping bytes if the server ignored ``Range``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from safekeep.graph.errors import TransientError
from safekeep.graph.options import RequestOptions
from safekeep.graph.transport import Transport

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BROKEN = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)


@dataclass(frozen=True)
class _Window:
    """The bytes still wanted: from ``offset`` to ``last`` (None: the end), and whether
    the request asks for a range at all."""

    offset: int
    last: int | None
    ranged: bool

    @property
    def header(self) -> str | None:
        if not self.ranged:
            return None
        return f"bytes={self.offset}-{'' if self.last is None else self.last}"


def parse_range(value: str | None) -> tuple[int, int | None]:
    """First and last byte of a ``bytes=S-[E]`` range (suffix ranges are not resumable)."""
    if not value:
        return 0, None
    found = re.fullmatch(r"\s*bytes=(\d+)-(\d*)\s*", value)
    if not found:
        raise ValueError(f"unsupported Range {value!r}: use bytes=START- or bytes=START-END")
    return int(found.group(1)), int(found.group(2)) if found.group(2) else None


async def stream(
    transport: Transport,
    path_or_url: str,
    *,
    mailbox: str | None,
    headers: Mapping[str, str] | None,
    chunk_size: int | None,
) -> AsyncIterator[bytes]:
    extra = {k: v for k, v in (headers or {}).items() if k.lower() != "range"}
    requested = next((v for k, v in (headers or {}).items() if k.lower() == "range"), None)
    first, last = parse_range(requested)
    options = RequestOptions(headers=extra, mailbox=mailbox)
    received = 0
    failures = 0
    while True:
        window = _Window(first + received, last, requested is not None or received > 0)
        try:
            async for chunk in _stream_once(transport, path_or_url, options, window, chunk_size):
                received += len(chunk)
                yield chunk
            return
        except _BROKEN as exc:
            failures += 1
            transport.stats.retries += 1
            if failures >= transport.policy.max_attempts:
                raise TransientError(
                    0,
                    "network_error",
                    f"download kept failing: {exc}",
                    method="GET",
                    url=path_or_url,
                ) from exc
            await asyncio.sleep(transport.policy.backoff(failures))


async def _stream_once(
    transport: Transport,
    path_or_url: str,
    options: RequestOptions,
    window: _Window,
    chunk_size: int | None,
) -> AsyncIterator[bytes]:
    location: str | None = None
    async with transport.open("GET", path_or_url, options) as resp:
        if resp.status_code in _REDIRECTS:
            location = urljoin(str(resp.request.url), resp.headers.get("location", ""))
            await resp.aclose()
        else:
            # Exchange serves $value directly; it may or may not honour Range.
            async for chunk in _body(transport, resp, window, chunk_size):
                yield chunk
            return
    range_header = window.header
    download = RequestOptions(
        headers={"Range": range_header} if range_header else {}, auth=False, scope="sharepoint"
    )
    async with transport.open("GET", location, download) as resp:
        async for chunk in _body(transport, resp, window, chunk_size):
            yield chunk


async def _body(
    transport: Transport, resp: httpx.Response, window: _Window, chunk_size: int | None
) -> AsyncIterator[bytes]:
    """The bytes wanted from ``resp``: a 200 to a ranged request carries the whole content,
    so the range is cut out here."""
    if resp.status_code not in (200, 206):
        raise transport.error(resp, await transport.read(resp), "GET")
    whole = window.ranged and resp.status_code == 200
    skip = window.offset if whole else 0
    last = window.last
    remaining = (last - window.offset + 1) if whole and last is not None else None
    async for chunk in resp.aiter_bytes(chunk_size):
        transport.stats.bytes_downloaded += len(chunk)
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        if remaining is not None:
            chunk = chunk[:remaining]
            remaining -= len(chunk)
        if chunk:
            yield chunk
        if remaining == 0:
            return

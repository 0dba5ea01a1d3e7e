"""The process's handles on the outside world, built from settings, one per event loop.

The API builds one in its lifespan; a worker builds one lazily on its event-loop thread; the
CLI builds one per command. Parts receive what they need from it as plain arguments: the engine
never looks a runtime up, and the unit of work below takes the runtime it runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from safekeep.db import Database
from safekeep.search.backend import SearchBackend, open_search_backend
from safekeep.settings import Settings
from safekeep.storage.blobstore import BlobStore, open_blobstore
from safekeep.tenants import outbox
from safekeep.tenants.outbox import Message

Sender = Callable[[Sequence[Message]], None]


@dataclass
class Runtime:
    settings: Settings
    db: Database
    blobstore: BlobStore
    search: SearchBackend
    send: Sender
    _opened: dict[str, bool] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def build(cls, settings: Settings, *, send: Sender) -> Runtime:
        """``send`` is how this process hands collected messages to its queue (the workers'
        broker, the embedded worker's inbox, or a test's list): the caller knows, not us."""
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url),
            blobstore=open_blobstore(
                settings.resolved_blobstore_url,
                s3_endpoint_url=settings.s3_endpoint_url,
                s3_region=settings.s3_region,
            ),
            search=open_search_backend(
                settings.resolved_search_url,
                index_prefix=settings.search_index_prefix,
                max_text_chars=settings.search_body_max_chars,
                **(
                    {"refresh": "wait_for"}
                    if settings.search_wait_for_refresh
                    and settings.resolved_search_url.startswith("http")
                    else {}
                ),
            ),
            send=send,
        )

    async def ensure_open(self, part: str) -> Any:
        """Open the blob store or search backend on first use, so that one being down at
        start-up does not stop the API from serving (``/readyz`` says which is down)."""
        target: BlobStore | SearchBackend = self.blobstore if part == "blobstore" else self.search
        if not self._opened.get(part):
            async with self._lock:
                if not self._opened.get(part):
                    await target.open()
                    self._opened[part] = True
        return target

    async def blobs(self) -> BlobStore:
        store: BlobStore = await self.ensure_open("blobstore")
        return store

    async def search_backend(self) -> SearchBackend:
        backend: SearchBackend = await self.ensure_open("search")
        return backend

    async def close(self) -> None:
        for part in ("blobstore", "search"):
            if self._opened.pop(part, False):
                target = self.blobstore if part == "blobstore" else self.search
                await target.close()
        await self.db.dispose()


@asynccontextmanager
async def unit_of_work(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    """A session that commits when the block ends cleanly, then sends collected messages."""
    with outbox.collect() as box:
        async with runtime.db.session() as session:
            yield session
        if box.messages:
            runtime.send(box.messages)

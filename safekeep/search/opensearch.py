"""OpenSearch search backend: the scale-out choice.

Layout decisions
----------------
- **Shared indices, routed by tenant.** Every MSP's documents live in one index family, with
  ``_routing = tenant_id`` (required by the mapping) and ``_id = "{tenant_id}/{version_id}"``.
  An index per MSP (or per tenant) would give thousands of small shards, each costing heap
  and cluster-state on every node; one family keeps the shard count a sizing decision
  (``number_of_shards`` in the URL) instead of a function of the customer count. Routing puts a
  tenant's documents on one shard, so a technician's search touches one shard, not all. A
  very large tenant can later be given its own index behind the same aliases.
- **Isolation is a filter, built in one place.** ``_scope()`` turns the plan's tenant ids into
  a ``terms`` filter on ``tenant_id`` that wraps every search; routing only chooses shards and
  is never relied on for isolation (one shard holds many tenants). Writes that change or remove
  documents address ``{tenant}/{version}`` ids with the tenant's routing, or (purge) filter by
  tenant, so they cannot reach another tenant either.
- **Versioned index behind two aliases.** The data is in ``{prefix}-items-v{N}``; searches use
  the read alias ``{prefix}-items``, writes the write alias ``{prefix}-items-write``.
  ``migrate()`` moves to a new mapping with no downtime for searches or writes: create v(N+1),
  copy with ``_reindex`` while writes still go to the old index, copy again what changed
  meanwhile (every write stamps ``updated_at``), flip both aliases atomically, copy the
  changes once more, remove from the new index what was deleted during the copies, and drop
  the old index. Between the flip and the last pass (seconds), documents written in the
  short window since the second pass are not yet visible: nothing is lost, and searches
  never fail. Closes and deletes go to every index of the
  family (normally one), so the old index stays a faithful source until it is dropped.
- **Analyzer, language-neutral.** ``standard`` tokenizer (Unicode word boundaries; Han and
  Hiragana one token per character, so CJK words match as phrases of characters) with
  ``lowercase`` and ``asciifolding``, after a char filter that turns ``. _ : ' ’ , ;`` into
  spaces: the standard tokenizer keeps "contoso.com" or "q3_report" as one token, which would
  make "contoso" miss mail from anna@contoso.com; splitting there also makes it agree with
  the FTS5 backend's tokenizer. Keyword fields hold ids and exact values.
- **Prefixes** (``rep*``) are analysed ``bool_prefix`` queries (a real prefix query on the
  last token, no expansion limit); phrase prefixes (``"annual rep"*``) use ``phrase_prefix``
  whose last term expands to at most 200 terms.
- **Bulk with back-pressure.** Writes go in chunks of at most 500 actions / 10 MiB; a chunk
  or document refused with 429 (``es_rejected_execution_exception``: the write queue is
  full) is retried with exponential backoff (0.5 s doubling to 10 s, 6 tries) by
  opensearch-py's ``async_streaming_bulk``; what is still refused raises ``IndexingFailed``
  with the ids, for the caller's retry job.
- **Instants** are ``long`` microseconds, as in the FTS5 backend, so point-in-time bounds are
  exact (OpenSearch ``date`` keeps milliseconds only).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from opensearchpy import AsyncOpenSearch, JSONSerializer
from opensearchpy import exceptions as os_errors
from opensearchpy.helpers import async_scan, async_streaming_bulk

from safekeep.search.documents import (
    DEFAULT_MAX_TEXT_CHARS,
    SearchDocument,
    bounded,
    folder_key,
    from_micros,
    to_micros,
)
from safekeep.search.errors import IndexingFailed, InvalidQuery, SearchUnavailable
from safekeep.search.query import (
    HIT_FIELDS,
    TOTAL_LIMIT,
    Plan,
    SearchHit,
    SearchPage,
    SearchQuery,
    plan,
    render_highlights,
)
from safekeep.search.syntax import Atom

log = logging.getLogger(__name__)

MAPPING_VERSION = 1
_MARK_OPEN = "\ue000"
_MARK_CLOSE = "\ue001"
_SEARCH_FIELDS = [
    "title^10",
    "sender^4",
    "recipients^2",
    "people^2",
    "location^2",
    "body",
    "attachment_names^4",
    "attachment_text",
    "folder_path^2",
]
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,100}$")
_MAX_ROUTED_TENANTS = 64  # past this, routing would name most shards anyway
_INDEX_CACHE_SECONDS = 5.0
_CLOCK_SKEW_US = 60_000_000  # margin for writers' clocks in migrate()
_CJK = ("\u3040", "\u30ff"), ("\u3400", "\u9fff"), ("\uf900", "\ufaff")

_ANALYSIS = {
    "char_filter": {
        "sk_word_joiners": {
            "type": "pattern_replace",
            "pattern": "[._:'\u2019,;\u00b7]",
            "replacement": " ",
        }
    },
    "analyzer": {
        "sk_text": {
            "type": "custom",
            "char_filter": ["sk_word_joiners"],
            "tokenizer": "standard",
            "filter": ["lowercase", "asciifolding"],
        }
    },
}


def index_body(shards: int, replicas: int) -> dict[str, Any]:
    """Settings and mappings of the current ``MAPPING_VERSION``."""
    text = {"type": "text", "analyzer": "sk_text"}
    long_text = {**text, "index_options": "offsets"}  # fast highlighting of long fields
    keyword = {"type": "keyword"}
    number = {"type": "long"}
    return {
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "analysis": _ANALYSIS,
        },
        "mappings": {
            "dynamic": "strict",
            "_routing": {"required": True},
            "properties": {
                "doc_key": keyword,
                "version_id": keyword,
                "msp_id": keyword,
                "tenant_id": keyword,
                "account_id": keyword,
                "service": keyword,
                "item_id": keyword,
                "kind": keyword,
                "folder_key": keyword,
                "file_type": keyword,
                "valid_from": number,
                "valid_to": number,
                "date": number,
                "sort_ts": number,
                "size": number,
                "updated_at": number,
                "has_attachments": {"type": "boolean"},
                "migrated": {"type": "boolean"},  # set by migrate()'s copies only
                "title": text,
                "folder_path": text,
                "sender": text,
                "recipients": text,
                "people": text,
                "location": text,
                "attachment_names": text,
                "body": long_text,
                "attachment_text": long_text,
            },
        },
    }


def _now_us() -> int:
    return time.time_ns() // 1_000


def _single_word(text: str) -> bool:
    return text.isalnum() and not any(lo <= ch <= hi for ch in text for lo, hi in _CJK)


def atom_query(atom: Atom, fields: list[str] | None = None) -> dict[str, Any]:
    """An atom as an analysed query (the analyzer, not us, tokenizes the user's text)."""
    fields = fields or _SEARCH_FIELDS
    if atom.prefix and _single_word(atom.text):
        kind: dict[str, Any] = {"type": "bool_prefix", "operator": "and"}
    elif atom.prefix:
        kind = {"type": "phrase_prefix", "max_expansions": 200}
    else:
        kind = {"type": "phrase"}
    return {"multi_match": {"query": atom.text, "fields": fields, **kind}}


def _field_phrase(atom: Atom, field: str) -> dict[str, Any]:
    return {"match_phrase": {field: {"query": atom.text}}}


def _text_queries(p: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    must: list[dict[str, Any]] = []
    for clause in p.text.must:
        if len(clause.anyof) == 1:
            must.append(atom_query(clause.anyof[0]))
        else:
            alternatives = [atom_query(a) for a in clause.anyof]
            must.append({"bool": {"should": alternatives, "minimum_should_match": 1}})
    must_not = [atom_query(a) for a in p.text.must_not]
    return must, must_not


def _scope(p: Plan) -> list[dict[str, Any]]:
    """The tenant filter, first, then every other filter: the one place a query is scoped."""
    filters: list[dict[str, Any]] = [{"terms": {"tenant_id": list(p.tenant_ids)}}]
    if p.account_ids:
        filters.append({"terms": {"account_id": list(p.account_ids)}})
    if p.services:
        filters.append({"terms": {"service": list(p.services)}})
    if p.folder_key:
        filters.append(
            {
                "bool": {
                    "should": [
                        {"term": {"folder_key": p.folder_key}},
                        {"prefix": {"folder_key": p.folder_key + "/"}},
                    ],
                    "minimum_should_match": 1,
                }
            }
        )
    if p.sender is not None:
        filters.append(_field_phrase(p.sender, "sender"))
    if p.recipient is not None:
        filters.append(_field_phrase(p.recipient, "recipients"))
    for field, low, high in (("date", p.date_from, p.date_to), ("size", p.size_min, p.size_max)):
        bounds = {op: value for op, value in (("gte", low), ("lte", high)) if value is not None}
        if bounds:
            filters.append({"range": {field: bounds}})
    if p.has_attachments is not None:
        filters.append({"term": {"has_attachments": p.has_attachments}})
    if p.file_types:
        filters.append({"terms": {"file_type": list(p.file_types)}})
    current = {"bool": {"must_not": {"exists": {"field": "valid_to"}}}}
    if p.time.current_only:
        filters.append(current)
    elif p.time.at is not None:
        filters.append({"range": {"valid_from": {"lte": p.time.at}}})
        if not p.time.all_versions:
            still_valid = {"range": {"valid_to": {"gt": p.time.at}}}
            filters.append({"bool": {"should": [current, still_valid], "minimum_should_match": 1}})
    return filters


def search_body(p: Plan) -> dict[str, Any]:
    """The whole request body for a plan (public so that tests can inspect isolation)."""
    must, must_not = _text_queries(p)
    query: dict[str, Any] = {"bool": {"filter": _scope(p)}}
    if must:
        query["bool"]["must"] = must
    if must_not:
        query["bool"]["must_not"] = must_not
    if p.ranked:
        sort: list[Any] = [{"_score": "desc"}, {"doc_key": "asc"}]
    else:
        direction = "desc" if p.order == "date_desc" else "asc"
        sort = [{"sort_ts": direction}, {"doc_key": "asc"}]
    body: dict[str, Any] = {
        "query": query,
        "sort": sort,
        "size": p.limit + 1,
        "track_total_hits": TOTAL_LIMIT,
        "_source": {"includes": list(HIT_FIELDS)},
    }
    if p.after is not None:
        body["search_after"] = [p.after[0], p.after[1]]
    marked = list(must)
    if p.sender is not None:
        marked.append(_field_phrase(p.sender, "sender"))
    if p.recipient is not None:
        marked.append(_field_phrase(p.recipient, "recipients"))
    if marked:
        whole = {"number_of_fragments": 0}
        fragments = {"fragment_size": 150, "number_of_fragments": 3}
        body["highlight"] = {
            "pre_tags": [_MARK_OPEN],
            "post_tags": [_MARK_CLOSE],
            "highlight_query": {"bool": {"should": marked}},
            "fields": {
                "title": whole,
                "sender": whole,
                "location": whole,
                "folder_path": whole,
                "recipients": fragments,
                "people": fragments,
                "attachment_names": fragments,
                "body": fragments,
                "attachment_text": fragments,
            },
        }
    return body


class _Answers(JSONSerializer):
    """opensearch-py's JSON, with answers read by orjson: a page of hits with its highlights
    is tens of kilobytes, and the standard library's decoder was a tenth of a search's CPU
    in the API. What orjson refuses (``NaN``, infinities, lone surrogates) the standard one
    reads. An integer past 64 bits orjson reads as a float; none of the fields read here can
    hold one (sizes, counts, millisecond timestamps)."""

    def loads(self, s: str) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return super().loads(s)


class OpenSearchBackend:
    """``SearchBackend`` on an OpenSearch cluster (see the module docstring for the layout)."""

    def __init__(
        self,
        url: str,
        *,
        index_prefix: str = "safekeep",
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        number_of_shards: int = 1,
        number_of_replicas: int = 1,
        refresh: bool | str = False,
        chunk_size: int = 500,
        max_chunk_bytes: int = 10 * 1024 * 1024,
        max_retries: int = 5,
        timeout: float = 30.0,
        **client_options: Any,
    ) -> None:
        if not _PREFIX_RE.match(index_prefix):
            raise ValueError(f"index prefix {index_prefix!r} must be [a-z0-9][a-z0-9_-]*")
        self.url = url
        self.prefix = index_prefix
        self.read_alias = f"{self.prefix}-items"
        self.write_alias = f"{self.prefix}-items-write"
        self.max_text_chars = max_text_chars
        self.number_of_shards = number_of_shards
        self.number_of_replicas = number_of_replicas
        self.refresh = refresh
        self.chunk_size = chunk_size
        self.max_chunk_bytes = max_chunk_bytes
        self.max_retries = max_retries
        self._timeout = timeout
        self._client_options = client_options
        self._client: AsyncOpenSearch | None = None
        self._indices: tuple[float, list[str]] = (0.0, [])

    def index_name(self, version: int) -> str:
        return f"{self.prefix}-items-v{version}"

    @property
    def client(self) -> AsyncOpenSearch:
        if self._client is None:
            raise SearchUnavailable("the search backend is not open")
        return self._client

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            # Uncompressed by default: next to the cluster, gzip cost more CPU than the bytes
            # it saved (a search: 0.18 ms here and 0.35 ms in OpenSearch, of ~5 ms in all).
            options = {
                "http_compress": False,
                "max_retries": 2,
                "serializer": _Answers(),
                **self._client_options,
            }
            self._client = AsyncOpenSearch(
                hosts=[self.url], timeout=self._timeout, retry_on_timeout=True, **options
            )
        try:
            if await self.client.indices.exists_alias(name=self.read_alias):
                current = await self.current_index()
                if int(current.rsplit("v", 1)[1]) < MAPPING_VERSION:
                    log.warning(
                        "search index %s predates mapping v%d: run migrate() to move to it",
                        current,
                        MAPPING_VERSION,
                    )
                return
            body = index_body(self.number_of_shards, self.number_of_replicas)
            body["aliases"] = {self.read_alias: {}, self.write_alias: {"is_write_index": True}}
            await self.client.indices.create(index=self.index_name(MAPPING_VERSION), body=body)
        except os_errors.RequestError as exc:
            if exc.error != "resource_already_exists_exception":  # another process won a race
                raise
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def ping(self) -> None:
        try:
            await self.client.count(index=self.read_alias, body={"query": {"match_none": {}}})
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc

    # -- writes -------------------------------------------------------------------------------

    def _source(self, doc: SearchDocument, stamp: int) -> dict[str, Any]:
        doc = bounded(doc, self.max_text_chars)
        return {
            "doc_key": f"{doc.tenant_id}/{doc.version_id}",
            "version_id": doc.version_id,
            "msp_id": doc.msp_id,
            "tenant_id": doc.tenant_id,
            "account_id": doc.account_id,
            "service": doc.service,
            "item_id": doc.item_id,
            "kind": doc.kind,
            "folder_key": folder_key(doc.folder_path),
            "file_type": doc.file_type,
            "valid_from": to_micros(doc.valid_from),
            "valid_to": to_micros(doc.valid_to) if doc.valid_to else None,
            "date": to_micros(doc.date) if doc.date else None,
            "sort_ts": to_micros(doc.sort_time),
            "size": doc.size,
            "updated_at": stamp,
            "has_attachments": doc.has_attachments,
            "title": doc.title,
            "folder_path": doc.folder_path,
            "sender": doc.sender,
            "recipients": doc.recipients,
            "people": doc.people,
            "location": doc.location,
            "attachment_names": doc.attachment_names,
            "body": doc.body,
            "attachment_text": doc.attachment_text,
        }

    async def _bulk(self, actions: AsyncIterator[dict[str, Any]], *, missing_ok: bool) -> None:
        failed: list[str] = []
        reasons: list[str] = []
        try:
            async for ok, item in async_streaming_bulk(
                self.client,
                actions,
                chunk_size=self.chunk_size,
                max_chunk_bytes=self.max_chunk_bytes,
                max_retries=self.max_retries,
                initial_backoff=0.5,
                max_backoff=10,
                raise_on_error=False,
                yield_ok=False,
                refresh=self.refresh,
            ):
                if ok:
                    continue
                ((_, info),) = item.items()
                if missing_ok and info.get("status") == 404:
                    continue  # already gone: a purge or an earlier delete won
                failed.append(str(info.get("_id", "")).split("/", 1)[-1])
                reasons.append(str(info.get("error", {}).get("type", info.get("status"))))
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc
        if failed:
            raise IndexingFailed(
                f"{len(failed)} search documents were refused ({', '.join(sorted(set(reasons)))})",
                failed,
            )

    async def index(self, docs: Sequence[SearchDocument]) -> None:
        if not docs:
            return
        stamp = _now_us()

        async def actions() -> AsyncIterator[dict[str, Any]]:
            for doc in docs:
                yield {
                    "_op_type": "index",
                    "_index": self.write_alias,
                    "_id": f"{doc.tenant_id}/{doc.version_id}",
                    "_routing": doc.tenant_id,
                    "_source": self._source(doc, stamp),
                }

        await self._bulk(actions(), missing_ok=False)

    async def _family(self) -> list[str]:
        """Every index of this prefix's family (normally one; two during ``migrate()``),
        cached briefly: ``migrate()`` waits longer than the cache before it relies on it."""
        cached_at, names = self._indices
        if time.monotonic() - cached_at < _INDEX_CACHE_SECONDS and names:
            return names
        try:
            found = await self.client.indices.get_alias(index=f"{self.prefix}-items-v*")
        except os_errors.NotFoundError:
            found = {}
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc
        names = sorted(found)
        self._indices = (time.monotonic(), names)
        return names

    async def _by_id(self, tenant_id: str, version_ids: Sequence[str], op: dict[str, Any]) -> None:
        indices = await self._family()
        ids = list(dict.fromkeys(version_ids))

        async def actions() -> AsyncIterator[dict[str, Any]]:
            for index in indices:
                for version_id in ids:
                    yield {
                        "_index": index,
                        "_id": f"{tenant_id}/{version_id}",
                        "_routing": tenant_id,
                        **op,
                    }

        if ids and indices:
            await self._bulk(actions(), missing_ok=True)

    async def close_versions(
        self, tenant_id: str, version_ids: Sequence[str], valid_to: datetime
    ) -> None:
        change = {"valid_to": to_micros(valid_to), "updated_at": _now_us()}
        await self._by_id(tenant_id, version_ids, {"_op_type": "update", "doc": change})

    async def delete_versions(self, tenant_id: str, version_ids: Sequence[str]) -> None:
        await self._by_id(tenant_id, version_ids, {"_op_type": "delete"})

    async def purge(self, *, tenant_id: str, account_id: str | None = None) -> None:
        filters: list[dict[str, Any]] = [{"term": {"tenant_id": tenant_id}}]
        if account_id is not None:
            filters.append({"term": {"account_id": account_id}})
        pattern = f"{self.prefix}-items-v*"
        try:
            # delete_by_query sees only refreshed documents: refresh first so that a document
            # indexed a moment ago is purged too.
            await self.client.indices.refresh(index=pattern)
            await self.client.delete_by_query(
                index=pattern,
                body={"query": {"bool": {"filter": filters}}},
                routing=tenant_id,
                conflicts="proceed",
                refresh=True,
                wait_for_completion=True,
            )
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc

    # -- search -------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        p = plan(query)
        params: dict[str, Any] = {}
        # Routing only narrows the shards searched; a comma would split an id into two.
        if len(p.tenant_ids) <= _MAX_ROUTED_TENANTS and not any("," in t for t in p.tenant_ids):
            params["routing"] = ",".join(p.tenant_ids)
        try:
            response = await self.client.search(
                index=self.read_alias, body=search_body(p), params=params
            )
        except os_errors.RequestError as exc:
            # What OpenSearch said stays in our log: the caller learns which input, not
            # which engine or which of its exceptions.
            log.warning("search refused by OpenSearch: %s", str(exc)[:500])
            raise InvalidQuery("the search engine refused this query") from exc
        except (os_errors.ConnectionError, os_errors.TransportError) as exc:
            raise SearchUnavailable(f"OpenSearch is unavailable: {exc}") from exc
        raw_hits = response["hits"]["hits"]
        more = len(raw_hits) > p.limit
        raw_hits = raw_hits[: p.limit]
        # Every fragment of the page rendered in one pass, then handed back hit by hit.
        fragments = [
            f for raw in raw_hits for found in raw.get("highlight", {}).values() for f in found
        ]
        rendered = iter(render_highlights(fragments, _MARK_OPEN, _MARK_CLOSE))
        hits = []
        for raw in raw_hits:
            source = raw["_source"]
            marks = {
                field: [next(rendered) for _ in found]
                for field, found in raw.get("highlight", {}).items()
            }
            hits.append(
                SearchHit(
                    version_id=source["version_id"],
                    tenant_id=source["tenant_id"],
                    account_id=source["account_id"],
                    service=source["service"],
                    item_id=source["item_id"],
                    kind=source["kind"],
                    title=source["title"],
                    folder_path=source["folder_path"],
                    date=from_micros(source["date"]) if source.get("date") is not None else None,
                    size=source["size"],
                    score=raw["_score"] if p.ranked else None,
                    highlights=marks,
                )
            )
        total_info = response["hits"]["total"]
        total = total_info["value"] if total_info["relation"] == "eq" else None
        next_cursor = None
        if more and raw_hits:
            key, doc_key = raw_hits[-1]["sort"]
            next_cursor = p.cursor_for(key, doc_key)
        return SearchPage(hits=hits, next_cursor=next_cursor, total=total)

    # -- mapping changes -------------------------------------------------------------------------

    async def current_index(self) -> str:
        found = await self.client.indices.get_alias(name=self.write_alias)
        return next(iter(found))

    async def migrate(self, version: int | None = None) -> str:
        """Move the data to ``{prefix}-items-v{version}`` (default: the next one) with the
        current mapping, keeping searches and writes up throughout. Returns the new index.

        A document re-indexed under the same version id after the flip and also changed
        during the first copy may come back with the old copy's content: version documents
        are immutable, so this is the same content."""
        old = await self.current_index()
        new = self.index_name(version or int(old.rsplit("v", 1)[1]) + 1)
        if new == old:
            return old
        start = _now_us() - _CLOCK_SKEW_US
        await self.client.indices.create(
            index=new, body=index_body(self.number_of_shards, self.number_of_replicas)
        )
        # Let every process's cached family list include the new index before the flip.
        await asyncio.sleep(_INDEX_CACHE_SECONDS * 2)
        await self._reindex(old, new, None)
        # A second pass before the flip shrinks the window in which documents written during
        # the first copy are not yet searchable; the pass after the flip closes it.
        since_copy = {"range": {"updated_at": {"gte": start}}}
        await self._reindex(old, new, since_copy)
        await self.client.indices.update_aliases(
            body={
                "actions": [
                    {"remove": {"index": old, "alias": self.read_alias}},
                    {"remove": {"index": old, "alias": self.write_alias}},
                    {"add": {"index": new, "alias": self.read_alias}},
                    {"add": {"index": new, "alias": self.write_alias, "is_write_index": True}},
                ]
            }
        )
        await self._reindex(old, new, since_copy)
        await self.reconcile_deletes(old, new)
        await self.client.indices.delete(index=old)
        self._indices = (0.0, [])
        return new

    async def _reindex(self, source: str, dest: str, query: dict[str, Any] | None) -> None:
        await self.client.indices.refresh(index=source)
        body: dict[str, Any] = {
            "source": {"index": source},
            "dest": {"index": dest},
            # Marks what came from the copy: a document written to the new index after the
            # flip is a whole new document without the mark (see reconcile_deletes).
            "script": {"lang": "painless", "source": "ctx._source.migrated = true"},
        }
        if query is not None:
            body["source"]["query"] = query
        await self.client.reindex(body=body, wait_for_completion=True, refresh=True)

    async def reconcile_deletes(self, old: str, new: str) -> int:
        """Delete from ``new`` the documents copied from ``old`` that ``old`` no longer has:
        deleted while the copy ran (the copy reads a snapshot). Only documents carrying the
        copy's mark are checked; one written after the flip replaced its whole source and has
        no mark, so it is never touched, whatever the writers' clocks say."""
        await self.client.indices.refresh(index=[old, new])
        removed = 0
        batch: list[dict[str, Any]] = []

        async def flush() -> int:
            if not batch:
                return 0
            found = await self.client.mget(
                index=old,
                body={"docs": [{"_id": h["_id"], "routing": h["_routing"]} for h in batch]},
                params={"_source": "false"},
            )
            gone = [h for h, d in zip(batch, found["docs"], strict=True) if not d.get("found")]
            for hit in gone:
                await self.client.delete(
                    index=new, id=hit["_id"], routing=hit["_routing"], params={"ignore": 404}
                )
            batch.clear()
            return len(gone)

        async for hit in async_scan(
            self.client,
            index=new,
            query={"query": {"term": {"migrated": True}}, "_source": False},
            size=1_000,
        ):
            batch.append(hit)
            if len(batch) >= 1_000:
                removed += await flush()
        removed += await flush()
        if removed:
            await self.client.indices.refresh(index=new)
        return removed

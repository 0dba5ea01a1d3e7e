"""A page of rows written straight from the rows (``rows_response``) is byte for byte the page
the model would write (``json_response(page_of(...))`` with a model per row)."""

from __future__ import annotations

import json
import uuid
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field

from safekeep.api.accounts.schemas import AccountOut
from safekeep.api.schemas import (
    Page,
    json_response,
    page_of,
    plain_response,
    rows_body,
    rows_response,
)
from safekeep.api.search.router import Hit, SearchResults
from safekeep.api.snapshots.schemas import SnapshotOut
from safekeep.api.tenants import router as tenants_router
from safekeep.api.tenants.schemas import TenantOut
from safekeep.search.query import SearchHit
from safekeep.tenants import pagination
from safekeep.tenants.models import (
    AccountKind,
    AccountState,
    ConsentState,
    SnapshotStatus,
    TenantStatus,
)

WHEN = datetime(2026, 12, 4, 13, 55, 7, 123456, tzinfo=UTC)


def _rows(model: type[BaseModel], values: list[dict[str, Any]]) -> list[Any]:
    """Rows as SQLAlchemy gives them for ``select(*columns named as the model's fields)``:
    named tuples (``Row`` has the same ``_asdict``), the fields in the model's order."""
    row = namedtuple("row", list(model.model_fields))  # type: ignore[misc]
    return [row(**v) for v in values]


ACCOUNTS = [
    {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "kind": AccountKind.user,
        "graph_id": "0b1c",
        "display_name": 'Zoë "quoted" <Ünïcode> \\ name',
        "principal_name": "zoe@contoso.example",
        "mail": None,
        "protected": True,
        "state": AccountState.active,
        "licensed": True,
        "account_enabled": False,
        "services_found": {"mail": True, "onedrive": False},
        "last_seen_at": WHEN,
        "cancelled_at": None,
        "cancel_reason": None,
        "last_backup_at": WHEN - timedelta(hours=5),
        "least_recent_backup_at": WHEN - timedelta(days=9),
        "created_at": WHEN - timedelta(days=3),
    },
    {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "kind": AccountKind.site,
        "graph_id": "site,1,2",
        "display_name": "",
        "principal_name": None,
        "mail": "team@contoso.example",
        "protected": False,
        "state": AccountState.cancelled,
        "licensed": False,
        "account_enabled": True,
        "services_found": {},
        "last_seen_at": None,
        "cancelled_at": WHEN.replace(microsecond=0),
        "cancel_reason": "licence removed",
        "last_backup_at": None,
        "least_recent_backup_at": None,
        "created_at": WHEN,
    },
]

SNAPSHOTS = [
    {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "account_id": uuid.uuid4(),
        "service": "mail",
        "seq": 7,
        "job_id": None,
        "status": SnapshotStatus.partial,
        "started_at": WHEN,
        "completed_at": None,
        "items_total": 2**40,
        "items_added": 0,
        "items_changed": 3,
        "items_removed": 1,
        "bytes_added": 12_345_678_901,
        "skipped": 2,
    }
]


@pytest.mark.parametrize(
    ("model", "values", "cursor"),
    [(AccountOut, ACCOUNTS, "eyJrIjoxfQ"), (SnapshotOut, SNAPSHOTS, None), (AccountOut, [], None)],
)
def test_a_page_of_rows_is_written_as_the_model_writes_it(
    model: type[BaseModel], values: list[dict[str, Any]], cursor: str | None
) -> None:
    page = pagination.Page(items=_rows(model, values), next_cursor=cursor)
    direct = rows_response(page, model)
    modelled = json_response(page_of(page, lambda row: model.model_validate(row._asdict())))
    assert direct.body == modelled.body
    assert direct.media_type == modelled.media_type == "application/json"
    assert json.loads(bytes(direct.body))["next_cursor"] == cursor
    # and it is what the route's documented answer reads back to
    Page[model].model_validate_json(bytes(direct.body))  # type: ignore[valid-type]


class _Maybe(BaseModel):
    kind: AccountKind | None
    state: AccountState | str
    count: int


def test_string_enums_are_written_as_their_values_even_in_unions() -> None:
    """The row writer declares a string enum as ``str`` (pydantic-core reads nothing of the
    member): in a union too, with the other member types kept."""
    values: list[dict[str, Any]] = [
        {"kind": AccountKind.site, "state": AccountState.cancelled, "count": 1},
        {"kind": None, "state": "other", "count": 2},
    ]
    page = pagination.Page(items=_rows(_Maybe, values), next_cursor=None)
    direct = rows_response(page, _Maybe)
    modelled = json_response(page_of(page, lambda row: _Maybe.model_validate(row._asdict())))
    assert direct.body == modelled.body
    assert json.loads(bytes(direct.body))["items"] == [
        {"kind": "site", "state": "cancelled", "count": 1},
        {"kind": None, "state": "other", "count": 2},
    ]


def test_a_model_whose_fields_are_not_plain_is_refused() -> None:
    class Aliased(BaseModel):
        id: uuid.UUID = Field(serialization_alias="identifier")

    page = pagination.Page(items=_rows(Aliased, [{"id": uuid.uuid4()}]), next_cursor=None)
    with pytest.raises(TypeError, match="plain fields"):
        rows_response(page, Aliased)


def _hit(n: int, **changes: Any) -> dict[str, Any]:
    item = uuid.uuid4()
    base = f"/v1/tenants/t/accounts/a/items/{item}"
    return {
        "version_id": str(uuid.uuid4()),
        "tenant_id": str(uuid.uuid4()),
        "account_id": str(uuid.uuid4()),
        "service": "mail",
        "item_id": str(item),
        "kind": "message",
        "title": f'Invoice "Q{n}" <b>Ünïcode</b> \\',
        "folder_path": "/Inbox/Finance",
        "date": WHEN + timedelta(minutes=n),
        "size": 1234 * n,
        "score": 3.25 / n,
        "highlights": {"body": ["the <mark>invoice</mark>", "a second"], "title": []},
        "external_id": f"AAMk{n}",
        "links": {"item": base, "versions": f"{base}/versions"},
        **changes,
    }


@pytest.mark.parametrize(
    "hits",
    [
        [],
        [_hit(1), _hit(2, date=None, score=None, highlights={}, external_id=None)],
        [_hit(n) for n in range(1, 26)],
    ],
)
def test_search_results_as_dicts_are_written_as_the_models_write_them(
    hits: list[dict[str, Any]],
) -> None:
    """A search page is written from dicts of its hits (``plain_response``): the same bytes
    as the ``SearchResults`` model built of ``Hit`` models, which the route documents."""
    body = {"hits": hits, "next_cursor": "c" if hits else None, "total": len(hits) or None}
    direct = plain_response(SearchResults, body)
    modelled = json_response(
        SearchResults(
            hits=[Hit.model_validate(h) for h in hits],
            next_cursor=body["next_cursor"],
            total=body["total"],
        )
    )
    assert direct.body == modelled.body
    assert SearchResults.model_validate_json(bytes(direct.body)).model_dump() == (
        SearchResults.model_validate(body).model_dump()
    )


def test_a_nested_model_whose_fields_are_not_plain_is_refused() -> None:
    class Aliased(BaseModel):
        id: uuid.UUID = Field(serialization_alias="identifier")

    class Outer(BaseModel):
        inner: list[Aliased]

    with pytest.raises(TypeError, match="Aliased is not a model of plain fields"):
        plain_response(Outer, {"inner": []})


def test_a_page_of_tenants_is_written_from_rows_of_their_stored_columns() -> None:
    """The tenants list reads two columns under other names than their fields
    (``requested_domain``, ``app_client_id``): written from the rows with the fields named,
    the page is the bytes the models write (so its ETag is the one clients already hold)."""
    values = [
        {
            "id": uuid.uuid4(),
            "name": 'Contoso "Ltd" <Ünïcode>',
            "status": TenantStatus.active,
            "requested_domain": "contoso.example",
            "entra_tenant_id": str(uuid.uuid4()),
            "consent_state": ConsentState.granted,
            "consent_changed_at": WHEN,
            "consent_error": None,
            "app_client_id": None,
            "storage_prefix": "t/abc",
            "next_backup_at": WHEN + timedelta(hours=4),
            "last_backup_at": None,
            "created_at": WHEN - timedelta(days=9),
            "updated_at": WHEN,
        },
        {
            "id": uuid.uuid4(),
            "name": "",
            "status": TenantStatus.deleted,
            "requested_domain": None,
            "entra_tenant_id": None,
            "consent_state": ConsentState.pending,
            "consent_changed_at": None,
            "consent_error": "AADSTS65004: declined",
            "app_client_id": str(uuid.uuid4()),
            "storage_prefix": "t/def",
            "next_backup_at": None,
            "last_backup_at": WHEN,
            "created_at": WHEN,
            "updated_at": WHEN,
        },
    ]
    row = namedtuple("row", list(tenants_router._LISTED))  # type: ignore[misc]
    page = pagination.Page(items=[row(**v) for v in values], next_cursor="next")
    direct = rows_body(page, TenantOut, tenants_router._FIELDS)  # type: ignore[arg-type]
    modelled = json_response(page_of(page, lambda r: TenantOut.model_validate(r._asdict())))
    assert direct == modelled.body
    assert [t["domain"] for t in json.loads(direct)["items"]] == ["contoso.example", None]


def test_a_search_hits_fields_come_in_the_models_order_however_it_was_made() -> None:
    """The search route writes each hit from the backend's ``SearchHit`` (its fields as
    validated, then the Graph id and links): whatever order a backend passes them in, or
    leaves some to their defaults, the page is the bytes the documented models write."""
    given = _hit(3)
    backend_fields = {k: v for k, v in given.items() if k not in ("external_id", "links")}
    for made in (
        SearchHit(**dict(reversed(list(backend_fields.items())))),
        SearchHit(**{k: v for k, v in backend_fields.items() if k not in ("score", "highlights")}),
    ):
        fields = dict(made.__dict__)  # as the route takes them
        fields["external_id"] = given["external_id"]
        fields["links"] = given["links"]
        body = {"hits": [fields], "next_cursor": None, "total": 1}
        expected = SearchResults(hits=[Hit.model_validate(fields)], next_cursor=None, total=1)
        assert plain_response(SearchResults, body).body == json_response(expected).body

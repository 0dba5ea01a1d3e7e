"""A pre-signed URL to an export lives an hour, and never past the export's own expiry: the URL
is as good as the bytes, which the API stops serving when the export expires."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import update

from safekeep.runtime import Runtime
from safekeep.tenants.models import Export, utcnow
from tests.api.conftest import build_world


async def test_a_presigned_url_never_outlives_its_export(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    w = await build_world(runtime, "alpha")
    path = f"/v1/exports/{w.export.id}/url"

    r = await client.get(path, headers=w.msp.headers)  # the export has a year left
    assert r.status_code == 200, r.text
    assert parse_qs(urlsplit(r.json()["url"]).query)["X-Amz-Expires"] == ["3600"]

    ends = utcnow() + timedelta(minutes=10)
    async with runtime.db.session() as session:
        await session.execute(
            update(Export).where(Export.id == w.export.id).values(expires_at=ends)
        )
    r = await client.get(path, headers=w.msp.headers)
    assert r.status_code == 200, r.text
    lives = int(parse_qs(urlsplit(r.json()["url"]).query)["X-Amz-Expires"][0])
    assert 540 <= lives <= 600
    assert datetime.fromisoformat(r.json()["expires_at"]) <= ends

    r = await client.get(
        f"/v1/exports/{w.export.id}/download",
        params={"redirect": "true"},
        headers=w.msp.headers,
        follow_redirects=False,
    )
    assert r.status_code == 307, r.text
    assert int(parse_qs(urlsplit(r.headers["location"]).query)["X-Amz-Expires"][0]) <= 600

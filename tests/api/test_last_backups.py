"""An account's last backup, kept as its snapshots finish, and the list of the seats whose
backups have stopped (``not_backed_up_since``), on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from safekeep.runtime import Runtime
from safekeep.tenants.models import utcnow
from tests.factories import create_account, create_msp, create_tenant, end_snapshot


async def test_the_seats_whose_backups_stopped_are_listed(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    runtime = any_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    tenant = await create_tenant(runtime, msp)
    recent, stopped, _never = [
        await create_account(runtime, tenant, name=f"{name} User")
        for name in ("Recent", "Stopped", "Never")
    ]
    await create_account(runtime, tenant, name="Released User", protected=False)
    now = utcnow().replace(microsecond=0)
    day, hour = timedelta(days=1), timedelta(hours=1)
    await end_snapshot(runtime, recent, at=now - 3 * day)
    # an incremental that found nothing new, with items skipped, is a backup all the same
    await end_snapshot(
        runtime, recent, service="onedrive", at=now - 2 * hour, bytes_added=0, skipped=1
    )
    # a snapshot ending after a later one (a resumed run) leaves the later one the last
    await end_snapshot(runtime, recent, seq=2, at=now - 2 * day)
    await end_snapshot(runtime, stopped, at=now - 5 * day)

    path = f"/v1/tenants/{tenant.id}/accounts"
    listed = (await any_client.get(path, headers=msp.headers)).json()["items"]
    shown = {a["display_name"]: a["last_backup_at"] for a in listed}
    assert {k: v and datetime.fromisoformat(v) for k, v in shown.items()} == {
        "Recent User": now - 2 * hour,
        "Stopped User": now - 5 * day,
        "Never User": None,
        "Released User": None,
    }
    one = await any_client.get(f"{path}/{stopped.id}", headers=msp.headers)
    assert datetime.fromisoformat(one.json()["last_backup_at"]) == now - 5 * day

    async def stale(since: str, **more: str) -> list[str]:
        r = await any_client.get(
            path, params={"not_backed_up_since": since, **more}, headers=msp.headers
        )
        assert r.status_code == 200, r.text
        return sorted(a["display_name"] for a in r.json()["items"])

    a_day_ago = (now - day).isoformat()
    assert await stale(a_day_ago, protected="true") == ["Never User", "Stopped User"]
    assert await stale(a_day_ago) == ["Never User", "Released User", "Stopped User"]
    assert await stale((now - 10 * day).isoformat(), protected="true") == ["Never User"]
    # without a zone an instant is UTC; a page at a time, like any list
    naive = (now - day).replace(tzinfo=None).isoformat()
    first_page = await stale(naive, protected="true", limit="1")
    assert len(first_page) == 1 and first_page[0] in ("Never User", "Stopped User")
    for bad in ("yesterday", "1733500000", ""):
        r = await any_client.get(path, params={"not_backed_up_since": bad}, headers=msp.headers)
        assert r.status_code == 422, (bad, r.text)
    r = await any_client.get(path, params={"not_backed_up_since": a_day_ago}, headers=other.headers)
    assert r.status_code == 404  # another MSP's tenant: nothing, not an empty page

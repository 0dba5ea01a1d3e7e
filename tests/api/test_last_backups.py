"""An account's last backup, kept as its snapshots finish, and the list of the seats whose
backups have stopped (``not_backed_up_since``), under a tenant and across the MSP's, on both
databases."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy import update

from safekeep.runtime import Runtime
from safekeep.tenants.models import Policy, Tenant, utcnow
from tests.factories import (
    create_account,
    create_key,
    create_msp,
    create_tenant,
    end_snapshot,
)


async def test_the_seats_whose_backups_stopped_are_listed(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """A seat is stale when one of the services it is backed up for stopped: its least recent
    backup is the oldest of its services' last ones, by its tenant's policy and what
    discovery found, and the filter reads that, not the latest backup of any service."""
    runtime = any_runtime
    msp, other = await create_msp(runtime), await create_msp(runtime, "Other MSP")
    tenant = await create_tenant(runtime, msp, policy={"services": ["mail", "onedrive"]})
    recent, stopped, mail_stopped, _never, mailless = [
        await create_account(runtime, tenant, name=f"{name} User", services_found=found)
        for name, found in (
            ("Recent", None),
            ("Stopped", None),
            ("Mailstopped", None),
            ("Never", None),
            ("Mailless", {"mail": False, "onedrive": True}),  # discovery found no mailbox
        )
    ]
    await create_account(runtime, tenant, name="Released User", protected=False)
    now = utcnow().replace(microsecond=0)
    day, hour = timedelta(days=1), timedelta(hours=1)
    await end_snapshot(runtime, recent, at=now - 3 * hour)
    # an incremental that found nothing new, with items skipped, is a backup all the same
    await end_snapshot(
        runtime, recent, service="onedrive", at=now - 2 * hour, bytes_added=0, skipped=1
    )
    # a snapshot ending after a later one (a resumed run) leaves the later one the last
    await end_snapshot(runtime, recent, seq=2, at=now - 5 * hour)
    for service in ("mail", "onedrive"):
        await end_snapshot(runtime, stopped, service=service, at=now - 5 * day)
    # the mailbox stopped four days ago while the OneDrive goes on
    await end_snapshot(runtime, mail_stopped, at=now - 4 * day)
    await end_snapshot(runtime, mail_stopped, service="onedrive", at=now - hour)
    await end_snapshot(runtime, mailless, service="onedrive", at=now - hour)

    path = f"/v1/tenants/{tenant.id}/accounts"

    def instant(value: str | None) -> datetime | None:
        return value and datetime.fromisoformat(value)  # type: ignore[return-value]

    listed = (await any_client.get(path, headers=msp.headers)).json()["items"]
    shown = {
        a["display_name"]: (instant(a["last_backup_at"]), instant(a["least_recent_backup_at"]))
        for a in listed
    }
    assert shown == {
        "Recent User": (now - 2 * hour, now - 3 * hour),
        "Stopped User": (now - 5 * day, now - 5 * day),
        "Mailstopped User": (now - hour, now - 4 * day),
        "Never User": (None, None),
        "Mailless User": (now - hour, now - hour),
        "Released User": (None, None),
    }
    one = (await any_client.get(f"{path}/{recent.id}", headers=msp.headers)).json()
    assert {k: instant(v) for k, v in one["last_backups"].items()} == {
        "mail": now - 3 * hour,
        "onedrive": now - 2 * hour,
    }
    assert one["last_backups"]["mail"].endswith("Z")  # written as every other instant

    async def stale(since: str, **more: str) -> list[str]:
        r = await any_client.get(
            path, params={"not_backed_up_since": since, **more}, headers=msp.headers
        )
        assert r.status_code == 200, r.text
        return sorted(a["display_name"] for a in r.json()["items"])

    a_day_ago = (now - day).isoformat()
    assert await stale(a_day_ago, protected="true") == [
        "Mailstopped User",
        "Never User",
        "Stopped User",
    ]
    assert await stale(a_day_ago) == [
        "Mailstopped User",
        "Never User",
        "Released User",
        "Stopped User",
    ]
    assert await stale((now - 10 * day).isoformat(), protected="true") == ["Never User"]
    # without a zone an instant is UTC; a page at a time, like any list
    naive = (now - day).replace(tzinfo=None).isoformat()
    first_page = await stale(naive, protected="true", limit="1")
    assert len(first_page) == 1 and first_page[0] in ("Mailstopped User", "Never User")
    for bad in ("yesterday", "1733500000", ""):
        r = await any_client.get(path, params={"not_backed_up_since": bad}, headers=msp.headers)
        assert r.status_code == 422, (bad, r.text)
    r = await any_client.get(path, params={"not_backed_up_since": a_day_ago}, headers=other.headers)
    assert r.status_code == 404  # another MSP's tenant: nothing, not an empty page

    # The policy stops protecting mail: from the seat's next backup its mail no longer counts
    # (until then it is listed as it was).
    async with runtime.db.session() as session:
        await session.execute(
            update(Policy).where(Policy.tenant_id == tenant.id).values(services=["onedrive"])
        )
    assert "Mailstopped User" in await stale(a_day_ago, protected="true")
    await end_snapshot(runtime, mail_stopped, service="onedrive", seq=2, at=now)
    assert await stale(a_day_ago, protected="true") == ["Never User", "Stopped User"]
    # A service the policy starts protecting counts as never backed up until its first one.
    async with runtime.db.session() as session:
        await session.execute(
            update(Policy)
            .where(Policy.tenant_id == tenant.id)
            .values(services=["onedrive", "calendar"])
        )
    await end_snapshot(runtime, mail_stopped, service="onedrive", seq=3, at=now)
    assert "Mailstopped User" in await stale(a_day_ago, protected="true")
    await end_snapshot(runtime, mail_stopped, service="calendar", at=now)
    assert "Mailstopped User" not in await stale(a_day_ago, protected="true")


async def test_the_seats_whose_backups_stopped_across_every_client_tenant(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """GET /v1/accounts: the seats of every live tenant the key sees, newest first, with a
    tenant's list's filters, paged; none of a deleted tenant's, none of another MSP's, none
    outside a limited key's tenants."""
    runtime = any_runtime
    msp, other = await create_msp(runtime, "Portal MSP"), await create_msp(runtime, "Other MSP")
    mail_only = {"services": ["mail"]}  # each seat's one backup below is all it needs
    first, second, gone = [
        await create_tenant(runtime, msp, name=n, policy=mail_only) for n in "ABC"
    ]
    theirs = await create_tenant(runtime, other, name="Theirs", policy=mail_only)
    now = utcnow().replace(microsecond=0)
    day = timedelta(days=1)
    made = {}
    for tenant, name, protected, backed_up in (
        (first, "A fresh", True, now - day / 2),
        (first, "A stopped", True, now - 4 * day),
        (second, "B never", True, None),
        (second, "B released", False, now - 9 * day),
        (gone, "C stopped", True, now - 4 * day),
        (theirs, "Their stopped", True, now - 4 * day),
    ):
        account = await create_account(runtime, tenant, name=name, protected=protected)
        if backed_up is not None:
            await end_snapshot(runtime, account, at=backed_up)
        made[name] = account
    async with runtime.db.session() as session:
        await session.execute(update(Tenant).where(Tenant.id == gone.id).values(status="deleted"))

    async def names(headers: dict[str, str], **params: str) -> list[str]:
        r = await any_client.get("/v1/accounts", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [a["display_name"] for a in r.json()["items"]]

    ours = ["B released", "B never", "A stopped", "A fresh"]  # newest first
    assert await names(msp.headers) == ours
    a_day_ago = (now - day).isoformat()
    stale = await names(msp.headers, protected="true", not_backed_up_since=a_day_ago)
    assert stale == ["B never", "A stopped"]
    assert await names(msp.headers, protected="false") == ["B released"]
    assert await names(msp.headers, q="STOPPED") == ["A stopped"]
    assert await names(msp.headers, kind="site") == []
    assert await names(other.headers) == ["Their stopped"]
    limited = {"Authorization": f"Bearer {await create_key(runtime, msp, ['read'], [first.id])}"}
    assert await names(limited, not_backed_up_since=a_day_ago) == ["A stopped"]
    listed = (await any_client.get("/v1/accounts", headers=msp.headers)).json()["items"]
    assert {a["display_name"]: a["tenant_id"] for a in listed} == {
        name: str(made[name].tenant_id) for name in ours
    }
    pages, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await any_client.get("/v1/accounts", params=params, headers=msp.headers)
        pages += [a["display_name"] for a in page.json()["items"]]
        if not (cursor := page.json()["next_cursor"]):
            break
    assert pages == ours
    for bad in ({"not_backed_up_since": "yesterday"}, {"state": "gone"}, {"q": "x" * 201}):
        r = await any_client.get("/v1/accounts", params=bad, headers=msp.headers)
        assert r.status_code == 422, (bad, r.text)


async def test_a_name_search_matches_its_characters_literally(
    any_runtime: Runtime, any_client: httpx.AsyncClient
) -> None:
    """`q` finds the characters it is given: "%", "_" and "\\" are not LIKE's wildcards or
    escape, under a tenant and across the MSP's."""
    msp = await create_msp(any_runtime)
    tenant = await create_tenant(any_runtime, msp)
    for name in ("Sales 50% Team", "Sales 500 Team", "ops_desk Room", "opsXdesk Room", "C:\\Share"):
        await create_account(any_runtime, tenant, name=name)

    async def found(q: str) -> list[str]:
        answers = {}
        for path in (f"/v1/tenants/{tenant.id}/accounts", "/v1/accounts"):
            r = await any_client.get(path, params={"q": q}, headers=msp.headers)
            assert r.status_code == 200, r.text
            answers[path] = sorted(a["display_name"] for a in r.json()["items"])
        tenants, everywhere = answers.values()
        assert tenants == everywhere, answers
        return tenants

    assert await found("50%") == ["Sales 50% Team"]
    assert await found("ops_desk") == ["ops_desk Room"]
    assert await found("c:\\s") == ["C:\\Share"]
    assert await found("SALES") == ["Sales 50% Team", "Sales 500 Team"]
    assert await found("%") == ["Sales 50% Team"]

"""The "done when" of the simulator issue, measured and printed.

A 10-user tenant with 2,000 messages and 500 files: start time, an msal token, a full delta
over every service (each item exactly once), a second delta after edits (exactly those
edits), and 429s with Retry-After under parallel load on one mailbox.

Run: .venv/bin/python -m bench.graphsim_done_when [--users 10 --messages 2000 --files 500]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msal

from graphsim import Simulator

WINDOW = {"startDateTime": "2024-01-01T00:00:00Z", "endDateTime": "2027-12-31T00:00:00Z"}


def collect(client: httpx.Client, url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str, int]:
    values: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    delta = ""
    while next_url:
        resp = client.get(next_url, **kwargs)
        kwargs.pop("params", None)
        resp.raise_for_status()
        body = resp.json()
        pages += 1
        values.extend(body["value"])
        next_url = body.get("@odata.nextLink")
        delta = body.get("@odata.deltaLink", delta)
    return values, delta, pages


def full_sync(
    client: httpx.Client, sim: Simulator
) -> tuple[dict[str, dict[str, str]], Counter[str], int]:
    """Every service of every user and site; returns delta links, item counts and page count."""
    tenant = sim.tenant()
    links: dict[str, dict[str, str]] = {}
    counts: Counter[str] = Counter()
    pages = 0
    prefer = {"Prefer": "odata.maxpagesize=100"}
    for user in tenant.users.values():
        seen: Counter[str] = Counter()
        user_links: dict[str, str] = {}
        folders, _, p = collect(client, f"/users/{user.id}/mailFolders/delta")
        pages += p
        for folder in folders:
            values, link, p = collect(
                client,
                f"/users/{user.id}/mailFolders/{folder['id']}/messages/delta",
                headers=prefer,
                params={"$select": "id,lastModifiedDateTime"},
            )
            pages += p
            seen.update(f"mail:{v['id']}" for v in values)
            user_links[f"mail:{folder['id']}"] = link
        cfolders, _, p = collect(client, f"/users/{user.id}/contactFolders/delta")
        pages += p
        for folder in [{"id": user.contacts_root}, *cfolders]:
            values, link, p = collect(
                client,
                f"/users/{user.id}/contactFolders/{folder['id']}/contacts/delta",
                headers=prefer,
            )
            pages += p
            seen.update(f"contact:{v['id']}" for v in values)
            user_links[f"contact:{folder['id']}"] = link
        values, link, p = collect(
            client, f"/users/{user.id}/calendarView/delta", headers=prefer, params=WINDOW
        )
        pages += p
        seen.update(f"event:{v['id']}" for v in values)
        user_links["calendar"] = link
        values, link, p = collect(
            client, f"/users/{user.id}/drive/root/delta", params={"$top": "200"}
        )
        pages += p
        seen.update(f"file:{v['id']}" for v in values if "root" not in v)
        user_links["drive"] = link
        duplicates = [k for k, n in seen.items() if n > 1]
        assert not duplicates, f"items returned twice: {duplicates[:3]}"
        expected_mail = {
            i.id for i in tenant.items.values() if i.kind == "message" and i.user_id == user.id
        }
        assert {k[5:] for k in seen if k.startswith("mail:")} == expected_mail
        expected_contacts = {
            i.id for i in tenant.items.values() if i.kind == "contact" and i.user_id == user.id
        }
        assert {k[8:] for k in seen if k.startswith("contact:")} == expected_contacts
        drive = tenant.drives[user.drive_id or ""]
        expected_files = {i.id for i in drive.items.values() if not i.deleted and i.parent_id}
        assert {k[5:] for k in seen if k.startswith("file:")} == expected_files
        counts.update(k.split(":")[0] for k in seen)
        links[user.id] = user_links
    for site in tenant.sites.values():
        if site.personal:
            continue
        site_links: dict[str, str] = {}
        for drive_id in site.drive_ids:
            values, link, p = collect(client, f"/drives/{drive_id}/root/delta")
            pages += p
            counts["sitefile"] += sum(1 for v in values if "root" not in v)
            site_links[f"drive:{drive_id}"] = link
        for list_id in site.list_ids:
            values, link, p = collect(
                client, f"/sites/{site.id}/lists/{list_id}/items/delta", params={"expand": "fields"}
            )
            pages += p
            counts["listitem"] += len(values)
            site_links[f"list:{list_id}"] = link
        links[site.id] = site_links
    return links, counts, pages


def make_edits(sim: Simulator) -> set[str]:
    """Edits as users would make them; returns the ids a second delta must report."""
    tenant = sim.tenant()
    users = sorted(tenant.users.values(), key=lambda u: u.upn)
    expected: set[str] = set()
    messages = sorted((i for i in tenant.items.values() if i.kind == "message"), key=lambda i: i.id)
    for item in messages[:5]:
        sim.edit_item(tenant.id, item.id, {"isRead": not item.props.get("isRead")})
        expected.add(item.id)
    for item in messages[5:7]:
        sim.move_item(
            tenant.id,
            item.id,
            "archive" if item.folder_id != users[0].well_known["archive"] else "inbox",
        )
        expected.add(item.id)
    for item in messages[7:9]:
        sim.delete_item(tenant.id, item.id, hard=True)
        expected.add(item.id)
    expected.add(
        sim.add_message(tenant.id, users[0].id, b"From: x@y.example\r\nSubject: new\r\n\r\nnew\r\n")
    )
    contacts = sorted((i for i in tenant.items.values() if i.kind == "contact"), key=lambda i: i.id)
    for item in contacts[:3]:
        sim.edit_item(tenant.id, item.id, {"jobTitle": "Edited"})
        expected.add(item.id)
    start = datetime(2026, 1, 20, 15, 0, tzinfo=UTC)
    expected.add(
        sim.add_event(
            tenant.id, users[1].id, subject="New event", start=start, end=start + timedelta(hours=1)
        )
    )
    for user in users[:3]:
        drive = tenant.drives[user.drive_id or ""]
        files = sorted(
            (i for i in drive.items.values() if not i.deleted and not i.is_folder),
            key=lambda i: i.id,
        )
        sim.edit_item(tenant.id, files[0].id, {"content": b"edited " + files[0].id.encode()})
        expected.add(files[0].id)
        expected.add(sim.add_file(tenant.id, "Documents/added.txt", user=user.id, data=b"added"))
    return expected


def second_sync(client: httpx.Client, sim: Simulator, links: dict[str, dict[str, str]]) -> set[str]:
    changed: set[str] = set()
    for owner_links in links.values():
        for key, link in owner_links.items():
            # Drives also return the unchanged folders above each change unless told not to;
            # "exactly the edits" means the changed items themselves.
            headers = {"Prefer": "deltaExcludeParent"} if key.startswith("drive") else None
            values, _, _ = collect(client, link, headers=headers)
            for value in values:
                changed.add(
                    value.get("seriesMasterId") or value["id"] if key == "calendar" else value["id"]
                )
    return changed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(var, None)  # requests would let them override msal's verify=

    t0 = time.perf_counter()
    sim = Simulator(
        seed=1, users=args.users, messages=args.messages, files=args.files, consented=True
    )
    sim.start()
    startup = time.perf_counter() - t0
    print(
        f"startup: {startup:.2f} s for {args.users} users, {args.messages} messages, "
        f"{args.files} files (target < 30 s)"
    )
    try:
        tenant = sim.tenant()
        app = msal.ConfidentialClientApplication(
            sim.app_id,
            client_credential=sim.app_secret,
            authority=sim.authority(tenant.id),
            instance_discovery=False,
            azure_region=None,
            verify=str(sim.ca_path),
        )
        t = time.perf_counter()
        token = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        assert "access_token" in token, token
        print(
            f"msal token: ok in {time.perf_counter() - t:.2f} s, expires_in={token['expires_in']}"
        )
        client = httpx.Client(
            base_url=sim.graph_url,
            verify=sim.ssl_context(),
            timeout=120,
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )

        t = time.perf_counter()
        links, counts, pages = full_sync(client, sim)
        took = time.perf_counter() - t
        print(
            f"full delta: {dict(counts)} in {pages} pages, {took:.1f} s "
            f"({pages / took:.0f} pages/s); every item exactly once: yes"
        )

        expected = make_edits(sim)
        changed = second_sync(client, sim, links)
        extra, missing = changed - expected, expected - changed
        print(
            f"second delta after {len(expected)} edits: {len(changed)} changes, "
            f"missing={len(missing)}, unexpected={len(extra)}"
        )
        assert not missing, missing
        assert not extra, extra

        sim.reset_counters()
        sim.set_latency(args.latency_ms)
        user = sorted(tenant.users.values(), key=lambda u: u.upn)[0]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            responses = list(
                pool.map(
                    lambda _: client.get(f"/users/{user.id}/mailFolders/inbox/messages"),
                    range(args.parallel * 4),
                )
            )
        statuses = Counter(r.status_code for r in responses)
        retry_after = sorted(
            {r.headers.get("Retry-After") for r in responses if r.status_code == 429}
        )
        counters = sim.counters()
        print(
            f"parallel load ({args.parallel} workers, {args.latency_ms:.0f} ms latency, "
            "one mailbox): "
            f"statuses={dict(statuses)}, Retry-After={retry_after}, "
            f"peak concurrency={max(counters['max_concurrency'].values())}, "
            f"violations={counters['retry_after_violations']}"
        )
        assert statuses[429] > 0

        # A client that pauses all its workers for Retry-After (as Corso does) is never in
        # violation and gets everything done.
        time.sleep(2)
        sim.reset_counters()
        pause_until = [0.0]
        lock = threading.Lock()

        def polite(_: int) -> int:
            while True:
                with lock:
                    wait = pause_until[0] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                resp = client.get(f"/users/{user.id}/mailFolders/inbox/messages")
                if resp.status_code != 429:
                    return resp.status_code
                with lock:
                    until = time.monotonic() + float(resp.headers["Retry-After"])
                    pause_until[0] = max(pause_until[0], until)

        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            polite_statuses = Counter(pool.map(polite, range(args.parallel * 4)))
        counters = sim.counters()
        print(
            f"polite client ({args.parallel} workers honouring Retry-After): "
            f"statuses={dict(polite_statuses)}, throttled={counters['throttled']}, "
            f"violations={counters['retry_after_violations']}, {time.perf_counter() - t:.1f} s"
        )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()

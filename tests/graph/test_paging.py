"""Paging and delta against graphsim: opaque links, Prefer headers, resumption, resync."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from graphsim import Simulator, ids
from safekeep.graph import (
    BadRequest,
    Conflict,
    MailboxNotEnabled,
    NotFound,
    ResyncRequired,
    UserNotFound,
    prefer,
)
from safekeep.graph.client import DeltaPage
from tests.graph.conftest import ClientFactory, recorder_of


def first_user_id(sim: Simulator) -> str:
    return sorted(sim.tenant().users.values(), key=lambda u: u.upn)[0].id


def mime(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "someone@example.com"
    message["Subject"] = subject
    message.set_content(f"body of {subject}")
    return bytes(message)


async def collect(pages) -> list[DeltaPage]:
    return [page async for page in pages]


async def test_paginate_follows_next_links_verbatim_and_resends_headers(
    sim: Simulator, make_client: ClientFactory
):
    client = make_client(sim)
    headers = {"ConsistencyLevel": "eventual"}
    pages = [
        page
        async for page in client.paginate(
            "/users", params={"$top": 1, "$select": "id"}, headers=headers
        )
    ]
    assert [len(p) for p in pages] == [1] * len(sim.tenant().users)
    ids = [p[0]["id"] for p in pages]
    assert len(set(ids)) == len(ids)
    sent = recorder_of(client).requests
    assert len(sent) == len(pages)
    assert all(r.headers["ConsistencyLevel"] == "eventual" for r in sent)
    # Every request after the first is exactly a nextLink Graph gave, not rebuilt by us.
    assert all("$skiptoken=" in str(r.url) for r in sent[1:])
    assert all("%24top" not in str(r.url) and "$top" not in str(r.url) for r in sent[1:])


async def test_message_delta_pages_resume_and_catch_up(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    user = first_user_id(fresh_sim)
    path = f"/users/{user}/mailFolders/inbox/messages/delta"
    headers = prefer(max_page_size=3, immutable_id=True)
    params = {"$select": "id,subject,lastModifiedDateTime"}

    pages = await collect(client.delta(path, params=params, headers=headers, mailbox=user))
    assert all(len(p.items) <= 3 for p in pages)
    assert all(p.next_link for p in pages[:-1])
    assert all(p.delta_link is None for p in pages[:-1])
    assert pages[-1].next_link is None
    assert pages[-1].delta_link
    seen = {item["id"] for page in pages for item in page.items}
    assert len(seen) == sum(len(p.items) for p in pages) > 3
    sent = recorder_of(client).requests
    assert all(r.headers["Prefer"] == 'odata.maxpagesize=3, IdType="ImmutableId"' for r in sent)

    # A round interrupted after its first page resumes from the saved next_link.
    assert pages[0].next_link is not None
    resumed = await collect(client.delta(pages[0].next_link, headers=headers, mailbox=user))
    assert {i["id"] for p in resumed for i in p.items} == seen - {i["id"] for i in pages[0].items}

    # The delta link of the finished round yields only what changed since.
    new_id = fresh_sim.add_message(fresh_sim.tenant().id, user, mime("after the round"))
    assert pages[-1].delta_link is not None
    changes = await collect(client.delta(pages[-1].delta_link, headers=headers, mailbox=user))
    changed = [item for page in changes for item in page.items]
    assert [item["subject"] for item in changed] == ["after the round"]
    assert changed[0]["id"] == new_id or changed[0]["id"] not in seen
    assert changes[-1].delta_link
    assert changes[-1].delta_link != pages[-1].delta_link


async def test_expired_outlook_token_raises_resync_without_location(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    user = first_user_id(fresh_sim)
    pages = await collect(client.delta(f"/users/{user}/mailFolders/inbox/messages/delta"))
    link = pages[-1].delta_link
    assert link is not None
    fresh_sim.expire_delta_tokens(fresh_sim.tenant().id, user)
    with pytest.raises(ResyncRequired) as caught:
        await collect(client.delta(link))
    assert caught.value.code == "SyncStateNotFound"
    assert caught.value.location is None
    assert caught.value.reason == "resync_required"
    assert client.stats.requests == len(pages) + 1  # a 410 is final, never retried


async def test_expired_drive_token_raises_resync_with_a_fresh_link(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    user = fresh_sim.tenant().user(first_user_id(fresh_sim))
    assert user is not None
    assert user.drive_id
    path = f"/drives/{user.drive_id}/root/delta"
    pages = await collect(client.delta(path, params={"$top": 500}))
    assert pages[-1].delta_link
    assert "token=" in pages[-1].delta_link
    fresh_sim.expire_delta_tokens(fresh_sim.tenant().id, user.drive_id)
    with pytest.raises(ResyncRequired) as caught:
        await collect(client.delta(pages[-1].delta_link))
    assert caught.value.inner_code == "resyncChangesApplyDifferences"
    assert caught.value.location
    # The offered link starts a new full enumeration.
    again = await collect(client.delta(caught.value.location))
    assert {i["id"] for p in again for i in p.items} >= {
        i["id"] for p in pages for i in p.items if "deleted" not in i
    }


async def test_errors_are_classified_and_4xx_not_retried(
    fresh_sim: Simulator, make_client: ClientFactory
):
    client = make_client(fresh_sim)
    tenant = fresh_sim.tenant()
    user = first_user_id(fresh_sim)
    with pytest.raises(NotFound) as missing:  # a well-formed id Exchange does not hold
        await client.get_json(f"/users/{user}/messages/{ids.outlook_id('never', 'made')}")
    assert missing.value.code == "ErrorItemNotFound"
    assert missing.value.request_id
    with pytest.raises(BadRequest) as malformed:  # one that cannot be an id: not a deletion
        await client.get_json(f"/users/{user}/messages/AAMkAGI2nonexistent=")
    assert malformed.value.code == "ErrorInvalidIdMalformed"
    with pytest.raises(UserNotFound):
        await client.get_json("/users/00000000-0000-0000-0000-00000000dead")
    await client.request_json(
        "POST", f"/users/{user}/mailFolders", json={"displayName": "Projects"}
    )
    with pytest.raises(Conflict) as clash:
        await client.request_json(
            "POST", f"/users/{user}/mailFolders", json={"displayName": "Projects"}
        )
    assert clash.value.code == "ErrorFolderExists"
    other = sorted(tenant.users.values(), key=lambda u: u.upn)[1]
    fresh_sim.remove_licence(tenant.id, other.id)
    with pytest.raises(MailboxNotEnabled) as no_mailbox:
        await client.get_json(f"/users/{other.id}/mailFolders/inbox")
    assert no_mailbox.value.reason == "mailbox_not_found"
    assert client.stats.requests == 6  # each once: 4xx are not retried
    assert client.stats.retries == 0


async def test_request_hands_back_status_and_headers(sim: Simulator, make_client: ClientFactory):
    client = make_client(sim)
    answer = await client.request("GET", "/organization", headers={"client-request-id": "abc"})
    assert answer.status == 200
    assert answer.headers["request-id"] == "abc"
    assert answer.json()["value"][0]["id"] == sim.tenant().id
    assert answer.url.endswith("/v1.0/organization")


async def test_delta_links_in_the_function_form_and_on_beta_are_followed(
    fresh_sim: Simulator, make_client: ClientFactory
):
    """Graph hands back links in the form a round started with (``.../delta()?...``), and a
    round may start from a link another client saved, even on beta: all are followed as
    given and throttled per mailbox like any Outlook path."""
    client = make_client(fresh_sim)
    user = first_user_id(fresh_sim)
    inbox = len(fresh_sim.tenant().folder_items(fresh_sim.tenant().users[user].well_known["inbox"]))
    path = f"/users/{user}/mailFolders/inbox/messages/delta()"
    pages = await collect(client.delta(path, headers=prefer(max_page_size=2), mailbox=user))
    assert sum(len(p.items) for p in pages) == inbox
    assert all("/messages/delta()?$skiptoken=" in (p.next_link or "") for p in pages[:-1])
    assert pages[-1].delta_link and "/messages/delta()?$deltatoken=" in pages[-1].delta_link
    again = await collect(client.delta(pages[-1].delta_link, mailbox=user))
    assert [p.items for p in again] == [[]]

    drive = fresh_sim.tenant().users[user].drive_id
    assert drive is not None
    beta = await collect(client.delta(f"/beta/drives/{drive}/items/root/delta()"))
    live = [i for i in fresh_sim.tenant().drives[drive].items.values() if not i.deleted]
    assert sum(len(p.items) for p in beta) == len(live)
    assert (beta[-1].delta_link or "").startswith(f"{fresh_sim.base_url}/beta/drives/")
    assert "/root/delta()?token=" in (beta[-1].delta_link or "")

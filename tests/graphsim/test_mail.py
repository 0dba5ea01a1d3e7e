"""Mail: folders, messages, MIME, attachments, delta and the writes a restore makes."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from msgraph.generated.models.attachment_collection_response import AttachmentCollectionResponse
from msgraph.generated.models.mail_folder_collection_response import MailFolderCollectionResponse
from msgraph.generated.models.message import Message
from msgraph.generated.models.message_collection_response import MessageCollectionResponse

from graphsim import Simulator, mail, routes_mail
from graphsim.content import GEN_BLOCK, BytesContent, GeneratedContent
from graphsim.generator import GenOptions, generate_world
from graphsim.state import Attachment
from tests.graphsim.conftest import attach_file, collect, sdk_parse


def folder_id(client: httpx.Client, user_id: str, name: str) -> str:
    return str(client.get(f"/users/{user_id}/mailFolders/{name}").json()["id"])


def all_folders(client: httpx.Client, user_id: str) -> list[dict[str, Any]]:
    values, _ = collect(client, f"/users/{user_id}/mailFolders/delta")
    return values


def test_top_level_folders_and_well_known_names(client: httpx.Client, user: Any) -> None:
    resp = client.get(f"/users/{user.id}/mailFolders", params={"$top": "50"})
    assert resp.status_code == 200
    parsed = sdk_parse(MailFolderCollectionResponse, resp.content)
    names = {f.display_name for f in parsed.value}
    assert {"Inbox", "Drafts", "Sent Items", "Deleted Items", "Junk Email", "Archive"} <= names
    inbox = client.get(f"/users/{user.id}/mailFolders/inbox").json()
    root = client.get(f"/users/{user.id}/mailFolders/msgfolderroot").json()
    assert inbox["parentFolderId"] == root["id"]
    by_upn = client.get(f"/users/{user.upn}/mailFolders/Inbox").json()
    assert by_upn["id"] == inbox["id"]


def test_child_folders_go_several_levels_deep(client: httpx.Client, user: Any) -> None:
    projects = next(
        f
        for f in client.get(f"/users/{user.id}/mailFolders/inbox/childFolders").json()["value"]
        if f["displayName"] == "Projects"
    )
    year = next(
        f
        for f in client.get(f"/users/{user.id}/mailFolders/{projects['id']}/childFolders").json()[
            "value"
        ]
        if f["displayName"] == "2025"
    )
    quarter = client.get(f"/users/{user.id}/mailFolders/{year['id']}/childFolders").json()["value"]
    assert [f["displayName"] for f in quarter] == ["Q4"]
    nested = client.get(
        f"/users/{user.id}/mailFolders/inbox/childFolders/{projects['id']}/childFolders"
    )
    assert {f["displayName"] for f in nested.json()["value"]} == {"2025", "Archive Ω"}


def test_folder_create_and_duplicate(client: httpx.Client, user: Any) -> None:
    created = client.post(
        f"/users/{user.id}/mailFolders/inbox/childFolders", json={"displayName": "Restored"}
    )
    assert created.status_code == 201
    again = client.post(
        f"/users/{user.id}/mailFolders/inbox/childFolders", json={"displayName": "restored"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ErrorFolderExists"


def test_message_delta_returns_every_message_once_then_exactly_the_edits(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    tenant = sim.tenant()
    folders = all_folders(client, user.id)
    seen: dict[str, int] = {}
    links: dict[str, str] = {}
    selected = ["id", "subject", "lastModifiedDateTime", "parentFolderId"]
    # What a message may carry under that $select, on every page and round.
    allowed = {"@odata.type", "@odata.etag", *selected}
    for folder in folders:
        values, delta = collect(
            client,
            f"/users/{user.id}/mailFolders/{folder['id']}/messages/delta",
            headers={"Prefer": "odata.maxpagesize=4"},
            params={"$select": ",".join(selected)},
        )
        for value in values:
            assert set(value) <= allowed
            seen[value["id"]] = seen.get(value["id"], 0) + 1
        links[folder["id"]] = delta
    expected = {i.id for i in tenant.items.values() if i.kind == "message" and i.user_id == user.id}
    assert set(seen) == expected
    assert all(count == 1 for count in seen.values())

    inbox = folder_id(client, user.id, "inbox")
    archive = folder_id(client, user.id, "archive")
    inbox_items = [i for i in tenant.folder_items(inbox)]
    edited, moved, deleted = inbox_items[0].id, inbox_items[1].id, inbox_items[2].id
    assert (
        client.patch(
            f"/users/{user.id}/messages/{edited}", json={"isRead": False, "categories": ["Red"]}
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/users/{user.id}/messages/{moved}/move", json={"destinationId": "archive"}
        ).status_code
        == 201
    )
    assert client.delete(f"/users/{user.id}/messages/{deleted}").status_code == 204
    added = sim.add_message(
        tenant.id, user.id, b"From: a@b.example\r\nTo: c@d.example\r\nSubject: new\r\n\r\nhi\r\n"
    )

    changes: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        values, _ = collect(client, links[folder["id"]])
        if values:
            changes[folder["id"]] = values
    assert set(changes) == {inbox, archive}
    inbox_changes = {v["id"]: v for v in changes[inbox]}
    assert set(inbox_changes) == {edited, moved, deleted, added}
    assert inbox_changes[moved]["@removed"] == {"reason": "deleted"}
    assert inbox_changes[deleted]["@removed"] == {"reason": "deleted"}
    assert [v["id"] for v in changes[archive]] == [moved]
    # The query ($select) travels inside the link.
    assert set(inbox_changes[edited]) <= allowed
    assert sim.tenant().items[edited].props["categories"] == ["Red"]


def test_expired_delta_token_is_410_sync_state_not_found(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    _, delta = collect(client, f"/users/{user.id}/mailFolders/inbox/messages/delta")
    sim.expire_delta_tokens(sim.tenant().id, user.id)
    resp = client.get(delta)
    assert resp.status_code == 410
    assert resp.json()["error"]["code"] == "SyncStateNotFound"
    assert "generation=" in resp.json()["error"]["message"]
    tampered = client.get(delta.replace("deltatoken=", "deltatoken=x"))
    assert tampered.status_code == 400


def test_messages_parse_with_the_sdk_and_select_is_honoured(
    client: httpx.Client, user: Any
) -> None:
    resp = client.get(f"/users/{user.id}/mailFolders/inbox/messages", params={"$top": "25"})
    parsed = sdk_parse(MessageCollectionResponse, resp.content)
    assert parsed.value
    assert all(m.id and m.received_date_time for m in parsed.value)
    first = parsed.value[0]
    assert first.body.content_type.value in ("html", "text")
    assert first.from_.email_address.address
    selected = client.get(
        f"/users/{user.id}/messages/{first.id}", params={"$select": "subject,isRead"}
    ).json()
    assert set(k for k in selected if not k.startswith("@")) == {"id", "subject", "isRead"}
    text = client.get(
        f"/users/{user.id}/messages/{first.id}",
        headers={"Prefer": 'outlook.body-content-type="text"'},
    ).json()
    assert text["body"]["contentType"] == "text"


def test_imported_mime_comes_back_byte_identical(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    msg = EmailMessage()
    msg["From"] = "Zoë Brontë <zoe@fabrikam.example>"
    msg["To"] = f"{user.display_name} <{user.upn}>"
    msg["Subject"] = "Überweisung — 東京 report"
    msg["Date"] = "Tue, 04 Mar 2025 10:11:12 +0100"
    msg["Message-ID"] = "<import-1@fabrikam.example>"
    msg.set_content("Grüße aus Zürich\n")
    msg.add_alternative("<p>Grüße aus <b>Zürich</b></p>", subtype="html")
    msg.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="Résumé.pdf"
    )
    raw = msg.as_bytes(policy=email.policy.SMTP)
    mid = sim.add_message(sim.tenant().id, user.upn, raw, "inbox")
    assert client.get(f"/users/{user.id}/messages/{mid}/$value").content == raw
    data = client.get(f"/users/{user.id}/messages/{mid}").json()
    assert data["subject"] == "Überweisung — 東京 report"
    assert data["from"]["emailAddress"] == {"name": "Zoë Brontë", "address": "zoe@fabrikam.example"}
    assert data["internetMessageId"] == "<import-1@fabrikam.example>"
    assert data["sentDateTime"] == "2025-03-04T09:11:12Z"
    assert data["hasAttachments"] is True
    atts = client.get(f"/users/{user.id}/messages/{mid}/attachments").json()["value"]
    assert [a["name"] for a in atts] == ["Résumé.pdf"]
    assert base64.b64decode(atts[0]["contentBytes"]) == b"%PDF-1.4 fake"


def test_generated_mime_agrees_with_json_and_attachments(
    sim: Simulator, client: httpx.Client
) -> None:
    tenant = sim.tenant()
    checked = 0
    for item in list(tenant.items.values()):
        if item.kind != "message" or not any(a.kind == "file" for a in item.attachments):
            continue
        user_id = item.user_id
        data = client.get(f"/users/{user_id}/messages/{item.id}").json()
        raw = client.get(f"/users/{user_id}/messages/{item.id}/$value").content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["Subject"] == data["subject"]
        assert parsed["Message-ID"].strip() == data["internetMessageId"]
        mime_parts = {}
        for part in parsed.walk():
            if part.get_filename():
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                mime_parts[part.get_filename()] = hashlib.sha256(payload).hexdigest()
        listed = client.get(f"/users/{user_id}/messages/{item.id}/attachments").json()["value"]
        for att in listed:
            if att["@odata.type"] == "#microsoft.graph.fileAttachment":
                digest = hashlib.sha256(base64.b64decode(att["contentBytes"])).hexdigest()
                assert mime_parts[att["name"]] == digest
                value = client.get(
                    f"/users/{user_id}/messages/{item.id}/attachments/{att['id']}/$value"
                )
                assert hashlib.sha256(value.content).hexdigest() == digest
        checked += 1
        if checked >= 5:
            break
    assert checked >= 3


def test_rendered_mime_is_what_the_email_package_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files' bodies are spliced into the MIME after the email package writes the rest: the
    bytes must be the ones it writes itself when given the files (line width, CRLF, inline
    images, attached messages, Bcc on drafts)."""
    world = generate_world(5, 1, GenOptions(users=3, messages=150, files=0, events=0, contacts=0))
    tenant = next(iter(world.tenants.values()))
    items = [i for i in tenant.items.values() if i.kind == "message" and i.spec is not None]
    kinds = {a.kind for i in items for a in i.attachments} | {
        "inline" for i in items for a in i.attachments if a.is_inline
    }
    assert {"file", "item", "inline"} <= kinds
    # Imported mail carries files of every type, those the generator writes as they are too.
    odd = [
        Attachment(
            id="",
            kind="file",
            name=f"part {n}",
            content_type=ctype,
            modified=items[0].spec.sent,
            content=BytesContent.of(b"line one\nline two\r\n" * 9 + bytes(range(256))),
        )
        for n, ctype in enumerate(
            ["multipart/alternative", "Multipart/Mixed", "message/rfc822", "text/plain"]
        )
    ]
    cases = [(i.spec, i.attachments) for i in items] + [(items[0].spec, odd)]
    fast = [mail.render_mime(spec, atts, include_bcc=True) for spec, atts in cases]

    def as_the_package_does(
        container: EmailMessage, add: Any, data: bytes, att: Any, placeholder: Any, **params: Any
    ) -> None:
        add(data, *mail._mime_type(att), filename=att.name, **params)

    monkeypatch.setattr(mail, "_add_file", as_the_package_does)
    plain = [mail.render_mime(spec, atts, include_bcc=True) for spec, atts in cases]
    assert sum(len(raw) for raw in plain) > 10_000_000
    assert fast == plain


def test_generated_content_read_in_part_is_the_whole_blocks_prefix() -> None:
    """A short read draws only the bytes it needs; they must be the same bytes."""
    whole = GeneratedContent(size=GEN_BLOCK + 10, seed="s", header=b"%PDF-1.7\n")
    block = b"".join(whole.iter_range())
    for size in (1, 3, 4, 5, 9, 10, 2_001, 65_537, GEN_BLOCK, GEN_BLOCK + 3):
        part = GeneratedContent(size=size, seed="s", header=b"%PDF-1.7\n")
        assert b"".join(part.iter_range()) == block[:size]
        assert b"".join(whole.iter_range(7, 7 + size)) == block[7 : 7 + size]


def test_same_attachment_is_shared_between_messages(sim: Simulator) -> None:
    keys: dict[str, int] = {}
    for item in sim.tenant().items.values():
        for att in item.attachments:
            if att.content is not None:
                keys[att.content.key] = keys.get(att.content.key, 0) + 1
    assert max(keys.values()) >= 2


def test_create_from_json_follows_message_flags(client: httpx.Client, user: Any) -> None:
    body = {
        "subject": "Restored message",
        "body": {"contentType": "html", "content": "<p>Hello <b>again</b></p>"},
        "from": {"emailAddress": {"name": "Ana", "address": "ana@fabrikam.example"}},
        "toRecipients": [{"emailAddress": {"name": user.display_name, "address": user.upn}}],
        "singleValueExtendedProperties": [
            {"id": "Integer 0x0E07", "value": "1"},
            {"id": "SystemTime 0x0039", "value": "2024-05-01T08:00:00Z"},
            {"id": "SystemTime 0x0E06", "value": "2024-05-01T08:01:00Z"},
        ],
        "attachments": [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt",
                "contentType": "text/plain",
                "contentBytes": base64.b64encode(b"abc").decode(),
            }
        ],
    }
    created = client.post(f"/users/{user.id}/mailFolders/inbox/messages", json=body)
    assert created.status_code == 201
    msg = sdk_parse(Message, created.content)
    assert msg.is_draft is False
    assert msg.is_read is True
    assert created.json()["receivedDateTime"] == "2024-05-01T08:01:00Z"
    assert created.json()["sentDateTime"] == "2024-05-01T08:00:00Z"
    mime = client.get(f"/users/{user.id}/messages/{msg.id}/$value").content
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    assert parsed["Subject"] == "Restored message"
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert html_part.get_content().strip() == "<p>Hello <b>again</b></p>"
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.txt"]

    unsent = dict(body, singleValueExtendedProperties=[{"id": "Integer 0x0E07", "value": "8"}])
    draft = client.post(f"/users/{user.id}/mailFolders/inbox/messages", json=unsent).json()
    assert draft["isDraft"] is True
    no_flags = {k: v for k, v in body.items() if k != "singleValueExtendedProperties"}
    assert client.post(f"/users/{user.id}/messages", json=no_flags).json()["isDraft"] is True


def test_create_from_mime_is_a_draft_in_drafts(client: httpx.Client, user: Any) -> None:
    raw = (
        b"From: x@y.example\r\nTo: z@y.example\r\nSubject: mime restore\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody\r\n"
    )
    resp = client.post(
        f"/users/{user.id}/messages",
        content=base64.b64encode(raw),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 201
    data = resp.json()
    assert data["isDraft"] is True
    assert data["parentFolderId"] == folder_id(client, user.id, "drafts")
    assert data["subject"] == "mime restore"
    moved = client.post(
        f"/users/{user.id}/messages/{data['id']}/move", json={"destinationId": "inbox"}
    )
    assert moved.json()["isDraft"] is True
    bad = client.post(
        f"/users/{user.id}/messages",
        content=b"!!!notbase64",
        headers={"Content-Type": "text/plain"},
    )
    assert bad.status_code == 400


def test_item_and_reference_attachments(sim: Simulator, client: httpx.Client, user: Any) -> None:
    created = client.post(f"/users/{user.id}/messages", json={"subject": "with items"}).json()
    mid = created["id"]
    item = client.post(
        f"/users/{user.id}/messages/{mid}/attachments",
        json={
            "@odata.type": "#microsoft.graph.itemAttachment",
            "name": "Forwarded",
            "item": {
                "@odata.type": "#microsoft.graph.message",
                "subject": "inner",
                "body": {"contentType": "text", "content": "inner body"},
            },
        },
    )
    assert item.status_code == 201
    link = {
        "@odata.type": "#microsoft.graph.referenceAttachment",
        "name": "plan.docx",
        "sourceUrl": "https://contoso.sharepoint.com/plan.docx",
        "providerType": "oneDriveBusiness",
        "permission": "view",
    }
    # A link attachment is beta's: v1.0's type has no address, and Graph wants one.
    v1 = client.post(f"/users/{user.id}/messages/{mid}/attachments", json=link)
    assert v1.status_code == 400
    assert v1.json()["error"]["message"] == (
        "The property 'sourceUrl' does not exist on type 'microsoft.graph.referenceAttachment'."
    )
    nameless = {k: v for k, v in link.items() if k in ("@odata.type", "name")}
    v1_bare = client.post(f"/users/{user.id}/messages/{mid}/attachments", json=nameless)
    assert v1_bare.status_code == 400
    assert v1_bare.json()["error"] == {
        **v1_bare.json()["error"],
        "code": "ErrorInvalidProperty",
        "message": "The property 'SourceUrl' is required when creating the entity.",
    }
    beta = str(client.base_url).rstrip("/").replace("/v1.0", "/beta")
    ref = client.post(f"{beta}/users/{user.id}/messages/{mid}/attachments", json=link)
    assert ref.status_code == 201
    assert ref.json()["sourceUrl"] == link["sourceUrl"]
    on_v1 = client.get(f"/users/{user.id}/messages/{mid}/attachments/{ref.json()['id']}").json()
    assert "sourceUrl" not in on_v1 and on_v1["name"] == "plan.docx"
    on_beta = client.get(f"{beta}/users/{user.id}/messages/{mid}/attachments/{ref.json()['id']}")
    assert on_beta.json()["sourceUrl"] == link["sourceUrl"]
    listed = client.get(
        f"/users/{user.id}/messages/{mid}/attachments",
        params={"$expand": "microsoft.graph.itemattachment/item"},
    )
    parsed = sdk_parse(AttachmentCollectionResponse, listed.content)
    assert len(parsed.value) == 2
    expanded = next(
        a for a in listed.json()["value"] if a["@odata.type"].endswith("itemAttachment")
    )
    assert expanded["item"]["subject"] == "inner"
    inner_mime = client.get(
        f"/users/{user.id}/messages/{mid}/attachments/{item.json()['id']}/$value"
    )
    assert b"Subject: inner" in inner_mime.content
    ref_value = client.get(f"/users/{user.id}/messages/{mid}/attachments/{ref.json()['id']}/$value")
    assert ref_value.status_code == 405
    outer = email.message_from_bytes(
        client.get(f"/users/{user.id}/messages/{mid}/$value").content, policy=email.policy.default
    )
    assert any(p.get_content_type() == "message/rfc822" for p in outer.walk())


def test_large_attachment_upload_session(sim: Simulator, client: httpx.Client, user: Any) -> None:
    mid = client.post(f"/users/{user.id}/messages", json={"subject": "big"}).json()["id"]
    # 3 MiB of file is more than 4 MiB of base64: the request itself is refused, as Graph
    # refuses any Outlook request past 4 MB.
    too_big = attach_file(
        client, f"/users/{user.id}/messages/{mid}", "big.bin", b"x" * (3 * 1024 * 1024 + 1)
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"] == {
        **too_big.json()["error"],
        "code": "BadRequest",
        "message": "The maximum request length supported is 4MB.",
    }
    assert client.get(f"/users/{user.id}/messages/{mid}/attachments").json()["value"] == []
    # A whole message past 4 MB (body and attachments together) is refused the same way;
    # one just under it is created.
    before = len(client.get(f"/users/{user.id}/messages", params={"$top": "1000"}).json()["value"])
    note = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "note.bin",
        "contentBytes": base64.b64encode(b"y" * 1_000_000).decode(),
    }
    over = {"subject": "over", "body": {"content": "z" * 1_600_000}, "attachments": [note, note]}
    refused = client.post(f"/users/{user.id}/messages", json=over)  # 4.27 MB of JSON
    assert refused.status_code == 400, refused.status_code
    under = {"subject": "under", "body": {"content": "z" * 700_000}, "attachments": [note, note]}
    assert client.post(f"/users/{user.id}/messages", json=under).status_code == 201
    after = client.get(f"/users/{user.id}/messages", params={"$top": "1000"}).json()["value"]
    assert len(after) == before + 1
    data = bytes(range(256)) * (5 * 4096 + 7)  # ~5.2 MB
    session = client.post(
        f"/users/{user.id}/messages/{mid}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": len(data)}},
    )
    assert session.status_code == 201
    upload_url = session.json()["uploadUrl"]
    assert session.json()["nextExpectedRanges"] == ["0-"]
    plain = httpx.Client(verify=sim.ssl_context())
    chunk = 4 * 1024 * 1024
    first = plain.put(
        upload_url,
        content=data[:chunk],
        headers={"Content-Range": f"bytes 0-{chunk - 1}/{len(data)}"},
    )
    assert first.status_code == 200
    assert first.json()["nextExpectedRanges"] == [f"{chunk}-"]
    last = plain.put(
        upload_url,
        content=data[chunk:],
        headers={"Content-Range": f"bytes {chunk}-{len(data) - 1}/{len(data)}"},
    )
    assert last.status_code == 201
    assert "/Attachments('" in last.headers["location"]
    listed = client.get(f"/users/{user.id}/messages/{mid}/attachments").json()["value"]
    assert base64.b64decode(listed[0]["contentBytes"]) == data


@pytest.mark.parametrize("path", ["/users/{u}/mailFolders/inbox", "/users/{u}/messages"])
def test_unlicensed_user_has_no_mailbox(sim: Simulator, client: httpx.Client, path: str) -> None:
    added = sim.add_user(sim.tenant().id, "Nora Unlicensed", licensed=False)
    resp = client.get(path.format(u=added["id"]))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"


def test_filter_on_messages(sim: Simulator, client: httpx.Client, user: Any) -> None:
    inbox = sim.tenant().folder_items(folder_id(client, user.id, "inbox"))
    target = inbox[0].spec.message_id
    found = client.get(
        f"/users/{user.id}/mailFolders/inbox/messages",
        params={"$filter": f"internetMessageId eq '{target}'", "$select": "id,internetMessageId"},
    )
    assert [m["internetMessageId"] for m in found.json()["value"]] == [target]
    unread = client.get(
        f"/users/{user.id}/messages", params={"$filter": "isRead eq false", "$top": "999"}
    ).json()["value"]
    assert unread
    assert all(m["isRead"] is False for m in unread)
    recent = client.get(
        f"/users/{user.id}/messages",
        params={
            "$filter": "receivedDateTime ge 2025-10-01T00:00:00Z and isRead eq true",
            "$top": "999",
        },
    )
    assert all(
        m["receivedDateTime"] >= "2025-10-01" and m["isRead"] for m in recent.json()["value"]
    )
    bad = client.get(f"/users/{user.id}/messages", params={"$filter": "contains(subject,'x')"})
    assert bad.status_code == 400


def test_mime_is_rendered_off_the_event_loop_from_a_copy_taken_under_the_lock(
    sim: Simulator, client: httpx.Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message's MIME is rendered on the render thread, outside the world lock: while one
    render is held up, a PATCH of the same message and another mailbox read still answer,
    and the held render gives the message as it was when its request was routed."""
    item = next(
        i
        for i in sim.tenant().items.values()
        if i.kind == "message" and i.user_id == user.id and not i.deleted and i.raw_mime is None
    )
    before = str(item.spec.subject)
    real = routes_mail.render_mime
    started, go = threading.Event(), threading.Event()
    threads: list[str] = []

    def held(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.current_thread().name)
        started.set()
        assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(routes_mail, "render_mime", held)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(client.get, f"/users/{user.id}/messages/{item.id}/$value")
        assert started.wait(30)
        try:
            changed = client.patch(
                f"/users/{user.id}/messages/{item.id}", json={"subject": "Changed meanwhile"}
            )
            assert changed.status_code == 200
            assert client.get(f"/users/{user.id}/mailFolders/inbox").status_code == 200
        finally:
            go.set()
        answer = pending.result(30)
    assert answer.status_code == 200
    assert email.message_from_bytes(answer.content)["Subject"] == before
    assert threads and all(name.startswith("graphsim-render") for name in threads)
    monkeypatch.setattr(routes_mail, "render_mime", real)
    again = client.get(f"/users/{user.id}/messages/{item.id}/$value")
    assert email.message_from_bytes(again.content)["Subject"] == "Changed meanwhile"

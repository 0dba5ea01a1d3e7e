"""Mail through the SDK: folders (v1.0 levels and beta's flat list), message delta in the
``delta()`` form its builders send, MIME and attachments."""

from __future__ import annotations

import base64
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default as email_policy
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_attachment import ItemAttachment
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.mail_folder_collection_response import (
    MailFolderCollectionResponse,
)
from msgraph.generated.models.message import Message
from msgraph_core.tasks.page_iterator import PageIterator

from graphsim import Simulator
from tests.conformance.conftest import GRAPH

MIME = (
    b"From: Ada <ada@example.com>\r\nTo: Bob <bob@example.com>\r\n"
    b"Subject: conformance delta\r\nMessage-ID: <conf-1@example.com>\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
)


def prefer(*values: str) -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", ", ".join(values))
    return config


def keep(into: list[MailFolder]) -> Callable[[MailFolder], bool]:
    """A PageIterator callback: keep each folder, go on."""

    def one(folder: MailFolder) -> bool:
        into.append(folder)
        return True

    return one


async def every_folder_v1(graph: GraphServiceClient, user_id: str) -> list[MailFolder]:
    """What a v1.0 client does: the top level, then childFolders of each folder."""
    mailbox = graph.users.by_user_id(user_id)
    top = await mailbox.mail_folders.get()
    assert isinstance(top, MailFolderCollectionResponse)
    found: list[MailFolder] = []
    pages = PageIterator(top, graph.request_adapter)
    await pages.iterate(keep(found))
    queue = list(found)
    while queue:
        folder = queue.pop()
        if not folder.child_folder_count:
            continue
        assert folder.id is not None
        kids = await mailbox.mail_folders.by_mail_folder_id(folder.id).child_folders.get()
        assert kids is not None and kids.value
        assert all(k.parent_folder_id == folder.id for k in kids.value)
        found.extend(kids.value)
        queue.extend(kids.value)
    return found


async def test_nested_folders_via_v1_levels_and_beta_flat_list(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    tenant = sim.tenant()
    parent = sim.add_mail_folder(tenant.id, user.id, "Projects")
    child = sim.add_mail_folder(tenant.id, user.id, "Apollo", parent=parent)
    grandchild = sim.add_mail_folder(tenant.id, user.id, "Launch", parent=child)

    v1 = await every_folder_v1(graph, user.id)
    v1_ids = {f.id for f in v1}
    assert {parent, child, grandchild} <= v1_ids

    beta_url = f"{GRAPH}/beta/users/{user.id}/mailFolders"
    first = await graph.users.by_user_id(user.id).mail_folders.with_url(beta_url).get()
    assert isinstance(first, MailFolderCollectionResponse)
    assert first.odata_next_link and first.odata_next_link.startswith(beta_url)
    beta: list[MailFolder] = []
    pages = PageIterator(first, graph.request_adapter)
    await pages.iterate(keep(beta))
    assert {f.id for f in beta} == v1_ids  # every folder, nested included, once
    assert len(beta) == len(v1_ids)
    by_id = {f.id: f for f in beta}
    assert by_id[grandchild].parent_folder_id == child
    assert by_id[child].parent_folder_id == parent
    assert by_id[parent].child_folder_count == 1

    delta = await graph.users.by_user_id(user.id).mail_folders.delta.get()
    assert delta is not None and delta.value is not None
    delta_ids = {f.id for f in delta.value}
    while delta.odata_next_link:
        delta = await (
            graph.users.by_user_id(user.id).mail_folders.delta.with_url(delta.odata_next_link).get()
        )
        assert delta is not None and delta.value is not None
        delta_ids |= {f.id for f in delta.value}
    # Folder delta also reports the hidden folders the listings leave out by default.
    hidden = {
        f.id
        for f in tenant.user_folders(user.id, "mail")
        if f.hidden and f.parent_id and f.id != user.msgfolderroot
    }
    assert delta_ids == v1_ids | hidden
    assert delta.odata_delta_link and "/mailFolders/delta()?$deltatoken=" in delta.odata_delta_link


async def test_message_delta_in_the_function_form_then_changes(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    tenant = sim.tenant()
    inbox = graph.users.by_user_id(user.id).mail_folders.by_mail_folder_id("inbox")
    config = prefer("odata.maxpagesize=4", 'IdType="ImmutableId"')
    page = await inbox.messages.delta.get(config)
    assert page is not None and page.value is not None
    first_link = page.odata_next_link or page.odata_delta_link or ""
    assert "/messages/delta()?" in first_link  # the form the builder sent comes back
    messages: list[Message] = list(page.value)
    while page.odata_next_link:
        page = await inbox.messages.delta.with_url(page.odata_next_link).get(config)
        assert page is not None and page.value is not None
        assert len(page.value) <= 4
        messages.extend(page.value)
    assert page.odata_delta_link and "$deltatoken=" in page.odata_delta_link
    folder_id = user.well_known["inbox"]
    expected = {i.id for i in tenant.folder_items(folder_id)}
    assert {m.id for m in messages} == expected
    for message in messages:
        assert message.subject is not None and message.received_date_time is not None
        assert message.parent_folder_id == folder_id
        assert message.from_ is not None and message.from_.email_address is not None

    added = sim.add_message(tenant.id, user.id, MIME, "inbox")
    gone = sorted(expected)[0]
    sim.delete_item(tenant.id, gone, hard=True)
    changes = await inbox.messages.delta.with_url(page.odata_delta_link).get()
    assert changes is not None and changes.value is not None
    by_id = {m.id: m for m in changes.value}
    assert set(by_id) == {added, gone}
    assert by_id[added].subject == "conformance delta"
    assert by_id[gone].additional_data["@removed"] == {"reason": "deleted"}


async def test_mime_and_attachments_parse_into_sdk_models(
    sim: Simulator, graph: GraphServiceClient, user: Any
) -> None:
    tenant = sim.tenant()
    with_files = [
        i
        for i in tenant.items.values()
        if i.kind == "message"
        and i.user_id == user.id
        and any(a.kind == "file" for a in i.attachments)
    ]
    assert with_files, "the world has messages with file attachments"
    item = with_files[0]
    message = graph.users.by_user_id(user.id).messages.by_message_id(item.id)

    mime = await message.content.get()
    assert isinstance(mime, bytes)
    parsed = message_from_bytes(mime, policy=email_policy)
    assert parsed["Subject"] == item.spec.subject
    assert parsed.is_multipart()

    answer = await message.attachments.get()
    assert answer is not None and answer.value
    files = [a for a in answer.value if isinstance(a, FileAttachment)]
    stored = {a.id: a for a in item.attachments if a.kind == "file"}
    assert {f.id for f in files} == set(stored)
    for attachment in files:
        assert attachment.id is not None
        assert attachment.name == stored[attachment.id].name
        assert attachment.content_bytes is not None
        content = stored[attachment.id].content
        assert content is not None
        assert attachment.content_bytes == content.read()
        assert attachment.size and attachment.size >= len(attachment.content_bytes)
        one = await message.attachments.by_attachment_id(attachment.id or "").get()
        assert isinstance(one, FileAttachment)
        assert base64.b64encode(one.content_bytes or b"") == base64.b64encode(
            attachment.content_bytes
        )
    # An attached message (any mailbox of the world has one), expanded as Corso reads it.
    holder = next(
        i
        for i in tenant.items.values()
        if i.kind == "message" and any(a.kind == "item" for a in i.attachments)
    )
    expand = message.attachments.AttachmentsRequestBuilderGetQueryParameters(
        expand=["microsoft.graph.itemattachment/item"]
    )
    answer = (
        await graph.users.by_user_id(holder.user_id)
        .messages.by_message_id(holder.id)
        .attachments.get(RequestConfiguration(query_parameters=expand))
    )
    assert answer is not None and answer.value
    nested = [a for a in answer.value if isinstance(a, ItemAttachment)]
    assert len(nested) == sum(1 for a in holder.attachments if a.kind == "item")
    for attached in nested:
        assert isinstance(attached.item, Message)
        assert attached.item.subject

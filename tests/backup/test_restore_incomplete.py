"""An item whose restore did not complete (an attachment, an exception's attachment or a
photo refused for good) is reported failed, and is never what a later restore takes as
already there: the next ``skip`` restore makes it whole and reports it restored. Before,
the incomplete copy kept Safekeep's stamp, and the rerun ended ``succeeded`` with the part
still missing.

Against graphsim. Graph refuses one request permanently in the first run only: a narrow
patch of the one call (graphsim's own faults are 503s, which retry the job instead)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from graphsim.state import OItem
from safekeep.backup.restore import identity
from safekeep.backup.restore.report import JobRestoreReport
from safekeep.backup.services.mail import restore as mail_restore
from safekeep.graph.client import GraphClient
from safekeep.graph.errors import BadRequest
from safekeep.tenants.models import ItemVersion
from tests.backup.harness import EngineHarness
from tests.backup.services.test_calendar import EXCEPTION_TEXT, add_rich_events
from tests.backup.services.test_contacts import PHOTO, add_fixtures
from tests.backup.services.test_mail import attachment_summary, crafted_mime


def stamped(item: OItem) -> bool:
    """Whether a simulated item carries Safekeep's stamp (what makes it already there)."""
    return identity.ITEM_PROPERTY.lower() in item.extended


def live(h: EngineHarness, user: str, kind: str) -> list[OItem]:
    tenant = h.sim.tenant(h.sim_tenant_id)
    return [
        i for i in tenant.items.values() if i.kind == kind and i.user_id == user and not i.deleted
    ]


@contextmanager
def failures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """The items a restore reports failed: (name, code, detail)."""
    seen: list[tuple[str, str, str]] = []
    real = JobRestoreReport.failed

    async def recording(self: JobRestoreReport, version: ItemVersion, **kw: Any) -> None:
        seen.append((version.name, kw["code"], kw["detail"]))
        await real(self, version, **kw)

    monkeypatch.setattr(JobRestoreReport, "failed", recording)
    yield seen
    monkeypatch.setattr(JobRestoreReport, "failed", real)


def refuse_upload(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Graph refuses (400, for good) the upload of the attachment called ``name``."""
    real = GraphClient.upload_mail_attachment

    async def refusing(
        self: GraphClient, user: str, message: str, called: str, *a: Any, **kw: Any
    ) -> Any:
        if called == name:
            raise BadRequest(400, "ErrorInvalidRequest", "attachment refused (simulated)")
        return await real(self, user, message, called, *a, **kw)

    monkeypatch.setattr(GraphClient, "upload_mail_attachment", refusing)


async def test_a_message_restored_without_an_attachment_is_made_whole_by_the_next_restore(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    account = await h.user(0)
    made = h.sim.add_message(
        h.sim_tenant_id,
        account.graph_id,
        crafted_mime("Four attachments"),
        "inbox",
        received=datetime(2025, 10, 7, 9, 16, 30, tzinfo=UTC),
    )
    original = h.sim.tenant(h.sim_tenant_id).items[made]
    expected = attachment_summary(original)
    assert len(expected) == 4
    imid = original.spec.message_id
    await h.backup(account, "mail")
    version = (await h.open_ids(account, "mail", ["message"]))[made]
    h.sim.delete_item(h.sim_tenant_id, made, hard=True)

    def copies() -> list[OItem]:
        return [m for m in live(h, account.graph_id, "message") if m.spec.message_id == imid]

    # Run 1: one of the four files is not found in the stored MIME.
    split = mail_restore._attachments_in

    def one_lost(attachments: Any, raw: bytes) -> Any:
        files, messages = split(attachments, raw)
        files.pop(next(iter(files)))
        return files, messages

    monkeypatch.setattr(mail_restore, "_attachments_in", one_lost)
    with failures(monkeypatch) as failed:
        first = await h.restore(account, "mail", scope_type="items", item_ids=[version.item_id])
    monkeypatch.setattr(mail_restore, "_attachments_in", split)
    assert (first.restored_count, first.existing_count, first.failed_count) == (0, 0, 1)
    assert [code for _, code, _ in failed] == ["attachments_incomplete"]
    assert [stamped(m) for m in copies()] == [False]  # kept for the user, not as restored

    second = await h.restore(account, "mail", scope_type="items", item_ids=[version.item_id])
    assert (second.restored_count, second.existing_count, second.failed_count) == (1, 0, 0)
    (whole,) = copies()  # the incomplete copy is gone
    assert stamped(whole)
    assert attachment_summary(whole) == expected

    third = await h.restore(account, "mail", scope_type="items", item_ids=[version.item_id])
    assert (third.restored_count, third.existing_count) == (0, 1)


async def test_a_series_whose_exception_lost_its_attachment_is_made_whole_by_the_next_restore(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    account = await h.user(0)
    uid = account.graph_id
    added = add_rich_events(h, uid)
    await h.backup(account, "calendar")
    version = (await h.open_ids(account, "calendar", ["event"]))[added["series"]]
    h.sim.delete_item(h.sim_tenant_id, added["series"])

    def copies() -> list[OItem]:
        return [e for e in live(h, uid, "event") if e.props.get("subject") == "Team sync series"]

    refuse_upload(monkeypatch, "minutes.txt")  # the file only the moved exception carries
    with failures(monkeypatch) as failed:
        first = await h.restore(account, "calendar", scope_type="items", item_ids=[version.item_id])
    monkeypatch.undo()
    assert (first.restored_count, first.existing_count, first.failed_count) == (0, 0, 1)
    ((_, code, detail),) = failed
    assert code == "partially_restored" and "minutes.txt" in detail
    assert [stamped(e) for e in copies()] == [False]

    second = await h.restore(account, "calendar", scope_type="items", item_ids=[version.item_id])
    assert (second.restored_count, second.existing_count, second.failed_count) == (1, 0, 0)
    (whole,) = copies()
    assert stamped(whole)
    ((day, own),) = whole.instance_attachments.items()
    assert day in whole.exceptions
    assert [(a.name, a.content.read() if a.content else b"") for a in own] == [
        ("minutes.txt", EXCEPTION_TEXT)
    ]


async def test_a_contact_whose_photo_failed_is_made_whole_by_the_next_restore(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = engine
    account = await h.user(0)
    uid = account.graph_id
    tricky = add_fixtures(h, uid)["tricky"]
    await h.backup(account, "contacts")
    version = (await h.open_ids(account, "contacts", ["contact"]))[tricky]
    h.sim.delete_item(h.sim_tenant_id, tricky)

    def copies() -> list[OItem]:
        return [c for c in live(h, uid, "contact") if c.props.get("givenName") == "Zoë"]

    real = GraphClient.request_json

    async def refusing_photos(self: GraphClient, method: str, path: str, **kw: Any) -> Any:
        if method == "PUT" and path.endswith("/photo/$value"):
            raise BadRequest(400, "ErrorInvalidImage", "photo refused (simulated)")
        return await real(self, method, path, **kw)

    monkeypatch.setattr(GraphClient, "request_json", refusing_photos)
    with failures(monkeypatch) as failed:
        first = await h.restore(account, "contacts", scope_type="items", item_ids=[version.item_id])
    monkeypatch.undo()
    assert (first.restored_count, first.existing_count, first.failed_count) == (0, 0, 1)
    ((_, code, detail),) = failed
    assert code == "partially_restored" and "photo" in detail
    assert [stamped(c) for c in copies()] == [False]

    second = await h.restore(account, "contacts", scope_type="items", item_ids=[version.item_id])
    assert (second.restored_count, second.existing_count, second.failed_count) == (1, 0, 0)
    (whole,) = copies()
    assert stamped(whole)
    photos = [a.content.read() for a in whole.attachments if a.name == "photo.jpg" and a.content]
    assert photos == [PHOTO]

"""What reaches the blob store is encrypted: a marker sent through Microsoft 365 (a message
body, an attachment, a file) appears nowhere in the bytes stored, and another tenant's key
opens none of them."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from safekeep.storage.errors import IntegrityError
from safekeep.storage.keys import generate_data_key
from safekeep.storage.repository import ContentRef, TenantRepository
from safekeep.tenants.models import ItemVersion
from tests.backup.harness import EngineHarness


async def test_no_plaintext_in_the_store_and_no_cross_tenant_reads(engine: EngineHarness) -> None:
    h = engine
    marker = f"SAFEKEEP-MARKER-{uuid.uuid4().hex}"
    account = next(
        a for a in await h.accounts() if a.kind == "user" and a.services_found.get("mail")
    )
    message = EmailMessage()
    message["From"] = "Eve <eve@example.com>"
    message["To"] = account.mail or "user@example.com"
    message["Subject"] = f"Quarterly {marker}"
    message.set_content(f"The body carries {marker} three times: {marker} {marker}\n" * 50)
    message.add_attachment(
        (f"attachment {marker}\n" * 200).encode(),
        maintype="text",
        subtype="plain",
        filename="notes.txt",
    )
    h.sim.add_message(h.sim_tenant_id, account.graph_id, bytes(message))
    h.sim.add_file(
        h.sim_tenant_id, "/Secret/plan.txt", user=account.graph_id, data=(marker * 500).encode()
    )
    await h.backup(account, "mail")
    await h.backup(account, "onedrive")

    root = Path(h.runtime.settings.resolved_blobstore_url.removeprefix("file://"))
    blobs = [p for p in root.rglob("*") if p.is_file()]
    assert blobs
    needle = marker.encode()
    for path in blobs:
        assert needle not in path.read_bytes(), path
        assert needle not in path.name.encode()

    # the same content stored for another tenant gets other names; the other key opens nothing
    async with h.runtime.db.session() as session:
        from sqlalchemy import select

        version = (
            await session.execute(select(ItemVersion).where(ItemVersion.name == "plan.txt"))
        ).scalar_one()
    ref = ContentRef.from_json(version.content)  # type: ignore[arg-type]
    store = await h.runtime.blobs()
    stranger = TenantRepository(store, tenant_id=str(h.tenant.id), data_key=generate_data_key())
    with pytest.raises(IntegrityError):
        await stranger.read_bytes(ref)
    other_tenant = TenantRepository(
        store, tenant_id=str(uuid.uuid4()), data_key=generate_data_key()
    )
    assert other_tenant.chunk_name((marker * 500).encode()) not in {c.name for c in ref.chunks}

"""Every Outlook request of a backup and a restore asks for immutable ids.

Exchange gives an item a new id when it moves to another folder, unless the client sends
``Prefer: IdType="ImmutableId"``; a backup matches items by id across runs and an in-place
restore matches the backup's ids with what the mailbox holds, so a request that forgot would
see a filed message as deleted and a new one, and restore a copy beside it. graphsim's ids
never change, so it cannot show the effect: it counts the Outlook requests that did not ask
(``without_immutable_ids`` in its counters), and this runs every Outlook path the engine has
(full and incremental backups of mail, calendars and contacts with a move, in-place restores
with each conflict rule, a restore to another user) and expects none."""

from __future__ import annotations

from safekeep.tenants.models import Account
from tests.backup.harness import EngineHarness

OUTLOOK = ("mail", "calendar", "contacts")


async def test_every_outlook_request_asks_for_immutable_ids(
    engine: EngineHarness, account: Account
) -> None:
    h = engine
    other = await h.user(1)
    user = h.sim.tenant().users[account.graph_id]
    message = next(
        i.id
        for i in h.sim.tenant().items.values()
        if i.kind == "message" and i.user_id == account.graph_id and not i.deleted
    )
    h.sim.reset_counters()
    for service in OUTLOOK:
        await h.backup(account, service)
    h.sim.move_item(h.sim_tenant_id, message, user.well_known["archive"])
    for service in OUTLOOK:
        await h.backup(account, service)
    for service in OUTLOOK:
        for conflict in ("skip", "overwrite", "keep_both"):
            report = await h.restore(account, service, conflict=conflict)
            assert report.failed_count == 0, (service, conflict)
        await h.restore(account, service, target=other, folder_mode="new")
    counters = h.sim.counters()
    assert counters["batch_requests"] + counters["total"] > 0
    assert counters["without_immutable_ids"] == {}

"""Restore fidelity on real-world data nobody here wrote.

Corpora (all shipped inside packages the project already installs, nothing fetched at test
time): CPython's own ``test.test_email`` messages (48 RFC 5322 files: digests, nested
``message/rfc822``, odd charsets, missing headers; seven of them share two Message-IDs), and
icalendar's bundled test calendars (events, series with exceptions and EXDATEs, all-day
events, binary attachments, unicode). No installed or PyPI package ships a vCard corpus, so
contacts are the real people of both corpora (the senders, recipients, organisers and
attendees with the names and addresses they carry), the same person appearing as several
contacts just as address books hold duplicates.

Each item is delivered into a simulated account through Graph (mail as received messages,
then flagged, categorised and marked as a user would), read back through Graph as "what
Graph served", backed up, hard-deleted, restored with the whole mailbox / calendar /
contact folder in scope, and read back again. A restored item is identical when every
property Graph lets a client set, its folder path and its attachments (bytes, names, types,
attached messages down to their own attachments) are equal. Each kind's figure is printed
at the end of the run. Then the same restore runs again (it must add nothing) and a restore
with ``conflict: skip`` into the untouched account must end ``succeeded``.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import sysconfig
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from safekeep.backup.context import graph_client
from safekeep.backup.restore.job import run_restore_job
from safekeep.graph.client import GraphClient
from safekeep.tenants.models import Account, JobKind
from tests.backup.harness import EngineHarness
from tests.fidelity.conftest import FIGURES

MAIL_CORPUS = Path(sysconfig.get_path("stdlib")) / "test" / "test_email" / "data"
RECEIVED = datetime(2024, 3, 4, 8, 0, 0, tzinfo=UTC)
Json = dict[str, Any]


# ---- shared --------------------------------------------------------------------------------


async def first_user(h: EngineHarness) -> Account:
    users = sorted((a for a in await h.accounts() if a.kind == "user"), key=lambda a: a.graph_id)
    return users[0]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def matched(before: list[Json], after: list[Json]) -> tuple[int, list[Json]]:
    """How many items of ``before`` have an identical item in ``after`` (each used once), and
    those that have none (shown when the figure is not N/N)."""
    left: dict[str, int] = {}
    for item in after:
        left[canonical(item)] = left.get(canonical(item), 0) + 1
    identical, missing = 0, []
    for item in before:
        key = canonical(item)
        if left.get(key):
            left[key] -= 1
            identical += 1
        else:
            missing.append(item)
    return identical, missing


def differences(missing: list[Json], after: list[Json], key: str) -> list[str]:
    """For each item without an identical copy, what differs from its restored counterpart
    (found by ``key``): the assertion message of a figure below N/N."""
    out = []
    for item in missing:
        twin = next((a for a in after if a.get(key) == item.get(key)), None)
        if twin is None:
            out.append(f"{item.get(key)!r}: not restored")
            continue
        for name in sorted(set(item) | set(twin)):
            if canonical(item.get(name)) != canonical(twin.get(name)):
                out.append(
                    f"{item.get(key)!r} {name}: {canonical(item.get(name))[:300]} != "
                    f"{canonical(twin.get(name))[:300]}"
                )
    return out


async def restore_job(
    h: EngineHarness, account: Account, service: str, conflict: str = "skip"
) -> tuple[str, dict[str, Any]]:
    """A restore as the API starts it (job status and totals included)."""
    job = await h.start_job(
        JobKind.restore,
        {
            "scope": {"type": "service", "account_id": str(account.id), "service": service},
            "target": {"folder": "original"},
            "conflict": conflict,
        },
    )
    await run_restore_job(str(job.id))
    done = await h.job(job.id)
    return str(done.status), dict(done.result.get("totals") or {})


# ---- mail ----------------------------------------------------------------------------------

MESSAGE_FIELDS = (
    "subject",
    "body",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "importance",
    "categories",
    "flag",
    "internetMessageId",
    "isRead",
    "isDraft",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "inferenceClassification",
)


def mail_corpus() -> list[tuple[str, bytes]]:
    files = sorted(MAIL_CORPUS.glob("msg_*.txt"))
    if not files:
        pytest.skip(f"CPython's test_email data is not installed at {MAIL_CORPUS}")
    return [(f.name, f.read_bytes()) for f in files]


def _text(part: Message) -> str:
    assert isinstance(part, EmailMessage)
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError):
        raw = part.get_payload(decode=True)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")


def attachment_tree(raw: bytes) -> list[Json]:
    """The attachments a message's MIME carries, as a mail client sees them: files by type
    and bytes; attached messages by their headers, body and own attachments."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    bodies = {
        id(p)
        for p in (
            message.get_body(preferencelist=("plain",)),
            message.get_body(preferencelist=("html",)),
        )
        if p is not None
    }
    out: list[Json] = []

    def leaves(part: Message) -> list[Message]:
        if part.get_content_type() == "message/rfc822" or not part.is_multipart():
            return [part]
        payload = part.get_payload()
        found: list[Message] = []
        for sub in payload if isinstance(payload, list) else []:
            found.extend(leaves(sub))
        return found

    for leaf in leaves(message):
        if id(leaf) in bodies:
            continue
        ctype = leaf.get_content_type()
        if ctype == "message/rfc822":
            payload = leaf.get_payload()
            inner = payload[0] if isinstance(payload, list) else payload
            assert isinstance(inner, Message)
            inner_raw = inner.as_bytes(policy=email.policy.SMTP)
            parsed = email.message_from_bytes(inner_raw, policy=email.policy.default)
            body = parsed.get_body(preferencelist=("html", "plain"))
            out.append(
                {
                    "message": {
                        "subject": str(parsed.get("Subject", "")),
                        "from": getaddresses([str(v) for v in parsed.get_all("From", [])]),
                        "to": getaddresses([str(v) for v in parsed.get_all("To", [])]),
                        "body": " ".join(_text(body).split()) if body is not None else "",
                        "attachments": attachment_tree(inner_raw),
                    }
                }
            )
            continue
        if (
            leaf.get_content_disposition() is None
            and not leaf.get("Content-ID")
            and ctype.startswith("text/")
        ):
            continue  # an extra body part, not an attachment
        data = leaf.get_payload(decode=True)
        # (names are compared in Graph's attachment list: Exchange names a nameless part)
        out.append(
            {
                "type": ctype,
                "sha256": hashlib.sha256(data if isinstance(data, bytes) else b"").hexdigest(),
            }
        )
    return out


async def mail_folders(graph: GraphClient, uid: str) -> dict[str, str]:
    """Every mail folder's id -> its path below the mailbox root."""
    paths: dict[str, str] = {}
    pending = [("msgfolderroot", "")]
    while pending:
        parent, path = pending.pop()
        async for page in graph.paginate(
            f"/users/{uid}/mailFolders/{quote(parent, safe='')}/childFolders",
            params={"includeHiddenFolders": "true", "$top": "250"},
            mailbox=uid,
        ):
            for folder in page:
                here = f"{path}/{folder['displayName']}"
                paths[str(folder["id"])] = here
                pending.append((str(folder["id"]), here))
    return paths


async def mailbox_view(graph: GraphClient, uid: str) -> list[Json]:
    """Every message of the mailbox as Graph serves it, with its folder path, the attachment
    list Graph gives and the attachments its MIME carries (nested messages included)."""
    view: list[Json] = []
    for folder_id, path in (await mail_folders(graph, uid)).items():
        async for page in graph.paginate(
            f"/users/{uid}/mailFolders/{quote(folder_id, safe='')}/messages",
            params={"$top": "100", "$expand": "attachments($select=name,contentType,isInline)"},
            mailbox=uid,
        ):
            for message in page:
                raw = b"".join(
                    [
                        c
                        async for c in graph.stream(
                            f"/users/{uid}/messages/{quote(message['id'], safe='')}/$value",
                            mailbox=uid,
                        )
                    ]
                )
                item = {k: message.get(k) for k in MESSAGE_FIELDS}
                item["folder"] = path
                item["graph_attachments"] = sorted(
                    canonical({k: a.get(k) for k in ("@odata.type", "name", "contentType")})
                    for a in message.get("attachments") or []
                )
                item["mime_attachments"] = attachment_tree(raw)
                view.append(item)
    return view


async def test_mail_round_trip(engine: EngineHarness) -> None:
    h = engine
    account = await first_user(h)
    tid, uid = h.sim_tenant_id, account.graph_id
    lists = h.sim.add_mail_folder(tid, uid, "Lists")
    python = h.sim.add_mail_folder(tid, uid, "python-dev Ω", lists)
    targets = ["inbox", lists, python, "sentitems"]
    corpus = mail_corpus()
    delivered: list[str] = []
    for n, (_name, raw) in enumerate(corpus):
        message_id = h.sim.add_message(
            tid,
            uid,
            raw,
            targets[n % len(targets)],
            received=RECEIVED + timedelta(hours=n, seconds=n * 7),
            is_read=n % 2 == 0,
        )
        changes: Json = {}
        if n % 3 == 0:
            changes["flag"] = {"flagStatus": "flagged"}
        if n % 5 == 0:
            changes["categories"] = ["Red category", "Projekt Ω"]
        if n % 7 == 0:
            changes["importance"] = "high"
        if changes:
            h.sim.edit_item(tid, message_id, changes)
        delivered.append(message_id)
    # The same message delivered twice into one folder (same received second) and filed as
    # a copy in another: three items sharing a Message-ID, on top of the corpus' own.
    twice = next(raw for _name, raw in corpus if b"\nMessage-ID: <1" in raw)
    for folder in ("inbox", "inbox", lists):
        delivered.append(
            h.sim.add_message(tid, uid, twice, folder, received=RECEIVED - timedelta(days=1))
        )

    async with graph_client(h.runtime, h.tenant) as graph:
        before = await mailbox_view(graph, uid)
        assert len(before) == len(delivered)
        shared = {}
        for item in before:
            shared[item["internetMessageId"]] = shared.get(item["internetMessageId"], 0) + 1
        assert sum(n for n in shared.values() if n > 1) >= 10  # the corpus' 7 and our 3

        # Untouched account, conflict skip: nothing is added and the job succeeds.
        await h.backup(account, "mail")
        status, totals = await restore_job(h, account, "mail")
        assert (status, totals["skipped_existing"], totals["restored"]) == (
            "succeeded",
            len(before),
            0,
        )
        assert len(await mailbox_view(graph, uid)) == len(before)

        for message_id in delivered:
            h.sim.delete_item(tid, message_id, hard=True)
        h.sim.delete_item(tid, lists)  # and the folders the user made, with what is below
        assert await mailbox_view(graph, uid) == []
        assert not any(p.startswith("/Lists") for p in (await mail_folders(graph, uid)).values())

        report = await h.restore(account, "mail")
        assert (report.restored_count, report.failed_count) == (len(before), 0)
        after = await mailbox_view(graph, uid)
        identical, missing = matched(before, after)
        FIGURES["mail"] = (
            identical,
            len(before),
            f"CPython test_email corpus, {len(corpus)} files + 3 copies",
        )
        assert not missing, "\n".join(differences(missing, after, "receivedDateTime"))
        assert len(after) == len(before)

        # The same restore again adds nothing, and says it left every message alone.
        status, totals = await restore_job(h, account, "mail")
        assert (status, totals["restored"], totals["skipped_existing"]) == (
            "succeeded",
            0,
            len(before),
        )
        assert len(await mailbox_view(graph, uid)) == len(before)


# ---- helpers other kinds share -----------------------------------------------------------


def stable(items: list[Json], key: Callable[[Json], Any]) -> list[Json]:
    return sorted(items, key=key)

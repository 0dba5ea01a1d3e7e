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

import base64
import email
import email.policy
import hashlib
import json
import sysconfig
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import quote

import icalendar
import pytest

from safekeep.backup.context import graph_client
from safekeep.backup.jobs.restore import run_restore_job
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
    await run_restore_job(h.runtime, str(job.id))
    done = await h.job(job.id)
    return str(done.status), dict(done.result.get("totals") or {})


async def assert_restore_skips_all(
    h: EngineHarness, account: Account, service: str, count: int
) -> None:
    """Conflict skip over an account that has every item: nothing added, and success."""
    status, totals = await restore_job(h, account, service)
    assert (status, totals["skipped_existing"], totals["restored"]) == ("succeeded", count, 0)


async def restore_and_compare(
    h: EngineHarness,
    account: Account,
    service: str,
    before: list[Json],
    view: Callable[[], Awaitable[list[Json]]],
    key: str,
    note: str,
) -> None:
    """Restore what was hard-deleted, compare with ``before`` (the figures the suite prints),
    then restore again: the second run adds nothing and says it left every item alone."""
    report = await h.restore(account, service)
    assert (report.restored_count, report.failed_count) == (len(before), 0)
    after = await view()
    identical, missing = matched(before, after)
    FIGURES[service] = (identical, len(before), note)
    assert not missing, "\n".join(differences(missing, after, key))
    assert len(after) == len(before)

    await assert_restore_skips_all(h, account, service, len(before))
    assert len(await view()) == len(before)


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
            if isinstance(sub, Message):
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
        shared: dict[str, int] = {}
        for item in before:
            shared[item["internetMessageId"]] = shared.get(item["internetMessageId"], 0) + 1
        assert sum(n for n in shared.values() if n > 1) >= 10  # the corpus' 7 and our 3

        # Untouched account, conflict skip: nothing is added and the job succeeds.
        await h.backup(account, "mail")
        await assert_restore_skips_all(h, account, "mail", len(before))
        assert len(await mailbox_view(graph, uid)) == len(before)

        for message_id in delivered:
            h.sim.delete_item(tid, message_id, hard=True)
        h.sim.delete_item(tid, lists)  # and the folders the user made, with what is below
        assert await mailbox_view(graph, uid) == []
        assert not any(p.startswith("/Lists") for p in (await mail_folders(graph, uid)).values())

        await restore_and_compare(
            h,
            account,
            "mail",
            before,
            lambda: mailbox_view(graph, uid),
            "receivedDateTime",
            f"CPython test_email corpus, {len(corpus)} files + 3 copies",
        )


# ---- calendar ------------------------------------------------------------------------------

ICAL_CORPUS = Path(icalendar.__file__).parent / "tests"
EVENT_FIELDS = (
    "subject",
    "body",
    "start",
    "end",
    "location",
    "isAllDay",
    "showAs",
    "sensitivity",
    "importance",
    "categories",
    "recurrence",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "type",
    "hasAttachments",
)
EXCEPTION_FIELDS = ("subject", "body", "start", "end", "location", "originalStart", "type")
DAY_NAMES = {"MO": "monday", "TU": "tuesday", "WE": "wednesday", "TH": "thursday"}
DAY_NAMES |= {"FR": "friday", "SA": "saturday", "SU": "sunday"}
FREQUENCIES = {"DAILY": "daily", "WEEKLY": "weekly", "MONTHLY": "absoluteMonthly"}
FREQUENCIES |= {"YEARLY": "absoluteYearly"}


def _utc(value: Any) -> tuple[datetime, bool]:
    """An iCalendar DTSTART/DTEND value as UTC, and whether it is a date (all day)."""
    if not isinstance(value, date):
        raise TypeError(f"not a date or date-time: {value!r}")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC), False
    return datetime(value.year, value.month, value.day, tzinfo=UTC), True


def _graph_time(moment: datetime) -> Json:
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def _recurrence(rule: Any, start: datetime) -> Json | None:
    """The RRULEs Graph can express (FREQ, INTERVAL, BYDAY, COUNT or UNTIL); others are left
    out of what is delivered, as a client writing to Graph would have to."""
    freq = FREQUENCIES.get(str((rule.get("FREQ") or [""])[0]))
    unsupported = set(rule) - {"FREQ", "INTERVAL", "BYDAY", "COUNT", "UNTIL", "WKST"}
    days = [str(d) for d in rule.get("BYDAY") or []]
    if not freq or unsupported or any(d not in DAY_NAMES for d in days):
        return None
    if days and freq != "weekly":
        return None
    pattern: Json = {"type": freq, "interval": int((rule.get("INTERVAL") or [1])[0])}
    if freq == "weekly":
        pattern["daysOfWeek"] = [DAY_NAMES[d] for d in days] or [start.strftime("%A").lower()]
        pattern["firstDayOfWeek"] = "sunday"
    if freq == "absoluteMonthly":
        pattern["dayOfMonth"] = start.day
    if freq == "absoluteYearly":
        pattern |= {"dayOfMonth": start.day, "month": start.month}
    rrange: Json = {"type": "noEnd", "startDate": start.date().isoformat()}
    if rule.get("COUNT"):
        rrange = {**rrange, "type": "numbered", "numberOfOccurrences": int(rule["COUNT"][0])}
    elif rule.get("UNTIL"):
        until, _ = _utc(rule["UNTIL"][0])
        rrange = {**rrange, "type": "endDate", "endDate": until.date().isoformat()}
    return {"pattern": pattern, "range": rrange}


def graph_event(event: Any) -> Json | None:
    """A VEVENT as the event a client would create through Graph (None: Graph could not
    hold it, e.g. no start, or a property icalendar itself reports broken)."""
    try:
        return _graph_event(event)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _graph_event(event: Any) -> Json | None:
    if event.get("DTSTART") is None:
        return None
    try:
        start, all_day = _utc(event.decoded("DTSTART"))
        if event.get("DTEND") is not None:
            end, _ = _utc(event.decoded("DTEND"))
        elif event.get("DURATION") is not None:
            end = start + event.decoded("DURATION")
        else:
            end = start + (timedelta(days=1) if all_day else timedelta(0))
    except (ValueError, TypeError, KeyError):
        return None
    if end < start:
        return None
    if all_day and end - start < timedelta(days=1):
        # Outlook refuses it: "The duration of an event marked as All day must be at least
        # 24 hours." (OfficeDev/Office-365-SDK-for-Java#5)
        return None
    body: Json = {
        "subject": str(event.get("SUMMARY") or ""),
        "body": {"contentType": "text", "content": str(event.get("DESCRIPTION") or "")},
        "start": _graph_time(start),
        "end": _graph_time(end),
        "isAllDay": all_day,
        "showAs": "free" if str(event.get("TRANSP") or "") == "TRANSPARENT" else "busy",
        "sensitivity": {"PRIVATE": "private", "CONFIDENTIAL": "confidential"}.get(
            str(event.get("CLASS") or ""), "normal"
        ),
    }
    if event.get("LOCATION"):
        body["location"] = {"displayName": str(event["LOCATION"])}
    categories = event.get("CATEGORIES")
    if categories is not None:
        values = categories if isinstance(categories, list) else [categories]
        body["categories"] = [str(c) for v in values for c in getattr(v, "cats", [v])]
    priority = int(event.get("PRIORITY") or 0)
    if priority:
        body["importance"] = "high" if priority < 5 else "normal" if priority == 5 else "low"
    if event.get("RRULE") is not None and event.get("RECURRENCE-ID") is None:
        rule = event["RRULE"]
        recurrence = _recurrence(rule[0] if isinstance(rule, list) else rule, start)
        if recurrence is not None:
            body["recurrence"] = recurrence
    return body


def binary_attachments(event: Any) -> list[Json]:
    """ATTACH;ENCODING=BASE64;VALUE=BINARY values as Graph file attachments."""
    found = event.get("ATTACH")
    out = []
    for n, attach in enumerate(found if isinstance(found, list) else [found] if found else []):
        if str(getattr(attach, "params", {}).get("VALUE", "")).upper() != "BINARY":
            continue
        data = attach.binary if hasattr(attach, "binary") else b""
        name = attach.params.get("FILENAME") or attach.params.get("X-FILENAME")
        out.append(
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": str(name or f"attachment-{n}.bin"),
                "contentType": str(attach.params.get("FMTTYPE") or "application/octet-stream"),
                "contentBytes": base64.b64encode(data).decode("ascii"),
            }
        )
    return out


def calendar_corpus() -> tuple[list[tuple[str, Any]], int]:
    """Every VEVENT of icalendar's test calendars (file name, component), and how many
    files icalendar itself cannot read (left out: no client could deliver them)."""
    events: list[tuple[str, Any]] = []
    unreadable = 0
    for path in sorted(ICAL_CORPUS.glob("calendars/*.ics")) + sorted(
        ICAL_CORPUS.glob("events/*.ics")
    ):
        try:
            calendars = icalendar.Calendar.from_ical(path.read_bytes(), multiple=True)
            found = [(path.name, e) for c in calendars for e in c.walk("VEVENT")]
        except Exception:
            unreadable += 1
            continue
        events.extend(found)
    return events, unreadable


async def calendar_view(graph: GraphClient, uid: str) -> list[Json]:
    """Every event of every calendar as Graph serves it: the writable properties, its
    calendar, its exceptions and cancelled occurrences, and every attachment's bytes
    (an exception's own ones included)."""

    async def attachments(event_id: str) -> list[str]:
        out = []
        async for page in graph.paginate(
            f"/users/{uid}/events/{event_id}/attachments", mailbox=uid
        ):
            for a in page:
                data = base64.b64decode(a.get("contentBytes") or "")
                out.append(
                    f"{a.get('name')}|{a.get('contentType')}|{hashlib.sha256(data).hexdigest()}"
                )
        return sorted(out)

    view: list[Json] = []
    async for page in graph.paginate(f"/users/{uid}/calendars", mailbox=uid):
        for calendar in page:
            async for events in graph.paginate(
                f"/users/{uid}/calendars/{calendar['id']}/events",
                params={"$expand": "exceptionOccurrences", "$select": "cancelledOccurrences"},
                mailbox=uid,
            ):
                for event in events:
                    full = await graph.get_json(
                        f"/users/{uid}/events/{event['id']}",
                        params={"$expand": "exceptionOccurrences"},
                        mailbox=uid,
                    )
                    item = {k: full.get(k) for k in EVENT_FIELDS}
                    item["calendar"] = calendar["name"]
                    item["attachments"] = await attachments(event["id"])
                    item["cancelled"] = sorted(
                        str(c).rsplit(".", 1)[-1] for c in event.get("cancelledOccurrences") or []
                    )
                    exceptions = []
                    for exception in full.get("exceptionOccurrences") or []:
                        one = {k: exception.get(k) for k in EXCEPTION_FIELDS}
                        one["attachments"] = await attachments(exception["id"])
                        exceptions.append(one)
                    item["exceptions"] = sorted(exceptions, key=canonical)
                    view.append(item)
    return view


async def test_calendar_round_trip(engine: EngineHarness) -> None:
    h = engine
    account = await first_user(h)
    tid, uid = h.sim_tenant_id, account.graph_id
    corpus, unreadable = calendar_corpus()
    attachable = [a for _n, e in corpus for a in binary_attachments(e)]
    assert attachable, "the corpus' binary ATTACH values"
    delivered: list[str] = []
    series: dict[str, str] = {}  # UID -> the created series' id
    async with graph_client(h.runtime, h.tenant) as graph:
        second = await graph.request_json(
            "POST", f"/users/{uid}/calendars", json={"name": "Corpus Ω"}, mailbox=uid
        )
        assert second is not None
        calendars = ["calendar", str(second["id"])]
        masters = [(n, e) for n, e in corpus if e.get("RECURRENCE-ID") is None]
        for index, (_name, component) in enumerate(masters):
            body = graph_event(component)
            if body is None:
                continue
            created = await graph.request_json(
                "POST",
                f"/users/{uid}/calendars/{calendars[index % 2]}/events",
                json=body,
                mailbox=uid,
            )
            assert created is not None
            delivered.append(str(created["id"]))
            for attachment in binary_attachments(component):
                await graph.request_json(
                    "POST",
                    f"/users/{uid}/events/{created['id']}/attachments",
                    json=attachment,
                    mailbox=uid,
                )
            if body.get("recurrence"):
                series[str(component.get("UID"))] = str(created["id"])
        # Exceptions the corpus gives (RECURRENCE-ID), each with an attachment of its own.
        exceptions = 0
        for _name, component in corpus:
            master = series.get(str(component.get("UID")))
            if component.get("RECURRENCE-ID") is None or master is None:
                continue
            original, _ = _utc(component.decoded("RECURRENCE-ID"))
            instances = await graph.get_json(
                f"/users/{uid}/events/{master}/instances",
                params={
                    "startDateTime": (original - timedelta(minutes=1)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                    "endDateTime": (original + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                mailbox=uid,
            )
            body = graph_event(component) or {}
            for instance in instances.get("value") or []:
                if str(instance.get("originalStart", "")).startswith(
                    original.strftime("%Y-%m-%dT%H:%M")
                ):
                    changes = {k: body[k] for k in ("subject", "body", "start", "end") if k in body}
                    await graph.request_json(
                        "PATCH", f"/users/{uid}/events/{instance['id']}", json=changes, mailbox=uid
                    )
                    await graph.request_json(
                        "POST",
                        f"/users/{uid}/events/{instance['id']}/attachments",
                        json=attachable[exceptions % len(attachable)],
                        mailbox=uid,
                    )
                    exceptions += 1
        assert exceptions, "the corpus' RECURRENCE-ID exceptions"
        # A series' occurrence cancelled, and one event received twice (same iCalUId).
        for master in list(series.values())[:3]:
            instances = await graph.get_json(
                f"/users/{uid}/events/{master}/instances",
                params={
                    "startDateTime": "1990-01-01T00:00:00Z",
                    "endDateTime": "2040-01-01T00:00:00Z",
                },
                mailbox=uid,
            )
            occurrences = [i for i in instances.get("value") or [] if i["type"] == "occurrence"]
            if len(occurrences) > 1:
                await graph.request_json(
                    "DELETE", f"/users/{uid}/events/{occurrences[1]['id']}", mailbox=uid
                )
        twin_of = delivered[0]
        original_event = h.sim.tenant(tid).items[twin_of]
        copy = await graph.request_json(
            "POST",
            f"/users/{uid}/calendars/{calendars[1]}/events",
            json=graph_event(masters[0][1]) or {},
            mailbox=uid,
        )
        assert copy is not None
        delivered.append(str(copy["id"]))
        h.sim.tenant(tid).items[str(copy["id"])].props["iCalUId"] = original_event.props["iCalUId"]
        shared_uid = 2  # the twin pair (each series shares its own with its exceptions too)

        before = await calendar_view(graph, uid)
        assert len(before) == len(delivered)

        await h.backup(account, "calendar")
        await assert_restore_skips_all(h, account, "calendar", len(before))

        for event_id in delivered:
            h.sim.delete_item(tid, event_id, hard=True)
        assert await calendar_view(graph, uid) == []

        await restore_and_compare(
            h,
            account,
            "calendar",
            before,
            lambda: calendar_view(graph, uid),
            "subject",
            f"icalendar {icalendar.__version__} test calendars: {len(before)} events from "
            f"{len(corpus)} VEVENTs ({unreadable} files icalendar cannot read), {len(series)} "
            f"series, {exceptions} exceptions with attachments of their own, {shared_uid} "
            "events sharing an iCalUId",
        )


# ---- contacts ------------------------------------------------------------------------------

CONTACT_FIELDS = (
    "displayName",
    "givenName",
    "surname",
    "emailAddresses",
    "categories",
    "companyName",
    "personalNotes",
)
PEOPLE_LIMIT = 150  # enough duplicates and scripts without a slow test


def people_corpus() -> list[tuple[str, str]]:
    """The people both corpora name, as they appear (duplicates kept: an address book holds
    the same person twice as often as not): mail senders and recipients, decoded as a mail
    client shows them, then event organisers and attendees."""
    found: list[tuple[str, str]] = []
    for _name, raw in mail_corpus():
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for header in ("From", "To", "Cc"):
            try:
                values = [str(v) for v in message.get_all(header, [])]
            except (ValueError, IndexError, TypeError):
                continue
            found.extend((n, a) for n, a in getaddresses(values) if a and "@" in a)
    events, _ = calendar_corpus()
    for _name, event in events:
        for key in ("ORGANIZER", "ATTENDEE"):
            values = event.get(key)
            for value in values if isinstance(values, list) else [values] if values else []:
                address = str(value).removeprefix("mailto:").removeprefix("MAILTO:")
                if "@" in address:
                    found.append((str(getattr(value, "params", {}).get("CN", "")), address))
    return found[:PEOPLE_LIMIT]


def graph_contact(name: str, address: str, n: int) -> Json:
    given, _, surname = name.strip().partition(" ")
    body: Json = {
        "displayName": name.strip() or address,
        "emailAddresses": [{"name": name.strip() or address, "address": address}],
    }
    if given:
        body["givenName"] = given
    if surname:
        body["surname"] = surname
    if n % 4 == 0:
        body["categories"] = ["Corpus", "Ω"]
    return body


async def contacts_view(graph: GraphClient, uid: str) -> list[Json]:
    view: list[Json] = []
    root = await graph.get_json(f"/users/{uid}/contactFolders/contacts", mailbox=uid)
    pending = [(str(root["id"]), "/")]
    while pending:
        folder_id, path = pending.pop()
        async for page in graph.paginate(
            f"/users/{uid}/contactFolders/{folder_id}/contacts", mailbox=uid
        ):
            for contact in page:
                item = {k: contact.get(k) for k in CONTACT_FIELDS}
                item["folder"] = path
                view.append(item)
        async for page in graph.paginate(
            f"/users/{uid}/contactFolders/{folder_id}/childFolders", mailbox=uid
        ):
            for child in page:
                pending.append((str(child["id"]), f"{path.rstrip('/')}/{child['displayName']}"))
    return view


async def test_contacts_round_trip(engine: EngineHarness) -> None:
    h = engine
    account = await first_user(h)
    tid, uid = h.sim_tenant_id, account.graph_id
    people = people_corpus()
    async with graph_client(h.runtime, h.tenant) as graph:
        root = await graph.get_json(f"/users/{uid}/contactFolders/contacts", mailbox=uid)
        folder = await graph.request_json(
            "POST",
            f"/users/{uid}/contactFolders/{root['id']}/childFolders",
            json={"displayName": "Korrespondenz Ω"},
            mailbox=uid,
        )
        assert folder is not None
        targets = [str(root["id"]), str(folder["id"])]
        delivered = []
        for n, (name, address) in enumerate(people):
            created = await graph.request_json(
                "POST",
                f"/users/{uid}/contactFolders/{targets[n % 2]}/contacts",
                json=graph_contact(name, address, n),
                mailbox=uid,
            )
            assert created is not None
            delivered.append(str(created["id"]))
        before = await contacts_view(graph, uid)
        assert len(before) == len(delivered)
        twins = len(before) - len({canonical(c) for c in before})
        assert twins > 0  # the same person (name and address) more than once in a folder

        await h.backup(account, "contacts")
        await assert_restore_skips_all(h, account, "contacts", len(before))

        for contact_id in delivered:
            h.sim.delete_item(tid, contact_id, hard=True)
        h.sim.delete_item(tid, str(folder["id"]))
        assert await contacts_view(graph, uid) == []

        await restore_and_compare(
            h,
            account,
            "contacts",
            before,
            lambda: contacts_view(graph, uid),
            "displayName",
            f"the people of both corpora, {twins} exact duplicates among them",
        )

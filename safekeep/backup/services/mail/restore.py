"""Putting messages back into a mailbox so that they look received, not drafted.

Graph makes every message imported from MIME a draft whose flags cannot be changed, so a
message is created from its stored Graph JSON in the target folder, with the extended
properties that set PR_MESSAGE_FLAGS (read, not unsent) and the sent and received dates
(GRAPH.md section 3). Small attachments travel in the create request itself; file attachments
of 3 MB or more follow through upload sessions. Their bytes come out of the stored MIME.

Folders are matched by path: a well-known folder (Inbox, Sent Items...) maps to the target
mailbox's own, others by display name below it, created when missing. In "new" mode the
whole tree goes under one new top-level folder. A conflict is the same internetMessageId
already present in the target folder.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from typing import Any
from urllib.parse import quote

import structlog

from safekeep.backup.outlook import INCOMPLETE, MailboxWriter
from safekeep.backup.restore import identity
from safekeep.backup.restore.failures import first_error, retries_the_job
from safekeep.backup.services.base import RestoreContext, Selection, read_document
from safekeep.backup.services.mail import mime
from safekeep.backup.services.mail.collect import RECOVERABLE, ROOT
from safekeep.backup.services.mail.search import MESSAGE, attachment_kind
from safekeep.graph.client import ATTACHMENT_DIRECT_MAX, OUTLOOK_REQUEST_MAX
from safekeep.graph.errors import Conflict, GraphError, NotFound
from safekeep.graph.transport import dump_json
from safekeep.storage.repository import ContentRef
from safekeep.tenants.models import ItemVersion

log = structlog.get_logger(__name__)

PR_MESSAGE_FLAGS = "Integer 0x0E07"
PR_CLIENT_SUBMIT_TIME = "SystemTime 0x0039"
PR_MESSAGE_DELIVERY_TIME = "SystemTime 0x0E06"
MSGFLAG_READ = 0x1
MSGFLAG_SUBMIT = 0x4  # what Corso writes to mark a restored item as sent, not unsent
MSGFLAG_UNSENT = 0x8  # a draft: set only for messages that were drafts

# Properties a created message accepts (everything else is server-assigned).
WRITABLE = (
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
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "inferenceClassification",
)
RECOVERED_FOLDER = "Recoverable Items"  # Graph cannot write into the Recoverable Items tree
# A create request's size in all, attachments included: Outlook's limit, less room for what
# the transport's encoding might add (a lone surrogate written as an escape).
REQUEST_ROOM = OUTLOOK_REQUEST_MAX - 64 * 1024
WORKERS = 4  # Exchange allows 4 concurrent requests per mailbox
MAX_NESTING = 30  # attached messages inside attached messages: Exchange's own limit
LARGE_ITEM = 16 * 1024 * 1024  # messages above this are restored one at a time (memory)


class RestoreFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _flags(document: dict[str, Any]) -> int:
    flags = MSGFLAG_SUBMIT
    if document.get("isRead"):
        flags |= MSGFLAG_READ
    if document.get("isDraft"):
        flags |= MSGFLAG_UNSENT
    return flags


def creatable(document: dict[str, Any]) -> dict[str, Any]:
    """A message (or an attached message) as a create request: writable properties plus
    the extended properties that make it received (or a draft, if it was one)."""
    body = {k: document[k] for k in WRITABLE if document.get(k) is not None}
    body["isRead"] = bool(document.get("isRead", False))
    props = [{"id": PR_MESSAGE_FLAGS, "value": str(_flags(document))}]
    if document.get("sentDateTime"):
        props.append({"id": PR_CLIENT_SUBMIT_TIME, "value": document["sentDateTime"]})
    received = document.get("receivedDateTime") or document.get("sentDateTime")
    if received:
        props.append({"id": PR_MESSAGE_DELIVERY_TIME, "value": received})
    body["singleValueExtendedProperties"] = props
    return body


def file_attachment(part: mime.Part) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@odata.type": mime.FILE_ATTACHMENT,
        "name": part.name or "attachment",
        "contentType": part.content_type,
        "contentBytes": base64.b64encode(part.decoded()).decode("ascii"),
        "isInline": part.inline,
    }
    if part.content_id:
        out["contentId"] = part.content_id
    return out


def nested_attachments(raw: bytes, depth: int) -> list[dict[str, Any]]:
    """The attachments of an attached message, out of its own MIME: Graph's JSON of an
    attached message does not list them, so a message attached inside an attached message
    (and its files) exists only there."""
    out: list[dict[str, Any]] = []
    for part in mime.attachment_parts(raw):  # an attached message, held whole already
        if part.kind == "item":
            out.append(attached_message(None, part.name, part.decoded(), depth + 1))
        else:
            out.append(file_attachment(part))
    return out


def attached_message(
    document: dict[str, Any] | None, name: str | None, raw: bytes | None, depth: int
) -> dict[str, Any]:
    """An attached message as an item attachment: its Graph JSON when Graph gave one (first
    level), else what its MIME says; its own attachments from its MIME, down to
    ``MAX_NESTING`` levels."""
    source = document if document is not None else mime.message_document(raw or b"")
    inner: dict[str, Any] = {"@odata.type": "#microsoft.graph.message", **creatable(source)}
    if raw and depth < MAX_NESTING:
        below = nested_attachments(raw, depth)
        if below:
            inner["attachments"] = below
    return {
        "@odata.type": mime.ITEM_ATTACHMENT,
        "name": name or str(source.get("subject") or ""),
        "item": inner,
    }


def item_attachment(att: dict[str, Any], raw: bytes | None = None) -> dict[str, Any]:
    item = dict(att.get("item") or {})
    odata = str(item.get("@odata.type") or "#microsoft.graph.message")
    if odata.lower().endswith(".message"):
        return attached_message(item, att.get("name"), raw, 1)
    else:  # an attached event or contact: its own properties, minus the server's
        server = {"id", "changeKey", "createdDateTime", "lastModifiedDateTime", "webLink"}
        inner = {k: v for k, v in item.items() if k not in server and not k.startswith("@odata.")}
        inner["@odata.type"] = odata
    return {
        "@odata.type": mime.ITEM_ATTACHMENT,
        "name": att.get("name") or "",
        "item": inner,
    }


def _attachments_in(
    attachments: list[dict[str, Any]], raw: bytes
) -> tuple[dict[int, mime.Part], dict[int, bytes]]:
    """The MIME part of each of Graph's file attachments and the bytes of each attached
    message (by index in ``attachments``). The MIME is split, not parsed whole, and a file is
    decoded only when its bytes are asked for. It is parsed whole, as ``email`` reads it, for
    a message with attached messages (their bytes are ``email``'s writing of what it parsed)
    and for one whose files the split does not account for (a shape ``email`` reads its own
    way, such as a delivery report's status part or an external body)."""
    if not any(attachment_kind(a) == "item" for a in attachments):
        split = list(mime.attachments(raw))
        files: dict[int, mime.Part] = dict(mime.match_file_attachments(attachments, split))
        if all(i in files for i, a in enumerate(attachments) if attachment_kind(a) == "file"):
            return files, {}
    whole = mime.attachment_parts(raw)
    files = dict(mime.match_file_attachments(attachments, whole))
    return files, mime.match_attached_messages(attachments, whole)


def reference_attachment(att: dict[str, Any]) -> dict[str, Any]:
    """A link attachment to make again: only beta's type has its address, so it is added to
    the created message through beta (v1.0 refuses one without ``sourceUrl``, and has none)."""
    keep = ("name", "sourceUrl", "providerType", "permission", "isFolder", "isInline")
    return {
        "@odata.type": mime.REFERENCE_ATTACHMENT,
        **{k: att[k] for k in keep if att.get(k) is not None},
    }


def _hidden(folder: ItemVersion) -> bool:
    return bool((folder.meta or {}).get("is_hidden"))


def _look(internet_id: Any, received: Any) -> tuple[str, str] | None:
    """Internet Message-ID and received time to the second (Graph's own precision)."""
    if not internet_id or not received:
        return None
    return str(internet_id), str(received)[:19]


class _MailIndex(identity.TargetIndex):
    """A target folder's messages by identity, plus those Safekeep did not restore by
    Internet Message-ID and received time (candidates for the full match)."""

    def __init__(self) -> None:
        super().__init__()
        self.unstamped: dict[tuple[str, str], list[str]] = {}
        self.claimed: set[str] = set()

    def add_message(self, message: dict[str, Any]) -> None:
        if self.add(message) is None and not identity.started_item(message):
            key = _look(message.get("internetMessageId"), message.get("receivedDateTime"))
            if key:
                self.unstamped.setdefault(key, []).append(str(message["id"]))

    def merge(self, other: _MailIndex) -> None:
        for target_id in other.ids - self.ids:
            self.ids.add(target_id)
        for item, found in other.stamped.items():
            mine = self.stamped.setdefault(item, [])
            mine.extend(f for f in found if f not in mine)
        for key, found in other.unstamped.items():
            mine = self.unstamped.setdefault(key, [])
            mine.extend(f for f in found if f not in mine)
        for item, found in other.incomplete.items():
            mine = self.incomplete.setdefault(item, [])
            mine.extend(f for f in found if f not in mine)


class MailRestorer(MailboxWriter):
    def __init__(self, ctx: RestoreContext, selection: Selection) -> None:
        super().__init__(ctx)
        self.selection = selection
        self.prefetch = selection.whole or selection.roots is not None
        self._targets: dict[str, str] = {}  # source folder id -> target folder id
        self._well_known: dict[str, str] = {}
        self._children: dict[str, dict[str, str]] = {}  # target parent -> lower name -> id
        self._indexes: dict[str, _MailIndex] = {}  # target folder -> what it holds
        self.in_place = identity.in_place(ctx.source.id, ctx.target.id, ctx.folder_mode)
        self._folder_lock = asyncio.Lock()
        self._listing_locks: dict[str, asyncio.Lock] = {}
        self._large = asyncio.Lock()

    # ---- folders ---------------------------------------------------------------------------

    async def _well_known_id(self, name: str) -> str:
        if name not in self._well_known:
            found = await self.ctx.graph.get_json(
                f"{self.base}/mailFolders/{name}",
                params={"$select": "id,displayName"},
                headers=self.headers,
                mailbox=self.user,
            )
            self._well_known[name] = str(found["id"])
        return self._well_known[name]

    async def _child(self, parent: str, name: str, *, hidden: bool = False) -> str:
        """The target folder ``name`` below ``parent``, created when missing (``hidden`` as
        the source folder was: Graph sets that only when a folder is made)."""
        children = self._children.get(parent)
        if children is None:
            children = await self._list_children(parent)
        found = children.get(name.lower())
        if found:
            return found
        try:
            listing = f"{self.base}/mailFolders/{quote(parent, safe='')}/childFolders"
            made = {"displayName": name, **({"isHidden": True} if hidden else {})}
            folder_id = str((await self.post(listing, made))["id"])
        except Conflict:  # made meanwhile (another restore): use it
            children = await self._list_children(parent)
            if name.lower() not in children:
                raise
            folder_id = children[name.lower()]
        children[name.lower()] = folder_id
        return folder_id

    async def _list_children(self, parent: str) -> dict[str, str]:
        children: dict[str, str] = {}
        async for page in self.ctx.graph.paginate(
            f"{self.base}/mailFolders/{quote(parent, safe='')}/childFolders",
            params={"includeHiddenFolders": "true", "$select": "id,displayName", "$top": "250"},
            headers=self.headers,
            mailbox=self.user,
        ):
            for folder in page:
                children.setdefault(str(folder.get("displayName") or "").lower(), folder["id"])
        self._children[parent] = children
        return children

    def _chain(self, folder_id: str) -> list[ItemVersion]:
        """Source folders from the top of the mailbox down to ``folder_id``."""
        chain: list[ItemVersion] = []
        current: str | None = folder_id
        folders = self.selection.folders
        while current is not None and current in folders and len(chain) < 64:
            chain.append(folders[current])
            current = folders[current].parent_external_id
        return list(reversed(chain))

    async def target_folder(self, source_folder: str | None) -> str:
        async with self._folder_lock:
            key = source_folder or ""
            if key not in self._targets:
                self._targets[key] = await self._resolve(source_folder)
            return self._targets[key]

    async def _resolve(self, source_folder: str | None) -> str:
        chain = self._chain(source_folder) if source_folder else []
        if self.ctx.folder_mode == "new":
            parent = await self._child(await self._well_known_id(ROOT), self.ctx.new_folder_name)
            for folder in chain:
                parent = await self._child(parent, folder.name, hidden=_hidden(folder))
            return parent
        if not chain:
            return await self._well_known_id("inbox")
        top, below = chain[0], chain[1:]
        well_known = (top.meta or {}).get("well_known")
        if well_known == RECOVERABLE:
            parent = await self._child(await self._well_known_id(ROOT), RECOVERED_FOLDER)
        elif well_known:
            try:
                parent = await self._well_known_id(str(well_known))
            except NotFound:  # e.g. no archive folder in the target mailbox
                parent = await self._child(await self._well_known_id(ROOT), top.name)
        else:
            parent = await self._child(
                await self._well_known_id(ROOT), top.name, hidden=_hidden(top)
            )
        for folder in below:
            parent = await self._child(parent, folder.name, hidden=_hidden(folder))
        return parent

    # ---- conflicts -------------------------------------------------------------------------

    async def _folder_index(
        self, folder: str, version: ItemVersion, document: dict[str, Any]
    ) -> _MailIndex:
        """What the target folder holds that could be this message: the whole folder listed
        once for folder and whole-mailbox restores, else just the candidates for this one
        (restored from the same Safekeep item, or the same Internet Message-ID)."""
        if self.prefetch:
            lock = self._listing_locks.setdefault(folder, asyncio.Lock())
            async with lock:
                if folder not in self._indexes:
                    self._indexes[folder] = await self._list(folder, None)
            return self._indexes[folder]
        index = await self._list(folder, identity.stamp_filter(version))
        internet_id = document.get("internetMessageId")
        if internet_id:
            quoted = "'" + str(internet_id).replace("'", "''") + "'"
            index.merge(await self._list(folder, f"internetMessageId eq {quoted}"))
        return index

    async def _list(self, folder: str, where: str | None) -> _MailIndex:
        params = {
            "$select": "id,internetMessageId,receivedDateTime",
            "$expand": identity.EXPAND,
            "$top": "1000" if where is None else "50",
        }
        if where:
            params["$filter"] = where
        index = _MailIndex()
        async for page in self.ctx.graph.paginate(
            f"{self.base}/mailFolders/{quote(folder, safe='')}/messages",
            params=params,
            headers=self.headers,
            mailbox=self.user,
        ):
            for message in page:
                index.add_message(message)
        return index

    async def _existing(
        self, index: _MailIndex, version: ItemVersion, document: dict[str, Any]
    ) -> list[str]:
        """The messages in the target folder that are this one: the message itself (in
        place), Safekeep's earlier copy of it, or, for mail that did not come from Safekeep,
        one with the same Internet Message-ID, received time and size (a conservative full
        match: two different messages of a mailbox may share a Message-ID)."""
        graph_id = self.selection.external_id(version) if self.in_place else None
        found = index.existing(version, graph_id)
        if found:
            return found
        key = _look(document.get("internetMessageId"), document.get("receivedDateTime"))
        for candidate in index.unstamped.get(key, []) if key else []:
            if candidate in index.claimed:
                continue
            if await self._size_of(candidate) == version.size:
                index.claimed.add(candidate)  # one existing message stands for one item only
                return [candidate]
        return []

    async def _size_of(self, message_id: str) -> int | None:
        total = 0
        try:
            async for chunk in self.ctx.graph.stream(
                f"{self.base}/messages/{quote(message_id, safe='')}/$value", mailbox=self.user
            ):
                total += len(chunk)
        except NotFound:
            return None
        return total

    # ---- one message -----------------------------------------------------------------------

    async def restore_one(self, version: ItemVersion) -> None:
        report = self.ctx.report
        try:
            async with AsyncExitStack() as stack:
                if version.size > LARGE_ITEM:
                    await stack.enter_async_context(self._large)
                target_id = await self._restore(version)
        except RestoreFailed as exc:
            await report.failed(version, code=exc.code, detail=exc.detail)
        except Exception as exc:
            if retries_the_job(exc):  # not the item's fault: the job is tried again
                raise
            if isinstance(exc, GraphError):
                await report.failed(version, code=exc.reason, detail=str(exc))
                return
            # one bad item never stops the others
            log.warning("mail_restore_item_failed", version_id=str(version.id), exc_info=True)
            await report.failed(version, code="restore_error", detail=f"{type(exc).__name__}")
        else:
            if target_id is not None:
                await report.restored(version, target_id=target_id)

    async def _restore(self, version: ItemVersion) -> str | None:
        document = await read_document(self.ctx.repo, version)
        if document is None:
            raise RestoreFailed("no_document", "this version has no stored Graph JSON")
        folder = await self.target_folder(version.parent_external_id)
        existing: list[str] = []
        index: _MailIndex | None = None
        job = self.ctx.job_id
        if self.ctx.conflict != "keep_both":
            index = await self._folder_index(folder, version, document)
            existing = await self._existing(index, version, document)
            if existing and self.ctx.conflict == "skip":
                await self.ctx.report.existing(version, target_id=existing[0])
                return None
        elif self.ctx.retry and job is not None:
            # keep_both writes beside whatever is there, except what this very job wrote on
            # an earlier attempt (its stamp says so): that copy is the item restored.
            index = await self._folder_index(folder, version, document)
            mine = index.restored_by(version, job)
            if mine is not None:
                return mine
        created, missing = await self._create(version, document, folder)
        # Incomplete copies an earlier restore left (unstamped) go once this one is at least
        # as far (under keep_both, which leaves whatever is there, only those an earlier
        # attempt of this job left).
        leftovers: list[str] = []
        if index is not None:
            keeps = self.ctx.conflict == "keep_both"
            leftovers = index.leftovers(version, job if keeps else None)
        if missing:  # kept for the user, unstamped: a later restore makes it again
            await self._drop(leftovers)
            raise RestoreFailed(
                "attachments_incomplete",
                "restored without attachments not found in the MIME or too large for Graph: "
                + ", ".join(missing)
                + INCOMPLETE,
            )
        if index is not None:
            index.remember(version, created, job)
        for old in existing:  # overwrite: the new copy is in place, now drop the old one
            with suppress(NotFound):
                await self.send(
                    "DELETE", f"{self.base}/messages/{quote(old, safe='')}", expected=(204, 200)
                )
        await self._drop(leftovers)
        if index is not None:
            index.forget(existing + leftovers)
        return created

    async def _drop(self, leftovers: list[str]) -> None:
        """Take out incomplete copies an earlier restore left of this message (marked,
        never stamped): best effort, a later restore tries again."""
        for old in leftovers:
            try:
                await self.send(
                    "DELETE",
                    f"{self.base}/messages/{quote(old, safe='')}",
                    expected=(204, 200, 404),
                )
            except GraphError:
                log.info("mail_restore_leftover_not_removed", exc_info=True)

    async def _create(
        self, version: ItemVersion, document: dict[str, Any], folder: str
    ) -> tuple[str, list[str]]:
        """Create the message with its small attachments in the request; the rest are
        uploaded after it, each decoded only as its upload starts (the MIME's bytes and one
        attachment at a time are held, whatever the message's size). The message is stamped
        last, once every attachment is in (``restore/identity.py``); one whose attachments
        the backup lacks or Graph cannot take is left unstamped, and those are returned."""
        attachments = list(document.get("attachments") or [])
        files: dict[int, mime.Part] = {}
        messages: dict[int, bytes] = {}  # item attachment index -> the attached message's MIME
        if any(attachment_kind(a) in ("file", "item") for a in attachments):
            if not version.content:
                raise RestoreFailed("no_content", "the MIME holding the attachments is missing")
            raw = await self.ctx.repo.read_bytes(ContentRef.from_json(version.content))
            files, messages = await asyncio.to_thread(_attachments_in, attachments, raw)
            del raw  # the split's parts keep it while they need it; a whole parse does not
        missing = [
            str(a.get("name"))
            for i, a in enumerate(attachments)
            if attachment_kind(a) == "file" and i not in files
        ]
        payload = creatable(document)
        # The stamp counts in the request's size (it is longer than the started mark): it
        # goes in the create request only if nothing follows it.
        marks = payload["singleValueExtendedProperties"]
        stamp = identity.stamp(version, self.ctx.job_id)
        marks.extend(stamp)
        # What the create request may still carry: Outlook refuses a request past 4 MB, so
        # the attachments that do not fit are added after it, one request each.
        room = REQUEST_ROOM - len(dump_json(payload)) - len(b',"attachments":[]')
        if room < 0:
            raise RestoreFailed(
                "message_too_large",
                "its body and properties alone pass the 4 MB Graph takes in one request",
            )
        inline: list[dict[str, Any]] = []
        separate: list[dict[str, Any]] = []  # attached items that did not fit
        links: list[dict[str, Any]] = []  # made on beta after the message (v1.0 cannot)
        later: list[tuple[dict[str, Any], mime.Part]] = []  # files: uploaded after
        for index, att in enumerate(attachments):
            kind = attachment_kind(att)
            body: dict[str, Any] | None = None
            if kind == "item":
                body = item_attachment(att, messages.get(index))
            elif kind == "reference":
                if att.get("sourceUrl"):
                    links.append(reference_attachment(att))
                else:  # backed up before links were read from beta: its address is unknown
                    missing.append(
                        str(att.get("name") or "") + " (a link whose address was not kept)"
                    )
                continue
            elif index in files:
                part = files[index]
                small = min(ATTACHMENT_DIRECT_MAX - 1, room * 3 // 4)  # base64 is 4/3 larger
                data = part.decoded() if part.may_decode_within(small) else None
                if data is not None and len(data) <= small:
                    body = self._file_json(att, part, data)
                else:
                    later.append((att, part))
                    continue
            if body is None:
                continue
            size = len(dump_json(body)) + 1  # and its comma
            if size <= room:
                inline.append(body)
                room -= size
            elif kind == "file":
                later.append((att, files[index]))
            else:
                separate.append(body)
        if inline:
            payload["attachments"] = inline
        stamped = not (separate or links or later or missing)
        if not stamped:
            marks[-len(stamp) :] = identity.started(version, self.ctx.job_id)
        created = await self.post(
            f"{self.base}/mailFolders/{quote(folder, safe='')}/messages", payload
        )
        message_id = str(created["id"])
        attachments_url = f"{self.base}/messages/{quote(message_id, safe='')}/attachments"
        try:
            for body in separate:
                if len(dump_json(body)) > REQUEST_ROOM:
                    missing.append(str(body.get("name") or "") + " (larger than 4 MB)")
                    continue
                await self.post(attachments_url, body)
            for body in links:
                await self.post("/beta" + attachments_url, body)
            for att, part in later:
                data = await asyncio.to_thread(part.decoded)
                await self.ctx.graph.upload_mail_attachment(
                    self.user,
                    message_id,
                    str(att.get("name") or part.name or "attachment"),
                    str(att.get("contentType") or part.content_type),
                    data,
                    len(data),
                    is_inline=bool(att.get("isInline", part.inline)),
                    content_id=att.get("contentId") or part.content_id,
                )
                del data
            if not stamped and not missing:
                await self.send(
                    "PATCH",
                    f"{self.base}/messages/{quote(message_id, safe='')}",
                    {identity.EXTENDED: identity.stamp(version, self.ctx.job_id)},
                    expected=(200, 204),
                )
        except BaseException:
            await self._discard(message_id)
            raise
        return message_id, missing

    @staticmethod
    def _file_json(att: dict[str, Any], part: mime.Part, data: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@odata.type": mime.FILE_ATTACHMENT,
            "name": att.get("name") or part.name or "attachment",
            "contentType": att.get("contentType") or part.content_type,
            "contentBytes": base64.b64encode(data).decode("ascii"),
            "isInline": bool(att.get("isInline", part.inline)),
        }
        content_id = att.get("contentId") or part.content_id
        if content_id:
            out["contentId"] = content_id
        return out

    async def _discard(self, message_id: str) -> None:
        """A message whose attachment (or stamp) Graph refused or could not take now is taken
        out again: the item is reported failed, or the job retried, and a rerun makes it
        whole without a half-made copy beside it (unstamped, it would never count as there)."""
        try:
            await asyncio.shield(
                self.send(
                    "DELETE",
                    f"{self.base}/messages/{quote(message_id, safe='')}",
                    expected=(204, 200, 404),
                )
            )
        except Exception:
            log.info("mail_restore_discard_failed", exc_info=True)

    # ---- the whole selection ---------------------------------------------------------------

    async def restore(self) -> None:
        if self.selection.roots is not None:
            for folder_id in self._folders_below(self.selection.roots):
                try:
                    await self.target_folder(folder_id)
                except GraphError as exc:
                    if retries_the_job(exc):
                        raise
                    version = self.selection.folders[folder_id]
                    await self.ctx.report.failed(version, code=exc.reason, detail=str(exc))
        queue: asyncio.Queue[ItemVersion | None] = asyncio.Queue(maxsize=WORKERS * 2)

        async def worker() -> None:
            while (version := await queue.get()) is not None:
                await self.restore_one(version)

        # A worker that stops on an error that is the job's (the store or Graph unavailable)
        # stops the others and the feed too, and the error goes to the job to be retried.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(WORKERS):
                    group.create_task(worker())
                async for version in _messages(self.selection):
                    await queue.put(version)
                for _ in range(WORKERS):
                    await queue.put(None)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    def _folders_below(self, roots: set[str]) -> list[str]:
        folders = self.selection.folders
        chosen = set(roots)
        grew = True
        while grew:
            below = {f for f, v in folders.items() if v.parent_external_id in chosen} - chosen
            grew = bool(below)
            chosen |= below
        return sorted(chosen, key=lambda f: len(self._chain(f)))


async def _messages(selection: Selection) -> AsyncIterator[ItemVersion]:
    async for version in selection.items():
        if version.kind == MESSAGE:
            yield version


async def restore(ctx: RestoreContext, selection: Selection) -> None:
    await MailRestorer(ctx, selection).restore()

"""Exchange Online mail: every folder and message of a mailbox, restorable as received mail.

Catalog kinds: ``mail_folder`` (a folder; ``parent_external_id`` None at the top of the
mailbox, and for Recoverable Items, which lives outside it) and ``message``.

What a version holds:

- ``content``: the message's exact MIME as Graph serves it at ``/messages/{id}/$value``
  (download and ``.eml`` export give these bytes back unchanged).
- ``document``: the message's Graph JSON with its attachment list (metadata, no
  ``contentBytes``: file attachment bytes are taken from the MIME; attached items carry
  their nested ``item``), which is what a restore creates the message from.
- ``meta`` of a message: ``subject``, ``from`` ({name, address}), ``to``/``cc``/``bcc``
  (lists of {name, address}), ``received_at``, ``sent_at`` (ISO 8601), ``is_read``,
  ``is_draft``, ``importance``, ``flag`` (flagStatus), ``categories``,
  ``internet_message_id``, ``conversation_id``, ``has_attachments``, ``attachments``
  ([{name, content_type, size, is_inline, kind: file|item|reference}]), ``folder_path``
  (at capture time, e.g. "/Inbox/Projects") and ``body_preview``.
- ``meta`` of a folder: ``well_known`` (inbox, sentitems, ... or None) and ``is_hidden``.

Policy switches: ``include_deleted_items`` and ``include_junk`` decide whether the messages
of Deleted Items and Junk Email (and their subfolders) are backed up; the folders themselves
are always listed. ``include_recoverable_items`` adds Recoverable Items (Deletions) as a
top-level folder of its own; a restore puts its messages in a "Recoverable Items" folder.
"""

from __future__ import annotations

from safekeep.backup.services.base import folder_service
from safekeep.backup.services.mail.search import FOLDER

SERVICE = folder_service(__name__, folder_kinds=frozenset({FOLDER}))

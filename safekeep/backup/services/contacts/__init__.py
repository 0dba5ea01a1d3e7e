"""Contacts: every contact folder of a user (the default "Contacts" folder at the top, its
child folders below) and every contact with all its fields.

Catalog kinds: ``contact_folder`` (a folder; meta: name, is_default) and ``contact`` (parent
= its folder; meta: see ``search.meta_of``). A contact's ``document`` is its Graph JSON;
its original form is rendered as a vCard 3.0 (``text/vcard``, photo inline) on demand, so
it has no ``content``. A contact's photo is a blob referenced from the document as
``_safekeep.photo.content``. Collection: see ``collect``; restore rules: see ``restore``.
"""

from __future__ import annotations

from safekeep.backup.services.base import folder_service
from safekeep.backup.services.contacts.search import FOLDER_KIND

SERVICE = folder_service(__name__, folder_kinds=frozenset({FOLDER_KIND}))

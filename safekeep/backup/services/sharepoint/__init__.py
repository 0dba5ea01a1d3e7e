"""SharePoint sites: every document library (as a drive, like OneDrive) and every list.

Catalog tree of one site account: a ``library`` item per document library
(``library:<drive id>``, top level; ``meta``: ``drive_id``, ``web_url``, ``description``;
``document``: the drive's Graph JSON) with its ``drive_folder``/``file`` items below it
(see ``drive.model``), and a ``list`` item per list with its ``list_item`` items below it
(see ``sharepoint.lists``). Delta collections: each library's drive id and ``list:<id>``.

Restore: files go into the target site's library of the same name (re-created if Graph
allows, else into the site's default library under a folder of that name), as OneDrive
does; list items into the list of the same name (re-created from the stored columns when
missing). In place (same site, original folders) an item that still exists is found by its
id and the conflict rule applies; otherwise items are added. With ``folder_mode="new"``
files go under a "Restored ..." folder of their library; list items are added to their list.
Export: library files in their tree, each list as ``<list>.json`` and ``<list>.csv``.
"""

from __future__ import annotations

from safekeep.backup.drive.model import FOLDER
from safekeep.backup.services.base import folder_service
from safekeep.backup.services.sharepoint.lists import LIST
from safekeep.backup.services.sharepoint.search import LIBRARY

SERVICE = folder_service(__name__, folder_kinds=frozenset({LIBRARY, FOLDER, LIST}))

"""OneDrive for Business: a user's drive, every file and folder, by delta.

Catalog: ``drive_folder`` and ``file`` items (see ``drive.model`` for ``meta``); the drive's
root children sit at the top (parent None). Collection (delta state key) = the drive id.
Restore writes into the target user's drive by path (``drive.restore``); export gives the
files in their tree.
"""

from __future__ import annotations

from safekeep.backup.drive.model import FOLDER
from safekeep.backup.services.base import folder_service

SERVICE = folder_service(__name__, folder_kinds=frozenset({FOLDER}))

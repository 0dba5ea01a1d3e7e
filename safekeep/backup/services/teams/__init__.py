"""Microsoft Teams (registry ``teams``, off in new policies): a protected user's teams
(those it is the first owner of: each team is backed up once, with its owner's seat) and its
chats.

Catalog kinds: ``team`` (a folder; document: the team with its settings and members),
``channel`` (a folder under its team; document: the channel, its members and tabs, its team
id), ``thread`` (a channel's root message, a folder under its channel whose children are its
replies), ``message`` (a reply, under its thread; or a chat message, under its chat) and
``chat`` (a folder; document: the chat and its members). A message's document is its Graph
JSON with its container and folder path; its inline images are blobs it references
(``hostedContents``). Collection (delta plus a re-read window): ``collect``; reading Graph:
``reader``; restore through the import API: ``restore``; transcripts: ``export``.
"""

from __future__ import annotations

from safekeep.backup.services.base import folder_service

SERVICE = folder_service(__name__, folder_kinds=frozenset({"team", "channel", "chat", "thread"}))

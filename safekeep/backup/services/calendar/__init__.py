"""Calendars: every calendar of a user and every event in it, with recurrence (series
masters holding their exceptions and cancelled occurrences), attendees, online-meeting
data and attachments.

Catalog kinds: ``calendar`` (a folder; meta: name, color, hex_color, is_default, owner,
can_edit) and ``event`` (a series master or a single event, parent = its calendar). An
event's ``document`` is its Graph JSON with ``attachments`` (file bytes as blobs, see
``collect``) and ``exceptionOccurrences``/``cancelledOccurrences``; it has no ``content``:
its original form is rendered as ICS on demand. Event meta: see ``search.meta_of``.

How the collector stays incremental with v1.0 only, and what it does about events outside
the delta window: see ``collect``. Restore rules: see ``restore``.
"""

from __future__ import annotations

from safekeep.backup.services.base import folder_service
from safekeep.backup.services.calendar.search import CALENDAR_KIND

SERVICE = folder_service(__name__, folder_kinds=frozenset({CALENDAR_KIND}))

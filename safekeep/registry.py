"""The Microsoft 365 services Safekeep backs up, each declared once, here, as plain facts.

Everything that needs to know which services exist derives from this module: the API's
``service`` enums and the policy schema (``api/policy/schemas.py``), the policy's default
(``tenants/models/policy.py``), the search document's ``service`` (``search/documents.py``),
discovery's probes, which services a user or a site account gets and what gates them
(``backup/``), and the engine's per-service code (``module_for``).

Why plain data: ``tenants/``, ``search/`` and ``api/`` need the names, and ``search/`` sits
below the engine (tests/test_layers.py), so this module imports nothing of ours and nothing
heavy. The engine side of a service (collect, search fields, browse, restore, export) lives in
``safekeep/backup/services/<name>/`` and is imported by name only when it is used
(``engine``), so a worker that only restores files never imports the mail code.

Adding a service: docs/adding-a-service.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

AccountKindName = Literal["user", "site"]
# graph/client.py's throttling classes (its ``Scope``): Exchange limits per app per mailbox,
# SharePoint and OneDrive per app per tenant, everything else per tenant. graph/ derives the
# class of each request from its path; a service declares which one its data falls under and
# tests/backup/test_registry.py checks that graph's path patterns agree.
ThrottleClass = Literal["exchange", "sharepoint", "tenant"]


@dataclass(frozen=True)
class PolicySwitch:
    """A per-tenant yes/no of one service (a boolean field of the policy, named like the
    ``Policy`` column that stores it)."""

    name: str
    default: bool


@dataclass(frozen=True)
class ChangeNotifications:
    """How continuous protection subscribes to a service's changes for one account (Graph
    change notifications; backup/subscriptions.py)."""

    resource: str  # the subscription's resource, "{user}": the account's Graph id
    change_type: str
    lifetime: timedelta  # what we ask for, under Graph's maximum for the resource
    # When the resources are known only by asking Graph (a site's libraries and lists):
    # ``"module:function"``, an async function taking (GraphClient, Account) and returning
    # the resource strings, one subscription each; ``resource`` is then unused. None: the
    # one ``resource`` above.
    resolver: str | None = None


# Outlook resources allow just under 7 days, drive roots just under 30 (subscription
# lifetime limits); asking for less leaves room for a late renewal.
OUTLOOK_CHANGES = "created,updated,deleted"
OUTLOOK_LIFETIME = timedelta(days=3)


@dataclass(frozen=True)
class ServiceSpec:
    """One service, as every layer needs to know it."""

    name: str  # the API's and the catalog's name for it; never renamed (stored in rows)
    title: str  # what it is, for people
    kind: AccountKindName  # the account it belongs to
    # The ``Account.services_found`` key that says whether an account has this service (set by
    # discovery); services of one Exchange mailbox share "mail".
    found_key: str
    # ``"module:function"`` taking (GraphClient, user id) and answering whether the user has
    # it; discovery runs each distinct probe once per licensed user. None: every account of
    # the kind has it (sites are found by listing them).
    probe: str | None
    throttle: ThrottleClass
    graph_path: str  # where its data sits in Graph ("{id}": the account's Graph id)
    switches: tuple[PolicySwitch, ...] = ()
    # SearchFields (backup/catalog.py) it fills beyond ``title`` and ``folder_path``, which
    # every service fills; the rest stay empty for its documents.
    search_fields: tuple[str, ...] = ()
    # The module whose ``SERVICE`` implements the engine contract (backup/services/base.py's
    # ServiceModule: collect, search_fields, content, restore, export). Default:
    # ``safekeep.backup.services.<name>``.
    engine: str = field(default="")
    # Whether a new tenant's policy protects it. A service added after tenants exist starts
    # off, so switching it on is the MSP's decision (and its Graph consent's): ``teams``.
    default_on: bool = True
    # Graph change notifications for continuous protection; None: scheduled backups only.
    notifications: ChangeNotifications | None = None
    # Whether Microsoft 365 keeps an item's replaced content as an older version (drives'
    # files): a restore that overwrites it loses nothing, so the one-call recovery after a
    # detection overwrites items changed in place (Outlook items are deleted and re-created).
    keeps_versions: bool = False

    @property
    def engine_module(self) -> str:
        return self.engine or f"safekeep.backup.services.{self.name}"


MAIL_SWITCHES = (
    PolicySwitch("include_deleted_items", True),
    PolicySwitch("include_junk", False),
    PolicySwitch("include_recoverable_items", False),
)

DECLARED: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="mail",
        title="Exchange Online mail",
        kind="user",
        found_key="mail",
        probe="safekeep.graph.directory:has_mailbox",
        throttle="exchange",
        graph_path="/users/{id}/mailFolders",
        switches=MAIL_SWITCHES,
        notifications=ChangeNotifications(
            "users/{user}/messages", OUTLOOK_CHANGES, OUTLOOK_LIFETIME
        ),
        search_fields=(
            "date",
            "sender",
            "recipients",
            "body",
            "attachment_names",
            "attachment_text",
            "has_attachments",
        ),
    ),
    ServiceSpec(
        name="calendar",
        title="Exchange Online calendars",
        kind="user",
        found_key="mail",
        probe=None,
        throttle="exchange",
        graph_path="/users/{id}/calendars",
        notifications=ChangeNotifications("users/{user}/events", OUTLOOK_CHANGES, OUTLOOK_LIFETIME),
        search_fields=(
            "date",
            "sender",
            "recipients",
            "people",
            "location",
            "body",
            "attachment_names",
            "attachment_text",
            "has_attachments",
            "file_type",
        ),
    ),
    ServiceSpec(
        name="contacts",
        title="Exchange Online contacts",
        kind="user",
        found_key="mail",
        probe=None,
        throttle="exchange",
        graph_path="/users/{id}/contactFolders",
        notifications=ChangeNotifications(
            "users/{user}/contacts", OUTLOOK_CHANGES, OUTLOOK_LIFETIME
        ),
        search_fields=("date", "people", "location", "body", "file_type"),
    ),
    ServiceSpec(
        name="onedrive",
        title="OneDrive for Business",
        kind="user",
        found_key="onedrive",
        probe="safekeep.graph.directory:has_drive",
        throttle="sharepoint",
        graph_path="/users/{id}/drive",
        notifications=ChangeNotifications("users/{user}/drive/root", "updated", timedelta(days=20)),
        search_fields=("date", "people", "body", "file_type"),
        keeps_versions=True,
    ),
    ServiceSpec(
        name="sharepoint",
        title="SharePoint Online sites",
        kind="site",
        found_key="sharepoint",
        probe=None,
        throttle="sharepoint",
        graph_path="/sites/{id}",
        # One subscription per document library (its drive root) and per list; both allow
        # just under 30 days.
        notifications=ChangeNotifications(
            "",
            "updated",
            timedelta(days=20),
            resolver="safekeep.backup.services.sharepoint.notifications:subscription_resources",
        ),
        search_fields=("date", "people", "body", "file_type"),
        keeps_versions=True,
    ),
    ServiceSpec(
        # A user's Teams: the teams it is the first owner of (each team is backed up once,
        # under one owner's seat, never as a seat of its own) and its chats.
        name="teams",
        title="Microsoft Teams",
        kind="user",
        found_key="teams",
        probe="safekeep.graph.directory:has_teams",
        throttle="tenant",
        graph_path="/users/{id}/joinedTeams",
        search_fields=("date", "sender", "people", "body", "attachment_names"),
        default_on=False,
    ),
)

_registry: dict[str, ServiceSpec] = {spec.name: spec for spec in DECLARED}


def names() -> tuple[str, ...]:
    """Every service, in declaration order (the order the API lists them in)."""
    return tuple(_registry)


def get(name: str) -> ServiceSpec:
    """The declaration of ``name``; KeyError for a name no service has."""
    return _registry[name]


def specs() -> tuple[ServiceSpec, ...]:
    return tuple(_registry.values())


def defaults() -> tuple[str, ...]:
    """The services a new tenant's policy protects."""
    return tuple(spec.name for spec in _registry.values() if spec.default_on)


def of_kind(kind: str) -> tuple[str, ...]:
    """The services an account of ``kind`` ("user", "site") is backed up for."""
    return tuple(spec.name for spec in _registry.values() if spec.kind == kind)


def found_key(name: str) -> str:
    return _registry[name].found_key


def covered(
    kind: str, services_found: Mapping[str, bool] | None, wanted: Collection[str]
) -> list[str]:
    """The services an account of ``kind`` is backed up for, in declaration order: those of
    its kind that its tenant's policy (or a job) wants, less those discovery learnt it lacks
    (a user without a mailbox or a OneDrive)."""
    found = services_found or {}
    return [
        spec.name
        for spec in _registry.values()
        if spec.kind == kind and spec.name in wanted and found.get(spec.found_key, True)
    ]


def probes(kind: str) -> dict[str, str]:
    """``found_key -> probe`` for the services of ``kind`` that discovery has to ask Graph
    about (one probe per key: calendar and contacts ride on mail's)."""
    found: dict[str, str] = {}
    for spec in _registry.values():
        if spec.kind == kind and spec.probe is not None:
            found.setdefault(spec.found_key, spec.probe)
    return found


def resolve(reference: str) -> Any:
    """The object a ``"module:attribute"`` reference names (imported only now)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def switches() -> tuple[PolicySwitch, ...]:
    """Every service's policy switches, in declaration order."""
    return tuple(switch for spec in _registry.values() for switch in spec.switches)


def register(spec: ServiceSpec) -> None:
    """Declare a service outside this module. Only tests do this (``registered``). Types
    built from ``names()`` at import (the API's and the search document's ``service``
    enums, the policy schema) see it only if it is registered before they are imported."""
    if spec.name in _registry:
        raise ValueError(f"service {spec.name!r} is already declared")
    _registry[spec.name] = spec


def unregister(name: str) -> None:
    del _registry[name]


@contextmanager
def registered(spec: ServiceSpec) -> Iterator[ServiceSpec]:
    """``spec`` declared for the duration of the block, then removed again."""
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec.name)

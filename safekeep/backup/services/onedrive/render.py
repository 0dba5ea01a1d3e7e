"""A drive item's original form: the file's stored bytes, with ranges (``drive.model``)."""

from __future__ import annotations

from safekeep.backup.drive.model import content_of
from safekeep.backup.services.base import Content
from safekeep.storage.repository import TenantRepository
from safekeep.tenants.models import ItemVersion


async def content(repo: TenantRepository, version: ItemVersion) -> Content:
    return content_of(repo, version)

"""Snapshots as an MSP lists them: a tenant's, newest first, filtered by account, service, state
and time."""

from __future__ import annotations

from safekeep.tenants.snapshot import repository
from safekeep.tenants.tenant import repository as tenant_repository

list_snapshots = tenant_repository.under_tenant(repository.list_page)

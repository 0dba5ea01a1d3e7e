"""The five services. ``module_for(name)`` loads one (imports stay lazy: a worker that only
restores files never imports the mail code)."""

from __future__ import annotations

import importlib

from safekeep.backup.services.base import ServiceModule

SERVICE_NAMES = ("mail", "calendar", "contacts", "onedrive", "sharepoint")


def module_for(name: str) -> ServiceModule:
    if name not in SERVICE_NAMES:
        raise KeyError(name)
    module = importlib.import_module(f"safekeep.backup.services.{name}")
    service: ServiceModule = module.SERVICE
    return service

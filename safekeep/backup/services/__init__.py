"""The engine side of each declared service (safekeep/registry.py). ``module_for(name)`` loads
one by name (imports stay lazy: a worker that only restores files never imports the mail
code)."""

from __future__ import annotations

import importlib

from safekeep import registry
from safekeep.backup.services.base import ServiceModule


def module_for(name: str) -> ServiceModule:
    """The ``SERVICE`` of a declared service's engine module; KeyError for an undeclared one."""
    module = importlib.import_module(registry.get(name).engine_module)
    service: ServiceModule = module.SERVICE
    return service

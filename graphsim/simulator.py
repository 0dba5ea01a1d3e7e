"""``Simulator``: the world, its HTTPS server on a background thread, and the control API.

Tests start it in-process (``with Simulator(...) as sim:``); the CLI runs the same object
in the foreground. Every control action is a method here and an endpoint under ``/_sim/``.
"""

from __future__ import annotations

import pickle
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import trustme
import uvicorn

from graphsim import changes, control
from graphsim.core import Engine, SimConfig
from graphsim.generator import GenOptions, generate_world, new_sku, new_tenant
from graphsim.server import build_app, graph_router
from graphsim.state import OItem, Tenant, User, World
from graphsim.throttle import ThrottleConfig, Throttler

DEFAULT_APP_ID = "00000000-0000-4000-8000-5afe4ee90001"
DEFAULT_APP_SECRET = "safekeep-dev-app-secret"  # noqa: S105 - the simulator's development secret
STATE_FILE = "world.pickle"
PUBLIC_HOSTS = ("graph.microsoft.com", "login.microsoftonline.com", "login.microsoft.com")


P = ParamSpec("P")


def _new_item(
    action: Callable[Concatenate[Tenant, User, P], OItem],
) -> Callable[Concatenate[Simulator, str, str, P], str]:
    """A Simulator method over a control action that adds an item to one mailbox: under the
    world's lock, the tenant and user found by id or name, the new item's id returned."""

    def method(
        self: Simulator, tenant: str, user: str, /, *args: P.args, **kwargs: P.kwargs
    ) -> str:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            return action(t, control.need_user(t, user), *args, **kwargs).id

    method.__doc__ = action.__doc__
    return method


class Simulator:
    """A Microsoft Graph + Entra ID simulator serving HTTPS on ``base_url``."""

    def __init__(
        self,
        *,
        seed: int = 1,
        tenants: int = 1,
        users: int = 3,
        messages: int = 30,
        files: int = 15,
        events: int | None = None,
        contacts: int | None = None,
        sites: int = 2,
        list_items: int = 8,
        large_files: bool = False,
        teams: int = 0,
        latency_ms: float = 0.0,
        state_dir: str | Path | None = None,
        app_id: str = DEFAULT_APP_ID,
        app_secret: str = DEFAULT_APP_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        consented: bool = False,
        throttling: str | dict[str, Any] = "microsoft",
        token_lifetime_s: int = 3599,
        partial_delta_updates: bool = False,
    ) -> None:
        self.seed = seed
        self.partial_updates = partial_delta_updates
        self.options = GenOptions(
            users=users,
            messages=messages,
            files=files,
            events=events,
            contacts=contacts,
            sites=sites,
            list_items=list_items,
            large_files=large_files,
            teams=teams,
        )
        self.tenant_count = tenants
        self.host = host
        self.port = port
        self.consented = consented
        self._own_dir = state_dir is None
        self.state_dir = (
            Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="graphsim-"))
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = self.state_dir / "ca.pem"
        config = ThrottleConfig(latency_ms=latency_ms)
        if isinstance(throttling, str):
            config.update({"mode": throttling})
        else:
            config.update({"mode": "custom", **throttling})
        self.engine = Engine(
            world=self._load_or_generate(),
            config=SimConfig(
                app_id=app_id, app_secret=app_secret, token_lifetime_s=token_lifetime_s
            ),
            throttler=Throttler(config, seed),
            spill_dir=self.state_dir / "blobs",
            signing_key=self._signing_key(),
            router=graph_router(),
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        if partial_delta_updates:
            self.set_partial_delta_updates(True)

    # -- lifecycle --------------------------------------------------------------------------

    def _load_or_generate(self) -> World:
        path = self.state_dir / STATE_FILE
        if path.exists():
            with path.open("rb") as fh:
                world = pickle.load(fh)  # noqa: S301 - our own state file in our own folder
            assert isinstance(world, World)
            return world
        world = generate_world(self.seed, self.tenant_count, self.options)
        if self.consented:
            for tenant in world.tenants.values():
                tenant.consented_apps.add(DEFAULT_APP_ID)
        return world

    def _signing_key(self) -> bytes:
        path = self.state_dir / "signing.key"
        if path.exists():
            return path.read_bytes()
        key = secrets.token_bytes(32)
        if not self._own_dir:
            path.write_bytes(key)
        return key

    def _tls_files(self) -> tuple[str, str]:
        ca_key = self.state_dir / "ca-key.pem"
        if self.ca_path.exists() and ca_key.exists():
            ca = trustme.CA.from_pem(self.ca_path.read_bytes(), ca_key.read_bytes())
        else:
            ca = trustme.CA(organization_name="graphsim")
            ca.cert_pem.write_to_path(str(self.ca_path))
            ca.private_key_pem.write_to_path(str(ca_key))
        # Microsoft's public names too: a client may reach the simulator under them (a hosts
        # entry, a proxy, an httpx transport) and check the certificate as it would Graph's.
        names = sorted({self.host, "127.0.0.1", "localhost", *PUBLIC_HOSTS})
        cert = ca.issue_cert(*names)
        cert_path = self.state_dir / "server.pem"
        key_path = self.state_dir / "server-key.pem"
        cert.private_key_pem.write_to_path(str(key_path))
        with cert_path.open("wb") as fh:
            for blob in cert.cert_chain_pems:
                fh.write(blob.bytes())
        return str(cert_path), str(key_path)

    def start(self) -> Simulator:
        if self.consented:
            for tenant in self.engine.world.tenants.values():
                tenant.consented_apps.add(self.engine.config.app_id)
        cert, key = self._tls_files()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.base_url = f"https://{self.host}:{self.port}"
        self.engine.base_url = self.base_url
        app = build_app(self.engine, simulator=self)
        config = uvicorn.Config(
            app,
            ssl_certfile=cert,
            ssl_keyfile=key,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            backlog=512,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"graphsim-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("graphsim failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            # Clients' idle keep-alive TLS connections would hold a graceful shutdown open.
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.save()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def save(self) -> None:
        """Write the world to ``state_dir`` so a restarted simulator keeps its data."""
        with self.engine.world.lock:
            data = pickle.dumps(self.engine.world, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.state_dir / STATE_FILE)

    # -- handles ----------------------------------------------------------------------------

    @property
    def state(self) -> World:
        return self.engine.world

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def app_id(self) -> str:
        return self.engine.config.app_id

    @property
    def app_secret(self) -> str:
        return self.engine.config.app_secret

    def authority(self, tenant: str) -> str:
        """The msal authority URL for a tenant id, domain or name (any other key passes as is)."""
        found = self.engine.world.tenant(tenant)
        return f"{self.base_url}/{found.id if found else tenant}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the simulator's CA (for httpx ``verify=``)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def tenant(self, key: str | None = None) -> Tenant:
        """A tenant by id, domain or name; the first one when ``key`` is None."""
        world = self.engine.world
        if key is None:
            return next(iter(world.tenants.values()))
        return control.need_tenant(world, key)

    def tenants(self) -> list[dict[str, Any]]:
        with self.engine.world.lock:
            return [control.tenant_summary(t) for t in self.engine.world.tenants.values()]

    def _do(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.engine.world.lock:
            return fn(*args, **kwargs)

    # -- control actions ----------------------------------------------------------------------

    def add_tenant(
        self,
        name: str | None = None,
        *,
        users: int = 0,
        messages: int = 0,
        files: int = 0,
        consented: bool = False,
    ) -> dict[str, Any]:
        from graphsim.generator import generate_tenant

        with self.engine.world.lock:
            index = len(self.engine.world.tenants)
            if users or messages or files:
                tenant = generate_tenant(
                    self.seed,
                    index,
                    GenOptions(
                        users=users,
                        messages=messages,
                        files=files,
                        sites=self.options.sites,
                        list_items=self.options.list_items,
                    ),
                )
                if name:
                    tenant.name = name
            else:
                tenant = new_tenant(self.seed, index, name)
            if consented:
                tenant.consented_apps.add(self.app_id)
            if self.partial_updates:
                changes.switch(tenant, True)
            self.engine.world.tenants[tenant.id] = tenant
            return control.tenant_summary(tenant)

    def add_user(
        self, tenant: str, display_name: str, *, licensed: bool = True, sku_id: str | None = None
    ) -> dict[str, Any]:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            user = control.create_user(t, display_name, licensed=licensed, sku_id=sku_id)
            return {"id": user.id, "userPrincipalName": user.upn, "driveId": user.drive_id}

    def add_sku(
        self,
        tenant: str,
        part_number: str,
        *,
        units: int = 25,
        plans: tuple[str, ...] = ("EXCHANGE_S_STANDARD",),
    ) -> str:
        """Add a subscription (licence SKU) to a tenant; returns its skuId."""
        from graphsim import ids

        with self.engine.world.lock:
            t = self.tenant(tenant)
            sku_id = ids.guid("sku", part_number)
            t.skus[sku_id] = new_sku(sku_id, part_number, units, plans)
            return sku_id

    def assign_licence(self, tenant: str, user: str, sku_id: str | None = None) -> None:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            control.assign_licence(t, control.need_user(t, user), sku_id)

    def remove_licence(
        self, tenant: str, user: str, sku_id: str | None = None, *, keep_access: bool = False
    ) -> None:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            control.remove_licence(t, control.need_user(t, user), sku_id, keep_access=keep_access)

    def restrict_app_access(self, tenant: str, user: str, *, denied: bool = True) -> None:
        """Leave ``user``'s mailbox out of (or put it back into) the app's scope, as an
        Exchange application access policy does: its Outlook requests answer 403."""
        with self.engine.world.lock:
            t = self.tenant(tenant)
            control.need_user(t, user).app_access_denied = denied

    def partial_delta_updates(self) -> dict[str, Any]:
        """Whether incremental delta rounds send updated contacts, messages and folders as
        their changed properties only: for the simulator (tenants added later follow it) and
        per tenant."""
        with self.engine.world.lock:
            return {
                "enabled": self.partial_updates,
                "tenants": {t.id: t.partial_updates for t in self.engine.world.tenants.values()},
            }

    def set_partial_delta_updates(
        self, enabled: bool = True, tenant: str | None = None
    ) -> dict[str, Any]:
        """Switch partial delta updates (``graphsim.changes``) on or off for one tenant, or
        for every tenant and those added later. Turned on, each object's current state is
        what later changes are compared with; tokens issued before still work (their rounds
        send whole objects for what changed before the switch)."""
        with self.engine.world.lock:
            if tenant is None:
                self.partial_updates = enabled
                targets = list(self.engine.world.tenants.values())
            else:
                targets = [self.tenant(tenant)]
            for t in targets:
                changes.switch(t, enabled)
        return self.partial_delta_updates()

    def grant_consent(self, tenant: str) -> None:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            t.consent_denied = False
            t.consented_apps.add(self.app_id)

    def revoke_consent(self, tenant: str) -> None:
        with self.engine.world.lock:
            self.tenant(tenant).consented_apps.discard(self.app_id)

    def deny_consent(self, tenant: str, deny: bool = True) -> None:
        """Make the tenant's admin refuse (or accept again) the next consent prompt."""
        with self.engine.world.lock:
            self.tenant(tenant).consent_denied = deny

    # New Outlook items in one mailbox: control's own keywords, the new item's id back.
    add_message = _new_item(control.add_mime_message)
    add_event = _new_item(control.add_event)
    add_contact = _new_item(control.add_contact)

    def add_mail_folder(
        self, tenant: str, user: str, name: str, parent: str = "msgfolderroot"
    ) -> str:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            return control.add_mail_folder(t, control.need_user(t, user), name, parent)

    def add_file(
        self,
        tenant: str,
        path: str,
        *,
        user: str | None = None,
        drive_id: str | None = None,
        data: bytes | None = None,
        size: int | None = None,
    ) -> str:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            u = control.need_user(t, user) if user else None
            drive = control.user_drive(t, u, drive_id)
            return control.add_file(t, drive, path, data=data, size=size).id

    def add_site(self, tenant: str, name: str) -> str:
        with self.engine.world.lock:
            return control.add_site(self.tenant(tenant), name).id

    def add_list_item(self, tenant: str, list_id: str, fields: dict[str, Any]) -> str:
        from graphsim import ops

        with self.engine.world.lock:
            t = self.tenant(tenant)
            return ops.new_list_item(t, control.need_list(t, list_id), fields, "").id

    def edit_item(
        self,
        tenant: str,
        item_id: str,
        changes: dict[str, Any] | None = None,
        *,
        list_id: str | None = None,
    ) -> None:
        with self.engine.world.lock:
            control.edit_item(self.tenant(tenant), item_id, changes or {}, list_id=list_id)

    def move_item(self, tenant: str, item_id: str, destination: str) -> None:
        with self.engine.world.lock:
            control.move_item(self.tenant(tenant), item_id, destination)

    def delete_item(
        self, tenant: str, item_id: str, *, hard: bool = False, list_id: str | None = None
    ) -> None:
        with self.engine.world.lock:
            control.delete_item(self.tenant(tenant), item_id, hard=hard, list_id=list_id)

    def ransomware(
        self, tenant: str, user: str, count: int, extension: str = ".locked"
    ) -> list[str]:
        with self.engine.world.lock:
            t = self.tenant(tenant)
            return control.ransomware(t, control.need_user(t, user), count, extension)

    def expire_delta_tokens(self, tenant: str | None = None, owner: str | None = None) -> None:
        """Make delta tokens of a tenant (or of one user/drive/list id) answer 410."""
        with self.engine.world.lock:
            targets = [self.tenant(tenant)] if tenant else list(self.engine.world.tenants.values())
            for t in targets:
                control.expire_delta_tokens(t, owner)

    def throttling(self) -> dict[str, Any]:
        return self.engine.throttler.config.as_dict()

    def set_throttling(self, **settings: Any) -> dict[str, Any]:
        self.engine.throttler.config.update(settings)
        return self.engine.throttler.config.as_dict()

    def set_latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        self.engine.throttler.config.update(
            {"latency_ms": float(ms), "latency_jitter_ms": float(jitter_ms)}
        )

    def set_error_rate(self, rate: float) -> None:
        self.engine.throttler.config.update({"error_rate": float(rate)})

    def counters(self) -> dict[str, Any]:
        """The throttler's request counters, and ``in_flight``: per mailbox
        (``tenant-id|upn``), the Outlook requests in flight over time (graphsim.inflight)."""
        return {
            **self.engine.throttler.counters.as_dict(),
            "in_flight": self.engine.in_flight.as_dict(),
        }

    def reset_counters(self) -> None:
        self.engine.throttler.reset_counters()
        self.engine.in_flight.reset()

    def reset(self) -> None:
        """Back to the seed's world: regenerated content, default throttling, no counters."""
        world = generate_world(self.seed, self.tenant_count, self.options)
        with self.engine.world.lock:
            if self.consented:
                for t in world.tenants.values():
                    t.consented_apps.add(self.app_id)
            self.engine.world.tenants = world.tenants
            self.engine.upload_sessions.clear()
            for t in world.tenants.values():
                if self.partial_updates:
                    changes.switch(t, True)
        latency = self.engine.throttler.config.latency_ms
        self.engine.throttler.config = ThrottleConfig(latency_ms=latency)
        self.engine.throttler.reset()
        self.engine.in_flight.reset()

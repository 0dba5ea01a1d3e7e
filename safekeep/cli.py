"""The `safekeep` command: serve, worker, scheduler, migrate, msp, export download."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from safekeep import logging as safekeep_logging
from safekeep.settings import get_settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Safekeep: Microsoft 365 backup for MSPs"
)
msp_app = typer.Typer(no_args_is_help=True, help="Manage MSP accounts (operator only)")
app.add_typer(msp_app, name="msp")
export_app = typer.Typer(no_args_is_help=True, help="Exports (as an API client)")
app.add_typer(export_app, name="export")
search_app = typer.Typer(no_args_is_help=True, help="The search index (operator only)")
app.add_typer(search_app, name="search")
keys_app = typer.Typer(no_args_is_help=True, help="The master key (operator only)")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"safekeep {version('safekeep')}")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit (what an image or a package holds).",
        ),
    ] = False,
) -> None:
    """Safekeep: Microsoft 365 backup for MSPs."""


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from safekeep.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    console.print("[green]database is up to date[/green]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    demo: Annotated[
        bool, typer.Option(help="Also run graphsim with a connected demo tenant")
    ] = False,
) -> None:
    """API + in-process worker + scheduler (the embedded way to run Safekeep)."""
    from safekeep.serve import run

    run(host=host, port=port, demo=demo)


@app.command()
def worker(
    threads: Annotated[int, typer.Option(help="Concurrent actors")] = 8,
    queues: Annotated[list[str] | None, typer.Option(help="Only these queues")] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics on this port (0: off)")
    ] = 0,
) -> None:
    """Consume jobs from the broker (scale-out)."""
    from safekeep.workers.process import run_worker

    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
    if metrics_port:
        # Graph throttling and blob store errors happen here, not in the API: each worker
        # serves its own counters for Prometheus to scrape (the chart's PodMonitor).
        from prometheus_client import start_http_server

        import safekeep.api.metrics  # noqa: F401  (registers the counters)

        start_http_server(metrics_port)
    run_worker(settings, threads=threads, queues=queues)


@app.command()
def scheduler() -> None:
    """Enqueue due backups and recover lost jobs (safe to run as several replicas)."""
    from safekeep.workers.scheduler import run_forever

    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
    asyncio.run(run_forever(settings))


@msp_app.command("create")
def msp_create(
    name: Annotated[str, typer.Option(help="The MSP's name")],
    billing_email: Annotated[str | None, typer.Option(help="Where invoices go")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON")] = False,
) -> None:
    """Create an MSP and its first admin API key (printed once)."""
    from safekeep.db import Database
    from safekeep.migrate import upgrade
    from safekeep.tenants.msp import service

    settings = get_settings()
    upgrade(settings.resolved_database_url)

    async def create() -> tuple[str, str]:
        from safekeep.billing.service import ensure_customer
        from safekeep.billing.stripe_client import BillingClient

        db = Database(settings.resolved_database_url, max_connections=2)
        try:
            async with db.session() as session:
                msp, secret = await service.create_with_admin_key(
                    session, name=name, billing_email=billing_email
                )
                billing = BillingClient.from_settings(settings)
                if billing is not None:  # billing on: the MSP gets its Stripe customer now
                    await ensure_customer(session, billing, msp.id)
                return str(msp.id), secret
        finally:
            await db.dispose()

    msp_id, secret = asyncio.run(create())
    if as_json:
        typer.echo(json.dumps({"msp_id": msp_id, "api_key": secret}))
    else:
        console.print(f"MSP [bold]{name}[/bold] created: {msp_id}")
        console.print(f"Admin API key (shown once): [bold]{secret}[/bold]")


@export_app.command("download")
def export_download(
    export_id: Annotated[str, typer.Argument(help="The export's id")],
    api_url: Annotated[
        str, typer.Option(envvar="SAFEKEEP_API_URL", help="Where the Safekeep API is")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str, typer.Option(envvar="SAFEKEEP_API_KEY", help="An API key with the export scope")
    ] = "",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: export-<id>.zip")
    ] = None,
) -> None:
    """Download an export's ZIP with a progress bar. An interrupted download resumes where it
    stopped (HTTP Range); the result is checked against the export's SHA-256."""
    from safekeep.client.download import DownloadError, download_export

    if not api_key:
        console.print("[red]Give an API key: --api-key or SAFEKEEP_API_KEY[/red]")
        raise typer.Exit(2)
    target = output or Path(f"export-{export_id}.zip")
    try:
        size = download_export(api_url, api_key, export_id, target, console=console)
    except DownloadError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"[green]{target}[/green]: {size:,} bytes, SHA-256 verified")


@search_app.command("migrate")
def search_migrate() -> None:
    """Move the OpenSearch index to the current mapping without downtime (a new versioned
    index, copied and caught up, then both aliases flipped at once)."""
    from safekeep.runtime import Runtime
    from safekeep.search.opensearch import OpenSearchBackend

    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)

    async def migrate_index() -> str:
        runtime = Runtime.build(settings, send=lambda _messages: None)
        try:
            backend = await runtime.search_backend()
            if not isinstance(backend, OpenSearchBackend):
                raise typer.BadParameter("the embedded SQLite search has no index to migrate")
            return await backend.migrate()
        finally:
            await runtime.close()

    console.print(f"search index now: [bold]{asyncio.run(migrate_index())}[/bold]")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random master key (urlsafe base64 of 32 bytes)."""
    import base64
    import os

    typer.echo(base64.urlsafe_b64encode(os.urandom(32)).decode())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every tenant's data key and re-seal every secret under SAFEKEEP_MASTER_KEY,
    opening them with SAFEKEEP_PREVIOUS_MASTER_KEYS; backed-up data is not re-encrypted.
    Safe to interrupt and run again; fails if anything opens with none of the keys."""
    from safekeep.db import Database
    from safekeep.tenants.keyrotation import RotationReport, rotate_master_key

    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)

    async def rotate() -> RotationReport:
        db = Database(settings.resolved_database_url, max_connections=2)
        try:
            return await rotate_master_key(db, settings)
        finally:
            await db.dispose()

    report = asyncio.run(rotate())
    typer.echo(
        json.dumps(
            {
                "rewrapped_data_keys": report.data_keys,
                "resealed_secrets": report.secrets,
                "already_current": report.current,
                "unreadable": report.unreadable,
            }
        )
    )
    if not report.ok:
        console.print(
            "[red]some keys open with none of SAFEKEEP_MASTER_KEY and "
            "SAFEKEEP_PREVIOUS_MASTER_KEYS: keep the old keys until they do[/red]"
        )
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

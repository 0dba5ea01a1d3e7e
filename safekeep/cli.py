"""The `safekeep` command: serve, worker, scheduler, migrate, msp, export download."""

from __future__ import annotations

import asyncio
import json
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
console = Console(stderr=True)


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
) -> None:
    """Consume jobs from the broker (scale-out)."""
    from safekeep.workers.process import run_worker

    settings = get_settings()
    safekeep_logging.configure(settings.log_level, json=settings.log_json)
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

        db = Database(settings.resolved_database_url, pool_size=1)
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


if __name__ == "__main__":
    app()

"""Downloading an export through the API: streamed to a ``.part`` file, resumed with Range
after an interruption, verified against the export's SHA-256, then renamed into place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

CHUNK = 1024 * 1024


class DownloadError(Exception):
    pass


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('title')}: {body.get('detail')}"
    except ValueError:
        return f"HTTP {response.status_code}"


def download_export(
    api_url: str, api_key: str, export_id: str, target: Path, *, console: Console | None = None
) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    part = target.with_name(target.name + ".part")
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=60) as client:
        meta = client.get(f"/v1/exports/{export_id}")
        if meta.status_code != 200:
            raise DownloadError(f"Cannot read the export: {_problem(meta)}")
        export = meta.json()
        if export["status"] != "ready":
            raise DownloadError(f"The export is {export['status']}, not ready yet")
        size, expected = int(export["size"]), str(export["sha256"])
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        request_headers = {"Range": f"bytes={have}-", "If-Range": f'"{expected}"'} if have else {}
        progress = Progress(
            TextColumn("[bold]export[/bold]"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        with (
            progress,
            client.stream(
                "GET", f"/v1/exports/{export_id}/download", headers=request_headers
            ) as response,
        ):
            if response.status_code == 200:
                have = 0  # the server sent it all (no range, or the export changed)
            elif response.status_code != 206:
                response.read()
                raise DownloadError(f"Download refused: {_problem(response)}")
            task = progress.add_task("download", total=size, completed=have)
            with part.open("ab" if have else "wb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    progress.update(task, advance=len(chunk))
    digest = hashlib.sha256()
    with part.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != expected:
        part.unlink()
        raise DownloadError("The downloaded file does not match the export's SHA-256; try again")
    part.replace(target)
    return size

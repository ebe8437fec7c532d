"""`mkr backup DIR` and `mkr restore DIR` (CONTRACT §12; issue #17).

Backup: one `pg_dump --format=custom` per service database (each a consistent snapshot of its
database, taken in a repeatable-read transaction by pg_dump itself), and `manifest.json`: when, the
code's version, and per service its migration head, outbox position (last id, last published id,
unpublished rows) and consumer position (consumed-event ids per consumer, the last one's time).

Across databases the dumps are not one instant; that is safe because events reconcile them: an event
in a restored outbox that was not yet published goes out after the restore, and every consumer is
idempotent (its inbox is in the same dump as the changes it made), so nothing is applied twice.

Restore: onto servers whose service databases are empty or missing (refused otherwise), each dump
restored with `pg_restore --no-owner --exit-on-error`; the manifest's migration heads must be ones this
code knows (a newer backup is refused). The services then start as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mkr.registry import SERVICES
from shared import db, pgtools
from shared.settings import Settings

MANIFEST = "manifest.json"
FORMAT = 1


async def _position(settings: Settings, service: str) -> dict[str, Any]:
    engine = db.create_engine(settings, service)
    try:
        async with engine.connect() as conn:
            head = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
            outbox = (await conn.execute(sa.text(
                "SELECT coalesce(max(id), 0) AS last_id, coalesce(max(id) FILTER (WHERE published_at IS NOT NULL), 0)"
                " AS last_published_id, count(*) FILTER (WHERE published_at IS NULL) AS unpublished FROM outbox"
            ))).one()
            consumers = (await conn.execute(sa.text(
                "SELECT consumer, count(*) AS events, max(processed_at) AS last_at FROM processed_events GROUP BY 1"
            ))).all()
    finally:
        await engine.dispose()
    return {
        "database": db.database_name(settings, service),
        "migration_heads": sorted(head),
        "outbox": {"last_id": outbox.last_id, "last_published_id": outbox.last_published_id,
                   "unpublished": outbox.unpublished},
        "consumers": {row.consumer: {"events": row.events, "last_at": row.last_at.isoformat()} for row in consumers},
    }


async def backup(settings: Settings, directory: Path) -> dict[str, Any]:
    """Dump every service database into `directory` (created; must be empty) and write the manifest."""
    _prepare(directory)
    manifest: dict[str, Any] = {"format": FORMAT, "started_at": datetime.now(UTC).isoformat(),
                                "version": _version(), "services": {}}
    for service in SERVICES:
        manifest["services"][service] = await _position(settings, service)
        dump = await pgtools.run(settings, service, "pg_dump", "--format=custom", "--no-owner", "--no-privileges")
        _write(directory / f"{service}.dump", dump)
        manifest["services"][service]["file"] = f"{service}.dump"
        manifest["services"][service]["bytes"] = len(dump)
    manifest["finished_at"] = datetime.now(UTC).isoformat()
    _write(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _prepare(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty")


def _write(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def read_manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    return manifest


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mkr-backend")
    except PackageNotFoundError:
        return "unknown"


async def _is_empty(settings: Settings, service: str) -> bool:
    engine = db.create_engine(settings, service)
    try:
        async with engine.connect() as conn:
            tables = await conn.scalar(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await engine.dispose()
    return not tables


def known_heads(service: str) -> set[str]:
    """Every revision of the service's migrations this code carries."""
    import importlib

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mkr.registry import spec

    package = importlib.import_module(spec(service).package)
    config = Config()
    config.set_main_option("script_location", str(Path(package.__file__ or "").parent / "migrations"))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


async def restore(settings: Settings, directory: Path) -> dict[str, Any]:
    """Restore every service database of the backup in `directory` onto empty databases."""
    manifest = read_manifest(directory)
    if manifest.get("format") != FORMAT:
        raise ValueError("not a backup of this format")
    for service, entry in manifest["services"].items():
        unknown = set(entry["migration_heads"]) - known_heads(service)
        if unknown:
            raise ValueError(f"{service}: the backup has migrations this code does not know: {sorted(unknown)}")
    for service in manifest["services"]:
        await db.ensure_database(settings, service)
        if not await _is_empty(settings, service):
            raise ValueError(f"{service}: database {db.database_name(settings, service)} is not empty")
    for service, entry in manifest["services"].items():
        await pgtools.run(settings, service, "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                          "--single-transaction", "--dbname", db.database_name(settings, service),
                          str(directory / entry["file"]))
    return manifest


def _cmd(args: argparse.Namespace) -> int:
    settings = Settings()
    action = backup if args.backup_action == "backup" else restore
    try:
        manifest = asyncio.run(action(settings, Path(args.dir)))
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"mkr {args.backup_action}: {exc}", file=sys.stderr)
        return 1
    for service, entry in manifest["services"].items():
        print(f"{service}: {entry['file']} (heads {', '.join(entry['migration_heads'])})")
    return 0


def register_commands(sub: Any) -> None:
    """Add `backup` and `restore` to the `mkr` parser (mkr/cli.py)."""
    for name, text in (("backup", "dump every service database and a manifest into DIR"),
                       ("restore", "restore the backup in DIR onto empty databases")):
        command = sub.add_parser(name, help=text)
        command.add_argument("dir")
        command.set_defaults(func=_cmd, backup_action=name)

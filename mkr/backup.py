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

The key store (services/intake/keystore.py: the per-case data keys and the erasure tombstones) is in no
data backup. `mkr backup --keys DIR [--keep DAYS]` dumps it apart, into `DIR/keys-<UTC instant>/`, and
removes the key backups in DIR older than DAYS (default 7): a key backup taken before an erasure still
holds that case's key, so key backups are kept for a short, bounded time and apart from the data's.
After every restore the erasures are applied again (`reapply_erasures`): every case erased in the
restored data loses its key in the key store, and every tombstone of the key store erases its case in
the restored data again (index rows and free text removed, `case.anonymised` published anew for the other
services). A data backup taken before an erasure, restored after it, so brings no erased case back.
`mkr restore --keys DIR` restores a key backup onto an empty key store (the key store itself was lost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mkr.registry import SERVICES
from services.intake import erasure
from services.intake.keystore import KeyStore
from shared import db, pgtools
from shared.crypto import FieldCipher
from shared.settings import Settings

MANIFEST = "manifest.json"
FORMAT = 1
KEYS_FILE = "keys.dump"
KEYS_PREFIX = "keys-"  # a key backup's directory: keys-<UTC instant>, under the directory named to --keys
KEEP_DAYS = 7.0


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


def _migrations(service: str) -> Path:
    import importlib

    from mkr.registry import spec

    package = importlib.import_module(spec(service).package)
    return Path(package.__file__ or "").parent / "migrations"


def known_heads(service: str) -> set[str]:
    """Every revision of the service's migrations this code carries."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_migrations(service)))
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
    began = time.perf_counter()
    manifest["erasures"] = await reapply_erasures(settings)
    manifest["erasures"]["seconds"] = round(time.perf_counter() - began, 1)
    return manifest


async def reapply_erasures(settings: Settings) -> dict[str, int]:
    """Every erasure applied again across the key store and intake's (restored) data: the data's erased
    cases lose their keys in the key store (with a tombstone), the key store's tombstones erase their
    cases in the data. How many keys were destroyed, how many cases erased again, and how many cases
    (not erased) have no key in the key store (reported after the key backup restored, or no key store).
    A backup of before the key store still holds `case_keys`: opening the key store moves them out (each
    tombstoned case's key dropped), then intake's database is migrated. Nothing to do while intake's
    database is empty (a key store restored before the data: the data's restore applies them)."""
    await db.ensure_database(settings, "intake")
    if await _is_empty(settings, "intake"):
        return {"keys_destroyed": 0, "cases_erased_again": 0, "cases_without_key": 0}
    keys = KeyStore(settings, FieldCipher.from_settings(settings))
    engine = db.create_engine(settings, "intake")
    sessions = db.session_factory(engine)
    try:
        await keys.open()
        await db.migrate(engine, _migrations("intake"), settings)
        async with sessions() as session, session.begin():
            destroyed = await erasure.tombstone_erased(session, keys)
        erased = 0
        while True:  # in batches: each erasure is audited and publishes its event
            async with sessions() as session, session.begin():
                done = await erasure.apply_tombstones(session, settings, keys, limit=500)
            erased += done
            if not done:
                break
        async with sessions() as session:  # sealed under a case key the key store does not hold: unreadable
            sealed = list((await session.execute(sa.text(
                "SELECT id FROM cases WHERE erased_at IS NULL AND personal LIKE 'case:%'"))).scalars())
        keyless = len(sealed) - len(await keys.wrapped(sealed))
    finally:
        await keys.close()
        await engine.dispose()
    return {"keys_destroyed": destroyed, "cases_erased_again": erased, "cases_without_key": keyless}


async def backup_keys(settings: Settings, parent: Path, *, keep_days: float = KEEP_DAYS) -> dict[str, Any]:
    """Dump the key store into a new `keys-<instant>` directory under `parent`, then remove the key
    backups under `parent` older than `keep_days` (their manifests' `started_at`)."""
    started = datetime.now(UTC)
    directory = parent / f"{KEYS_PREFIX}{started:%Y%m%dT%H%M%S%fZ}"
    _prepare(directory)
    url = db.keystore_url(settings)
    keys = KeyStore(settings, FieldCipher.from_settings(settings))
    async with keys.opened():
        counts = await keys.counts()
    dump = await pgtools.run_at(url, "pg_dump", "--format=custom", "--no-owner", "--no-privileges")
    _write(directory / KEYS_FILE, dump)
    manifest: dict[str, Any] = {"format": FORMAT, "kind": "keys", "started_at": started.isoformat(),
                                "version": _version(), "database": url.database, "file": KEYS_FILE,
                                "bytes": len(dump), **counts, "finished_at": datetime.now(UTC).isoformat()}
    _write(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    manifest["directory"] = str(directory)
    manifest["pruned"] = [str(path) for path in prune_key_backups(parent, keep_days=keep_days, now=started)]
    return manifest


def prune_key_backups(parent: Path, *, keep_days: float, now: datetime) -> list[Path]:
    """Remove the key backups (`keys-*` directories whose manifest says kind "keys") under `parent`
    started more than `keep_days` before `now`; the removed directories."""
    import shutil
    from datetime import timedelta

    cutoff = now - timedelta(days=keep_days)
    removed = []
    for path in sorted(parent.glob(f"{KEYS_PREFIX}*")):
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError):
            continue  # not a key backup of ours: left alone
        if manifest.get("kind") == "keys" and datetime.fromisoformat(manifest["started_at"]) < cutoff:
            shutil.rmtree(path)
            removed.append(path)
    return removed


async def restore_keys(settings: Settings, directory: Path) -> dict[str, Any]:
    """Restore a key backup onto an empty (or missing) key store, then apply the erasures again."""
    manifest = read_manifest(directory)
    if manifest.get("format") != FORMAT or manifest.get("kind") != "keys":
        raise ValueError("not a key backup of this format")
    url = db.keystore_url(settings)
    await db.ensure_database_at(url)
    keys = KeyStore(settings, FieldCipher.from_settings(settings))
    async with keys.opened():  # creates the empty tables when missing: the dump's data goes into them
        counts = await keys.counts()
    if counts["keys"] or counts["tombstones"]:
        raise ValueError(f"the key store {url.database} is not empty")
    await pgtools.run_at(url, "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                         "--single-transaction", "--data-only", "--dbname", str(url.database),
                         str(directory / manifest["file"]))
    manifest["erasures"] = await reapply_erasures(settings)
    return manifest


def _cmd(args: argparse.Namespace) -> int:
    settings = Settings()
    directory = Path(args.dir)
    try:
        if args.keys:
            if args.backup_action == "backup":
                manifest = asyncio.run(backup_keys(settings, directory, keep_days=args.keep))
                print(f"keys: {manifest['directory']} ({manifest['keys']} keys, {manifest['tombstones']} tombstones)")
                for path in manifest["pruned"]:
                    print(f"removed: {path}")
            else:
                manifest = asyncio.run(restore_keys(settings, directory))
                print(f"keys: {manifest['keys']} keys, {manifest['tombstones']} tombstones; {manifest['erasures']}")
            return 0
        action = backup if args.backup_action == "backup" else restore
        manifest = asyncio.run(action(settings, directory))
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"mkr {args.backup_action}: {exc}", file=sys.stderr)
        return 1
    for service, entry in manifest["services"].items():
        print(f"{service}: {entry['file']} (heads {', '.join(entry['migration_heads'])})")
    if "erasures" in manifest:
        print(f"erasures applied again: {manifest['erasures']}")
        if manifest["erasures"].get("cases_without_key"):
            print(f"mkr restore: {manifest['erasures']['cases_without_key']} cases have no key in the key store "
                  "and do not open: restore the key store (`mkr restore --keys`) first?", file=sys.stderr)
    return 0


def _positive(value: str) -> float:
    days = float(value)
    if not days > 0:
        raise argparse.ArgumentTypeError("--keep takes a number of days above 0")
    return days


def register_commands(sub: Any) -> None:
    """Add `backup` and `restore` to the `mkr` parser (mkr/cli.py)."""
    for name, text in (("backup", "dump every service database and a manifest into DIR (--keys: the key store)"),
                       ("restore", "restore the backup in DIR onto empty databases, then apply the erasures")):
        command = sub.add_parser(name, help=text)
        command.add_argument("dir")
        command.add_argument("--keys", action="store_true",
                             help="the key store instead: a key backup under DIR (kept apart from the data's)")
        if name == "backup":
            command.add_argument("--keep", type=_positive, default=KEEP_DAYS, metavar="DAYS",
                                 help=f"with --keys: remove key backups in DIR older than DAYS ({KEEP_DAYS:g})")
        command.set_defaults(func=_cmd, backup_action=name)

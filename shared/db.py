"""Async engine and sessions per service, each on its own database, migrated at start."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import asyncpg
from alembic import command, context
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import TEXT, Column, Connection, MetaData, String, Table, TextClause, event, exc, text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator

from shared.settings import Settings

log = logging.getLogger("mkr.db")
_MIGRATION_LOCK = threading.Lock()

# Constraint names that Alembic and humans can predict.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def server_url(settings: Settings) -> URL:
    """The PostgreSQL server to use: MKR_DATABASE_URL, else the embedded one under state_dir."""
    if settings.database_url:
        raw = settings.database_url
    else:
        from shared.embedded import ensure_postgres

        raw = ensure_postgres(settings.state_dir)
    url = make_url(raw)
    return url.set(drivername="postgresql+asyncpg")


def database_name(settings: Settings, service: str) -> str:
    return f"{settings.database_prefix}{service}"


def service_url(settings: Settings, service: str) -> URL:
    return server_url(settings).set(database=database_name(settings, service))


KEYSTORE = "keys"  # the key store's database name after the prefix, when MKR_KEYSTORE_URL is unset


def keystore_url(settings: Settings) -> URL:
    """The key store's database (MKR_KEYSTORE_URL, else `<database_prefix>keys` on the services' server)."""
    if settings.keystore_url:
        return make_url(settings.keystore_url).set(drivername="postgresql+asyncpg")
    return server_url(settings).set(database=database_name(settings, KEYSTORE))


def asyncpg_dsn(url: URL) -> dict[str, object]:
    """Keyword arguments for asyncpg.connect from a SQLAlchemy URL (Unix sockets included)."""
    kwargs: dict[str, object] = {
        "user": url.username or "postgres",
        "database": url.database or "postgres",
    }
    if url.password:
        kwargs["password"] = url.password
    host = url.query.get("host") or url.host
    if host:
        kwargs["host"] = host if isinstance(host, str) else host[0]
    if url.port:
        kwargs["port"] = url.port
    return kwargs


class DatabaseMissing(RuntimeError):
    """The service's database does not exist and its role may not create it."""


async def ensure_database(settings: Settings, service: str) -> None:
    """Create the service's database on the server if it does not exist yet.

    In production each service logs in as a role that owns only its own database and may neither
    create databases nor connect to any other (deploy/): then the database already exists, and
    connecting to it is the whole check. Only a missing database needs the maintenance database
    and CREATEDB (the embedded server, tests, a single-role development setup).
    """
    await ensure_database_at(service_url(settings, service))


async def ensure_database_at(url: URL) -> None:
    """`ensure_database` for a database given by its URL (the key store's)."""
    name = str(url.database)
    try:
        conn = await asyncpg.connect(**asyncpg_dsn(url), timeout=10)  # type: ignore[arg-type]
    except asyncpg.InvalidCatalogNameError:
        pass  # not there yet
    else:
        await conn.close()
        return
    maintenance = url.set(database="postgres")
    try:
        conn = await asyncpg.connect(**asyncpg_dsn(maintenance), timeout=10)  # type: ignore[arg-type]
    except asyncpg.InsufficientPrivilegeError:
        raise DatabaseMissing(f"database {name} does not exist; create it for the service's role") from None
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another replica won the race (a concurrent CREATE DATABASE can fail on pg_database's index)
            except asyncpg.InsufficientPrivilegeError:
                raise DatabaseMissing(
                    f"database {name} does not exist and the role may not create it; create it for the role"
                ) from None
    finally:
        await conn.close()


async def drop_database(settings: Settings, service: str) -> None:
    await drop_database_at(service_url(settings, service))


async def drop_database_at(url: URL) -> None:
    name = str(url.database)
    maintenance = url.set(database="postgres")
    conn = await asyncpg.connect(**asyncpg_dsn(maintenance), timeout=10)  # type: ignore[arg-type]
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pool_limits(settings: Settings) -> tuple[int, int]:
    """One worker's (pool_size, max_overflow): MKR_DB_CONNECTIONS (default pool + overflow) divided by
    MKR_WORKERS, split in the proportion of MKR_DB_POOL_SIZE to MKR_DB_MAX_OVERFLOW; at least two per worker
    (one of overflow unless MKR_DB_MAX_OVERFLOW is 0). One worker with the defaults: 8 + 8, as before workers."""
    configured = settings.db_pool_size + settings.db_max_overflow
    total = settings.db_connections or configured
    share = max(2, total // settings.worker_count)
    pool = max(1, share * settings.db_pool_size // configured)
    if settings.db_max_overflow:
        pool = min(pool, share - 1)
    return pool, share - pool


# A pooled connection idle longer than this is pinged before it is handed out (see ping_idle_connections).
IDLE_BEFORE_PING = 1.0


def create_engine(settings: Settings, service: str) -> AsyncEngine:
    """A service's engine: its share of the connections (pool_limits), idle ones pinged at checkout."""
    pool_size, max_overflow = pool_limits(settings)
    engine = create_async_engine(
        service_url(settings, service),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=15,
        connect_args={"server_settings": {"application_name": f"mkr-{service}"}, "timeout": 10},
    )
    ping_idle_connections(engine)
    return engine


def ping_idle_connections(engine: AsyncEngine, idle: float = IDLE_BEFORE_PING) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool: one idle over `idle` seconds is
    pinged at checkout, and one that fails the ping is replaced (DisconnectionError: the pool reconnects).

    In place of `pool_pre_ping=True`, which pings on every checkout: SQLAlchemy's asyncpg ping is BEGIN, `;`,
    ROLLBACK, three round trips before each transaction, a third of a report's. A connection handed back
    moments ago has just worked; one that meets a dead server mid-use raises a disconnect error, on which
    SQLAlchemy invalidates it and every connection older than it in the pool, so the next checkouts reconnect.
    """
    pool, dialect = engine.sync_engine.pool, engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _handed_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")  # None: a new connection (the info is cleared on reconnect)
        if since is None or time.monotonic() - since < idle:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"an idle pooled connection failed its ping: {error}") from error


class DriverRow:
    """An asyncpg record read by attribute, as SQLAlchemy's rows are (`row.case_number`)."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None


class DriverStatement:
    """A text statement run by the asyncpg driver itself on a session's connection, in its transaction.

    For the few statements of the hottest path (intake's report): SQLAlchemy's work per execute (cache key,
    parameter processing, result wrapping, the greenlet hop) measured ~0.3 ms of CPU against ~0.06 ms for
    asyncpg alone. Compiled once, for asyncpg's `$n` placeholders; a name used twice is one parameter.
    asyncpg prepares and caches it per connection, as SQLAlchemy's asyncpg dialect does.
    """

    def __init__(self, statement: TextClause) -> None:
        compiled = statement.compile(dialect=asyncpg_dialect.dialect())
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    async def fetch(self, session: AsyncSession, params: Mapping[str, Any]) -> list[DriverRow]:
        """Run in the session's transaction (begun here if this is its first statement)."""
        return await self.run(await driver_in_transaction(session), params)

    async def run(self, driver: asyncpg.Connection, params: Mapping[str, Any]) -> list[DriverRow]:
        """Run on an asyncpg connection as it stands (outside a transaction: committed on its own)."""
        return [DriverRow(record) for record in await driver.fetch(self.sql, *(params[n] for n in self.names))]


async def driver_in_transaction(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, with the session's transaction begun on it: SQLAlchemy's
    asyncpg adapter sends BEGIN lazily, at its first statement, so a driver statement coming first begins
    it the same way (else it would commit on its own)."""
    connection = await session.connection()
    adapted = (await connection.get_raw_connection()).dbapi_connection
    if adapted is None:
        raise RuntimeError("the session's connection is closed")
    if getattr(adapted, "_transaction", None) is None and adapted.isolation_level != "autocommit":
        await adapted._start_transaction()  # the adapter's own BEGIN (isolation, read-only, deferrable)
    driver: asyncpg.Connection = adapted.driver_connection
    return driver


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(migrations: Path, connection: Connection, settings: Settings | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = connection
    cfg.attributes["settings"] = settings  # data migrations that seal stored text need the keys
    return cfg


def migration_settings() -> Settings:
    """Inside a migration: the settings the service runs with (the environment's when none were given)."""
    settings = context.config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else Settings()


async def migrate(engine: AsyncEngine, migrations: Path, settings: Settings | None = None) -> None:
    """Bring the service's database to the head of its own Alembic history."""

    def _upgrade(connection: Connection) -> None:
        # One migrator at a time when several replicas start together.
        connection.execute(text("SELECT pg_advisory_xact_lock(7310001)"))
        command.upgrade(_alembic_config(migrations, connection, settings), "head")

    # Alembic's `op`/`context` are process-wide: one migration at a time in this process.
    await asyncio.to_thread(_MIGRATION_LOCK.acquire)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    finally:
        _MIGRATION_LOCK.release()


def table_of(model: type[Any]) -> Table:
    """The Core table of a SQLModel class, typed: for Core statements (bulk inserts, upserts, `.c` columns).

    One column style across the services: `col(Model.field)` in ORM queries of a model, and
    `table_of(Model).c.field` where a statement works on the table itself.
    """
    table = getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


def model_metadata(models: ModuleType, *shared_tables: Table, unmodelled: Iterable[str] = ()) -> MetaData:
    """What a service's migrations must produce: the tables its `models` module declares, plus the
    shared tables it carries (the outbox, idempotency keys), copied into one MetaData (the shared tables
    live on their own MetaData, which a test may extend with tables of its own).
    `unmodelled`: tables the service reaches by plain SQL only (no model to compare them with)."""
    target = MetaData(info={"unmodelled": frozenset(unmodelled)})
    for obj in vars(models).values():
        table = getattr(obj, "__table__", None)
        if isinstance(obj, type) and obj.__module__ == models.__name__ and isinstance(table, Table):
            table.to_metadata(target)
    for table in shared_tables:  # named one by one: a shared MetaData may hold more (a test's tables)
        table.to_metadata(target)
    return target


def _same_type(context: object, inspected: Column[Any], metadata: Column[Any], inspected_type: Any,
               metadata_type: Any) -> bool | None:
    """A model's `str` (SQLModel's AutoString: a String without a length) is the migrations' TEXT:
    PostgreSQL stores and compares both the same, so that pair is not a difference. Else Alembic decides."""
    declared = metadata_type.impl if isinstance(metadata_type, TypeDecorator) else metadata_type
    if isinstance(inspected_type, TEXT) and isinstance(declared, String) and declared.length is None:
        return False
    return None


def compare_options(metadata: MetaData) -> dict[str, Any]:
    """How a migrated database is compared with its models (env.py, tests/shared/test_migrations_match_models.py).

    Compared: tables, columns, types, nullability; indexes, unique constraints and foreign keys that a
    model declares. Not compared, because Alembic cannot compare them meaningfully here:
    - server defaults: Alembic compares their rendered SQL, which differs between a model's
      `sa.func.now()` and the database's `now()` without meaning anything;
    - check constraints, triggers, functions, sequences: Alembic does not reflect them;
    - indexes, unique constraints and foreign keys that exist only in the database: the migrations
      are their source (expression, partial and GIN indexes cannot be declared on a SQLModel field);
      a model that declares one the database lacks is still a difference;
    - the tables in `metadata.info["unmodelled"]` (reached by plain SQL, declared by no model).
    """
    unmodelled = metadata.info.get("unmodelled", frozenset())

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if not (reflected and compare_to is None):
            return True
        if type_ == "table":
            return name not in unmodelled
        return type_ not in {"index", "unique_constraint", "foreign_key_constraint"}

    return {
        "compare_type": _same_type,
        "compare_server_default": False,
        "include_object": include_object,
    }


def run_alembic_env(target_metadata: MetaData | None = None) -> None:
    """The body of every service's migrations/env.py: run on the connection handed in."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `mkr migrate` (they need a connection)")
    context.configure(
        connection=connection, target_metadata=target_metadata, transaction_per_migration=False,
        **(compare_options(target_metadata) if target_metadata is not None else {}),
    )
    with context.begin_transaction():
        context.run_migrations()


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

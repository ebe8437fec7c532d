"""Configuration of every MKR process, read from `MKR_*` environment variables."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared import profiles

MIN_INDEX_KEY_BYTES = 32  # production refuses a shorter MKR_INDEX_KEY


class Settings(BaseSettings):
    """One settings object for all services; each reads the parts it needs."""

    # An empty variable means "not set" (compose passes empty values through).
    model_config = SettingsConfigDict(env_prefix="MKR_", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "test", "production"] = "development"
    state_dir: Path = Path(".mkr")
    log_level: str = "INFO"

    # A PostgreSQL *server*; each service uses its own database on it, named
    # `<database_prefix><service>`. Unset: the embedded server under state_dir.
    database_url: str | None = None
    database_prefix: str = "mkr_"
    db_pool_size: int = Field(default=8, ge=1, le=200)
    db_max_overflow: int = Field(default=8, ge=0, le=200)
    # The key store (issue #17): a PostgreSQL database of its own holding intake's wrapped per-case data
    # keys and the erasure tombstones, outside every data database and its backups (`mkr backup --keys`
    # dumps it apart). A full URL with its database name; unset: `<database_prefix>keys` on the server
    # of MKR_DATABASE_URL (or the embedded one).
    keystore_url: str | None = None
    # The most pooled connections one service process group holds on the server, all its workers together
    # (MKR_WORKERS): each worker's pool and overflow are this divided by the workers, in the proportion of
    # db_pool_size to db_max_overflow (shared.db.pool_limits). Unset: db_pool_size + db_max_overflow (16).
    # Not counted in it: each worker's leader-election connection and the leader's LISTEN connections.
    db_connections: int | None = Field(default=None, ge=2, le=2000)

    # Worker processes per service behind one port (`mkr serve`, uvicorn's supervisor). Unset: `mkr serve`
    # runs os.cpu_count() and tells its workers how many they are; a process started otherwise (tests)
    # counts as one. 1 keeps a single process.
    workers: int | None = Field(default=None, ge=1, le=64)
    # Leader election (shared/leader.py): one process per service database runs the outbox relay, the
    # consumers and the background jobs, chosen by a session-level advisory lock. Unset: on when
    # workers > 1 (`mkr serve` with several workers); set it true for several single-worker replicas too.
    leader_election: bool | None = None
    # How often a follower tries to take the lead, and the leader checks its lock connection is alive.
    leader_retry_seconds: float = Field(default=2.0, gt=0, le=60)

    # Retention (issue #17): a case closed longer than this many years is anonymised by intake's
    # once-only job (data key destroyed, identity and free text gone, coded facts kept); 0 = never.
    retention_years_after_closure: int = Field(default=5, ge=0, le=100)
    # How often intake looks for cases past retention.
    retention_scan_seconds: float = Field(default=3600, gt=0)

    # Pruning (issue #17, shared/pruning.py): published outbox rows are kept this long (never less than
    # outbox_replay_seconds, which replays them to a broker that lost events); consumed-event ids as long
    # as the broker keeps events (a redelivery is possible only inside its retention) plus a day;
    # idempotency keys this long. Each table is pruned in batches of prune_batch, every prune_seconds.
    outbox_keep_hours: float = Field(default=24, ge=0)
    broker_retention_hours: float = Field(default=168, gt=0)
    idempotency_keep_hours: float = Field(default=24, ge=1)
    prune_batch: int = Field(default=1000, ge=1, le=100_000)
    prune_seconds: float = Field(default=600, gt=0)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Where `mkr run` starts the embedded broker when MKR_KAFKA_BOOTSTRAP is not set.
    embedded_broker_port: int = Field(default=9092, ge=1, le=65535)
    # On for Apache Kafka; the embedded Tansu broker lacks the idempotent producer.
    kafka_enable_idempotence: bool = True
    kafka_topic_prefix: str = ""
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_request_timeout_ms: int = Field(default=5000, ge=500)
    # How long the broker may hold a consumer's fetch when there is nothing new. Apache Kafka answers as
    # soon as a record arrives, so this only sets the idle polling rate; Tansu often holds the fetch for
    # the whole wait even when records arrive meanwhile, so it is also the delivery latency there.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1, le=10000)
    # A consumer without partitions, or behind without fetching anything, this long is recreated (watchdog).
    kafka_consumer_stall_seconds: float = Field(default=15.0, gt=0, le=600)
    # /readyz answers 503 once a consumer has had no assignment, or the relay failed every attempt, this long.
    ready_stall_seconds: float = Field(default=30.0, gt=0, le=3600)
    # How every Kafka client authenticates and encrypts (shared/kafka.py): PLAINTEXT (the embedded broker),
    # SASL_PLAINTEXT, SASL_SSL or SSL; the SASL mechanism, user and password for the SASL protocols.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None  # never shown in a repr or a log
    # The CA bundle (PEM file) that signs the broker's certificate, for SSL/SASL_SSL; unset: the system's CAs.
    kafka_ssl_cafile: Path | None = None

    jwt_public_key: str | None = None  # PEM text, or a path to a PEM file
    jwt_jwks_url: str | None = None
    jwt_issuer: str = "mkr-local"
    jwt_audience: str = "mkr"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # A token living longer than this (exp - iat, seconds) is refused (401), however it was signed.
    jwt_max_lifetime_seconds: int = Field(default=86400, ge=60)

    host: str = "127.0.0.1"
    # The port of each process, from MKR_<NAME>_PORT (MKR_INTAKE_PORT, MKR_CONSOLE_PORT, ...); a process not
    # named here listens on the default port of its entry in the service registry (mkr/registry.py).
    ports: dict[str, int] = Field(default_factory=dict)
    # How long `mkr serve` keeps an idle kept-alive connection open (uvicorn's timeout_keep_alive; its own
    # default is 5 s). It must outlast every client's idle pool time, or a client reusing a connection just
    # as the server closes it gets a connection error (httpx keeps idle connections 5 s, aiohttp 15 s,
    # ingress-nginx's upstream pool 60 s): the client then always retires an idle connection first.
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)

    # Application-level encryption of personal data (base64 of 32 bytes) and the
    # key of the non-reversible search index. Development falls back to keys kept
    # under state_dir; a production service that uses one refuses to start without it.
    encryption_key: str | None = None
    index_key: str | None = None
    # Changing MKR_INDEX_KEY online (`mkr reindex`, deploy/README.md): the key the blind index was built
    # under. Searches and the duplicate check read under both keys; writes use MKR_INDEX_KEY only.
    index_key_previous: str | None = None

    # The web console (services/console): where it reaches each service, from MKR_CONSOLE_<NAME>_URL
    # (default 127.0.0.1 and the service's port), the key of its session cookies (base64 of 32 bytes;
    # development falls back to one under state_dir), the public URL it is reached at (for the OpenID
    # Connect redirect; default: the request's).
    console_urls: dict[str, str] = Field(default_factory=dict)
    console_session_key: str | None = None
    console_public_url: str | None = None
    # The municipality's OpenID Connect provider (authorization code + PKCE); unset: no OIDC sign-in.
    console_oidc_issuer: str | None = None
    console_oidc_client_id: str | None = None
    console_oidc_client_secret: str | None = None

    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # How far back the relay re-sends when the broker comes back without events it had acknowledged.
    outbox_replay_seconds: int = Field(default=3600, ge=0)
    # Read-your-writes (shared/projection.py): how long a write about a case this service's projection does
    # not know yet waits for intake's event before answering 409 with Retry-After; 0 = answer at once.
    projection_wait_seconds: float = Field(default=2.0, ge=0, le=30)
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    # A request body above this is refused with 413 before authentication and before parsing.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    # Reports for the auditor: a count from 1 to this - 1 is suppressed, CSV rows are k-anonymous for k = this.
    reports_min_cell: int = Field(default=5, ge=2, le=1000)
    # The country profile (shared/profiles/<name>.toml): languages, timezone, case prefixes, default risk
    # screen and routing rules, names of member kinds and orders. An unknown one fails at start.
    profile: str = "albania"

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str) -> str:
        profiles.load(value)  # raises ProfileError (a ValueError) naming the profile and the choices
        return value

    @property
    def country(self) -> profiles.Profile:
        return profiles.load(self.profile)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            missing = [
                name
                for name, value in (
                    ("MKR_DATABASE_URL", self.database_url),
                    # MKR_ENCRYPTION_KEY and MKR_INDEX_KEY: required by the services that use them, when
                    # they build their cipher or index (shared/crypto.py), so the others never hold them.
                )
                if not value
            ]
            if not (self.jwt_public_key or self.jwt_jwks_url):
                missing.append("MKR_JWT_PUBLIC_KEY or MKR_JWT_JWKS_URL")
            if missing:
                raise ValueError("production needs " + ", ".join(missing))
            # A short index key makes the keyed name trigrams guessable offline (MKR_INDEX_KEY, bytes). A
            # missing one is refused by the service that uses it (SearchIndexer), not by every service.
            if self.index_key is not None and len(self.index_key.encode()) < MIN_INDEX_KEY_BYTES:
                raise ValueError(f"production needs an MKR_INDEX_KEY of at least {MIN_INDEX_KEY_BYTES} bytes")
            previous = self.index_key_previous
            if previous and len(previous.encode()) < MIN_INDEX_KEY_BYTES:
                raise ValueError(f"production needs an MKR_INDEX_KEY_PREVIOUS of at least {MIN_INDEX_KEY_BYTES} bytes")
        return self

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"MKR_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "MKR_KAFKA_SASL_USERNAME and MKR_KAFKA_SASL_PASSWORD"
            )
        if self.kafka_ssl_cafile is not None and not self.kafka_ssl_cafile.is_file():
            raise ValueError("MKR_KAFKA_SSL_CAFILE is not a readable file")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _PerProcessSource(settings_cls), env_settings, dotenv_settings, file_secret_settings

    @property
    def worker_count(self) -> int:
        """The workers this process is one of (1 unless `mkr serve` or MKR_WORKERS said otherwise)."""
        return self.workers or 1

    @property
    def elects_leader(self) -> bool:
        return self.worker_count > 1 if self.leader_election is None else self.leader_election

    def port_of(self, name: str, default: int) -> int:
        """The port of the process `name`: MKR_<NAME>_PORT, else the default its caller knows."""
        return int(self.ports.get(name, default))

    def topic(self, name: str) -> str:
        """The physical topic for a contract topic name such as `mkr.intake.events`."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def private_key_path(self) -> Path:
        return self.state_dir / "jwt-private.pem"

    @property
    def public_key_path(self) -> Path:
        return self.state_dir / "jwt-public.pem"


# MKR_<NAME>_PORT and MKR_CONSOLE_<NAME>_URL, for any one-word process name the registry may hold.
_PORT_RE = re.compile(r"MKR_([A-Z]+)_PORT")
_CONSOLE_URL_RE = re.compile(r"MKR_CONSOLE_([A-Z]+)_URL")


class _PerProcessSource(EnvSettingsSource):
    """Gathers the per-process variables into `ports` and `console_urls`; the names are not fixed here."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = {f"MKR_{name.upper()}" for name in self.settings_cls.model_fields}
        ports: dict[str, str] = {}
        urls: dict[str, str] = {}
        for key, value in os.environ.items():
            if key in known or not value:
                continue
            if match := _PORT_RE.fullmatch(key):
                ports[match.group(1).lower()] = value
            elif match := _CONSOLE_URL_RE.fullmatch(key):
                urls[match.group(1).lower()] = value.rstrip("/")
        found: dict[str, Any] = {}
        if ports:
            found["ports"] = ports
        if urls:
            found["console_urls"] = urls
        return found


@lru_cache
def get_settings() -> Settings:
    return Settings()

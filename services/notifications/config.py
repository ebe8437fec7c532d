"""Settings of the notifications service (`MKR_NOTIFICATIONS_*`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationsConfig(BaseSettings):
    """Delivery, scheduling and SMTP knobs; tests shorten the back-off and the scan interval."""

    model_config = SettingsConfigDict(env_prefix="MKR_NOTIFICATIONS_", extra="ignore")

    # Time-based alerts (protection orders about to expire).
    scan_seconds: float = Field(default=30.0, gt=0, le=3600)
    protection_order_warning_days: int = Field(default=14, ge=1, le=365)
    # A transfer between municipalities still pending this many hours alerts both coordinators, once.
    transfer_pending_hours: float = Field(default=72.0, gt=0, le=24 * 365)

    # Webhook and e-mail deliveries.
    delivery_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    delivery_batch_size: int = Field(default=20, ge=1, le=500)
    delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    delivery_backoff_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    delivery_backoff_cap_seconds: float = Field(default=3600.0, gt=0, le=86400)
    # A claimed delivery is retried by any replica once this lease passes (a crash mid-send).
    delivery_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    # The total deadline of one webhook attempt: connect, send and read together (a trickling receiver too).
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # At most this many bytes of a receiver's answer are read; the rest is dropped with the connection.
    webhook_max_response_bytes: int = Field(default=65536, ge=0, le=1_048_576)
    # Attempts in flight per process: webhooks and e-mail have their own slots, so hanging receivers never
    # hold up the e-mail, and one subscription holds at most `webhook_per_subscription` webhook slots.
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    webhook_per_subscription: int = Field(default=2, ge=1, le=100)
    email_concurrency: int = Field(default=8, ge=1, le=200)
    # Delivered and dead-lettered deliveries (webhook and e-mail attempts) are pruned after this many days.
    delivery_keep_days: float = Field(default=30.0, gt=0, le=3650)
    # Webhook subscriptions one owner (an institution, or a municipality's coordinator) may hold.
    max_subscriptions: int = Field(default=20, ge=1, le=10000)

    # E-mail: disabled unless a host is set.
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "mkr-noreply@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Server-Sent Events.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    # Open streams per token subject (`sub`) in one process; one more is 429.
    max_streams: int = Field(default=5, ge=1, le=1000)

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> NotificationsConfig:
        # A lease shorter than an attempt's deadline would let another replica send the same row meanwhile.
        if self.delivery_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("delivery_lease_seconds must exceed webhook_timeout_seconds")
        return self

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host)

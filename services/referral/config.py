"""Settings of the referral service only (`MKR_REFERRAL_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReferralConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MKR_REFERRAL_", extra="ignore")

    # Acknowledgement deadlines by urgency (DOMAIN.md: 1 h / 24 h / 72 h).
    ack_emergency_seconds: float = Field(default=3600, gt=0)
    ack_high_seconds: float = Field(default=86400, gt=0)
    ack_normal_seconds: float = Field(default=259200, gt=0)
    # How often the deadline scheduler looks for missed acknowledgements and overdue plan actions.
    scan_seconds: float = Field(default=30.0, gt=0, le=3600)
    # The dashboard lists protection orders expiring within this many days.
    order_expiry_days: int = Field(default=14, ge=1, le=365)

    def ack_seconds(self) -> dict[str, float]:
        return {
            "emergency": self.ack_emergency_seconds,
            "high": self.ack_high_seconds,
            "normal": self.ack_normal_seconds,
        }

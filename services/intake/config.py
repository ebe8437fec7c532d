"""Settings of the intake service only (`MKR_INTAKE_*`)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.profiles import Profile


class IntakeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MKR_INTAKE_", extra="ignore")

    # Case-number prefix per municipality, e.g. MKR_INTAKE_CASE_PREFIXES='{"elbasan": "ELB"}', over the
    # country profile's (MKR_PROFILE); others use the first three letters of the slug, upper-case.
    case_prefixes: dict[str, str] = Field(default_factory=dict)
    # Name similarity (0..1, overlap of keyed trigrams) from which an earlier case is a possible duplicate.
    duplicate_threshold: float = Field(default=0.45, gt=0, le=1)
    # Share of the query's trigrams a name must hold to match `q` in the case search.
    search_threshold: float = Field(default=0.5, gt=0, le=1)
    max_duplicates: int = Field(default=5, ge=1, le=50)
    # How often the key census behind the duplicate search is recounted (only municipalities with new
    # survivors are). A stale census never hides a duplicate; it only makes the search probe wider.
    key_census_seconds: float = Field(default=300, gt=0)
    # A key in the key store with no case (a report whose data write failed after its key was stored) is
    # pruned once this old, and only while younger than a day (services/intake/keystore.py).
    orphan_key_grace_seconds: float = Field(default=3600, ge=0)
    orphan_key_scan_seconds: float = Field(default=600, gt=0)
    # Where intake reaches the other services' public API to gather the survivor's file
    # (GET /v1/cases/{id}/export); unset: http://127.0.0.1:<the service's port>.
    referral_url: str | None = None
    shelter_url: str | None = None
    notifications_url: str | None = None
    # The local calendar for the case-number year and the age at the report date; empty: the country
    # profile's (MKR_PROFILE; Albania: Europe/Tirane).
    timezone: str = ""
    # The slugs a case may be transferred to (CONTRACT §10), e.g. MKR_INTAKE_MUNICIPALITIES='["elbasan", "korce"]';
    # empty: the country profile's (MKR_PROFILE; Albania: its 61 municipalities).
    municipalities: list[str] = Field(default_factory=list)

    @field_validator("case_prefixes")
    @classmethod
    def _prefixes_are_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for municipality, prefix in value.items():
            if not re.fullmatch(r"[A-Z0-9]{1,10}", prefix):
                raise ValueError(f"prefix of {municipality} must be 1-10 upper-case letters or digits")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value:
            ZoneInfo(value)  # raises for an unknown zone
        return value

    def for_profile(self, profile: Profile) -> IntakeConfig:
        """These settings with what they leave open taken from the country profile."""
        return self.model_copy(
            update={
                "timezone": self.timezone or profile.timezone,
                "case_prefixes": {**profile.case_prefixes, **self.case_prefixes},
                "municipalities": self.municipalities or list(profile.municipalities),
            }
        )

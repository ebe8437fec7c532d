"""Settings of the shelter service only (`MKR_SHELTER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ShelterConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MKR_SHELTER_", extra="ignore")

    # How often the rent-bonus scheduler looks for due payments and ending bonuses.
    scan_seconds: float = Field(default=60.0, gt=0, le=3600)
    # `rent_bonus.ending` is raised this many days before the last paid month starts.
    ending_notice_days: int = Field(default=30, ge=0, le=365)
    # False: a placement or application for a case the intake projection has not seen yet is
    # accepted (case_number filled in when `case.reported` arrives), so a broker outage never
    # blocks an emergency placement. True: such a case answers 404 "unknown case".
    require_known_case: bool = False

"""Country profiles (CONTRACT §10): `MKR_PROFILE` = `albania` (default), `kosovo` or `montenegro` chooses a
data file here: languages, timezone, case-number prefixes, the default risk screen and routing rules, the
names of member kinds and orders. Texts of each language (alerts) are in `texts/<language>.toml`.

A profile may `extends` another: the keys it does not set are the other's. Files are read once, checked
here (an unknown profile, language or zone fails at start with a message naming it) and never downloaded.
The services check the parts they own (a routing rule, a risk question) when they take them.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

HERE = Path(__file__).parent
PROFILES = ("albania", "kosovo", "montenegro")
LANGUAGES = ("sq", "en", "sr")
Language = Literal["sq", "en", "sr"]


class ProfileError(ValueError):
    """A profile that does not exist or does not hold together; the message says which and why."""


class RiskScreenData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    questions: list[dict[str, Any]] = Field(min_length=1)
    high_yes_count: int = Field(ge=1)
    medium_yes_count: int = Field(ge=1)


class Texts(BaseModel):
    """One language's texts: alert titles and bodies by alert type, and words for coded values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unknown_title: str
    vocabulary: dict[str, str] = Field(default_factory=dict)
    alerts: dict[str, dict[Literal["title", "body"], str]]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    extends: str | None = None
    country: str
    languages: list[Language] = Field(min_length=1)  # the first is the default
    timezone: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    # The country's municipalities (slugs): where a case may be transferred (CONTRACT §10).
    municipalities: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,62}$")]] = Field(min_length=1)
    case_prefixes: dict[str, str] = Field(default_factory=dict)
    risk_screen: RiskScreenData
    routing_rules: list[dict[str, Any]] = Field(min_length=1)
    member_kinds: dict[Language, dict[str, str]] = Field(default_factory=dict)
    orders: dict[Language, dict[str, str]] = Field(default_factory=dict)
    texts: dict[Language, Texts] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @property
    def language(self) -> Language:
        """The default language of texts."""
        return self.languages[0]

    def words(self, language: Language) -> dict[str, str]:
        """Coded values in `language`: the language's vocabulary, then the profile's orders and member kinds."""
        texts = self.texts[language]
        return {**texts.vocabulary, **self.member_kinds.get(language, {}), **self.orders.get(language, {})}


def _read(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name not in PROFILES:
        raise ProfileError(f"MKR_PROFILE={name!r} is not a profile: choose one of {', '.join(PROFILES)}")
    if name in seen:
        raise ProfileError(f"profile {name!r} extends itself")
    data = tomllib.loads((HERE / f"{name}.toml").read_text(encoding="utf-8"))
    base = data.get("extends")
    if base is None:
        return data
    return {**_read(str(base), (*seen, name)), **data}


@functools.cache
def load(name: str) -> Profile:
    """The profile `name` with its languages' texts; ProfileError if there is none or it does not hold."""
    data = _read(name)
    try:
        languages = [str(language) for language in data.get("languages", [])]
        unknown = [language for language in languages if language not in LANGUAGES]
        if unknown:
            raise ProfileError(f"profile {name!r}: no texts for language(s) {', '.join(unknown)}")
        data["texts"] = {
            language: tomllib.loads((HERE / "texts" / f"{language}.toml").read_text(encoding="utf-8"))
            for language in languages
        }
        return Profile.model_validate(data)
    except (ValidationError, ValueError, tomllib.TOMLDecodeError) as error:
        if isinstance(error, ProfileError):
            raise
        raise ProfileError(f"profile {name!r} does not hold: {error}") from None


__all__ = ["LANGUAGES", "PROFILES", "Language", "Profile", "ProfileError", "Texts", "load"]

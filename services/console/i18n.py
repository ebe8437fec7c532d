"""Texts from the message catalogues (locale/<lang>/LC_MESSAGES/messages.po, read at start, no build step),
language choice, and dates in the country profile's timezone (MKR_PROFILE; Albania: Europe/Tirane)."""

from __future__ import annotations

from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

from shared import profiles

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("sq", "en", "sr")
# The catalogue's language as Babel and HTML name it: Serbian in Latin script (the profile's other language).
BABEL_LOCALES = {"sq": "sq", "en": "en", "sr": "sr_Latn"}
HTML_LANGS = {"sq": "sq", "en": "en", "sr": "sr-Latn"}
DEFAULT_LANGUAGE = "sq"


class _Country:
    """What the running profile decides for the console: its zone and default language (create_app sets it)."""

    zone: ZoneInfo = ZoneInfo(profiles.load("albania").timezone)
    language: str = DEFAULT_LANGUAGE


def use_profile(profile: profiles.Profile) -> None:
    _Country.zone = ZoneInfo(profile.timezone)
    _Country.language = profile.language if profile.language in LANGUAGES else DEFAULT_LANGUAGE


def zone() -> ZoneInfo:
    """The local calendar and clock of the pages (the country profile's timezone)."""
    return _Country.zone


@cache
def catalogue(language: str) -> dict[str, str]:
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=BABEL_LOCALES.get(language, language))
    texts: dict[str, str] = {}
    for message in catalog:
        if message.id and isinstance(message.id, str) and isinstance(message.string, str) and message.string:
            texts[message.id] = message.string
    return texts


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The switch's cookie first, then the browser's Accept-Language (by q), else Albanian."""
    if cookie in LANGUAGES:
        return str(cookie)
    best: tuple[float, str] | None = None
    for index, part in enumerate((accept_language or "")[:500].split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if quality <= 0:
            continue
        candidate = (quality - index * 1e-6, primary)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else _Country.language


class Translator:
    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else _Country.language
        self._texts = catalogue(self.language)
        self.locale = BABEL_LOCALES[self.language]
        self.html_lang = HTML_LANGS[self.language]

    def gettext(self, message: str, **values: Any) -> str:
        text = self._texts.get(message, message)
        return text.format(**values) if values else text

    def datetime(self, value: str | datetime | None) -> str:
        moment = _parse(value)
        if moment is None:
            return ""
        if isinstance(moment, datetime):
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo("UTC"))
            return format_datetime(moment, "dd.MM.yyyy HH:mm", tzinfo=zone(), locale=self.locale)
        return format_date(moment, "dd.MM.yyyy", locale=self.locale)

    def date(self, value: str | date | None) -> str:
        moment = _parse(value)
        if moment is None:
            return ""
        if isinstance(moment, datetime):
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo("UTC"))
            moment = moment.astimezone(zone()).date()
        return format_date(moment, "dd.MM.yyyy", locale=self.locale)

    def money(self, value: str | float | int | None) -> str:
        if value in (None, ""):
            return ""
        try:
            return format_decimal(float(value), format="#,##0.##", locale=self.locale) + " ALL"  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)

    def code(self, prefix: str, value: Any) -> str:
        """A coded value (risk level, status, kind…) in words: `<prefix>.<value>` from the catalogue."""
        if value in (None, ""):
            return ""
        key = f"{prefix}.{value}"
        text = self._texts.get(key)
        if text is None:
            text = catalogue("en").get(key, str(value).replace("_", " "))
        return text


def _parse(value: str | date | datetime | None) -> date | datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


LANG_NAMES = {"sq": "Shqip", "en": "English", "sr": "Srpski"}

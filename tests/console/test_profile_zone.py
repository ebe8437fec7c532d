"""The console's calendar follows the country profile (MKR_PROFILE): dates are shown in its timezone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.console import i18n
from shared import profiles


@pytest.fixture
def montenegro() -> Iterator[None]:
    i18n.use_profile(profiles.load("montenegro"))
    try:
        yield
    finally:
        i18n.use_profile(profiles.load("albania"))


def test_the_default_profile_shows_tirana_time_and_albanian() -> None:
    assert i18n.zone().key == "Europe/Tirane"
    assert i18n.choose_language(None, None) == "sq"
    # 23:30 UTC on 31 December is already New Year's Day in Tirana (UTC+1).
    assert i18n.Translator("en").date(datetime(2025, 12, 31, 23, 30, tzinfo=UTC)) == "01.01.2026"


def test_montenegro_shows_podgorica_time_and_serbian_by_default(montenegro: None) -> None:
    assert i18n.zone().key == "Europe/Podgorica"
    assert i18n.choose_language(None, None) == "sr"
    assert i18n.Translator("bogus").language == "sr"

"""The one time parser of the event contracts: every instant in an envelope or its data is read here.

An instant is an RFC 3339 / ISO 8601 text (or a datetime); one without a UTC offset is taken as UTC
(older producers sent some so), and text that is not an instant is refused (`ValueError`), so a
consumer never sees a naive or half-read time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer


def parse_instant(value: Any) -> datetime:
    """An aware datetime from a datetime or an ISO 8601 text; naive means UTC; anything else: ValueError."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError("an instant is an ISO 8601 text")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.isoformat()


# An instant in event data: parsed by parse_instant, written as `datetime.isoformat()` (the producers'
# format since the first release, `+00:00` for UTC).
Instant = Annotated[datetime, BeforeValidator(parse_instant), PlainSerializer(_iso, when_used="json")]
# The envelope's `time`: the same parser, pydantic's RFC 3339 form (`Z` for UTC) as before.
EnvelopeInstant = Annotated[datetime, BeforeValidator(parse_instant)]

__all__ = ["EnvelopeInstant", "Instant", "parse_instant"]

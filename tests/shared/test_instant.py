"""The one time parser of the event contracts (shared.contracts.parse_instant), for envelopes and data."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.contracts import events as contract
from shared.contracts import parse_instant
from shared.events import Envelope


def test_an_instant_is_aware_and_naive_means_utc() -> None:
    assert parse_instant("2026-11-21T09:00:00Z") == datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert parse_instant("2026-11-21T10:00:00+01:00") == datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert parse_instant("2026-11-21T09:00:00") == datetime(2026, 11, 21, 9, tzinfo=UTC)
    local = datetime(2026, 11, 21, 10, tzinfo=timezone(timedelta(hours=1)))
    assert parse_instant(local) is local
    for bad in ("yesterday", "", 1732179600, None):
        with pytest.raises(ValueError):
            parse_instant(bad)


def test_envelopes_and_event_data_read_instants_the_same_way() -> None:
    case_id = uuid.uuid4()
    closed = contract.CaseClosed(case_id=case_id, case_number="T-1", closed_at="2026-11-21T09:00:00")  # type: ignore[arg-type]
    assert closed.closed_at == datetime(2026, 11, 21, 9, tzinfo=UTC)
    # Written as producers always wrote data instants (isoformat, +00:00).
    assert closed.model_dump(mode="json")["closed_at"] == "2026-11-21T09:00:00+00:00"
    with pytest.raises(ValidationError):
        contract.CaseClosed(case_id=case_id, case_number="T-1", closed_at="not a time")  # type: ignore[arg-type]
    envelope = Envelope.model_validate_json(json.dumps({
        "id": str(uuid.uuid4()), "type": "case.closed", "source": "mkr/intake", "time": "2026-11-21T09:00:00",
        "subject": str(case_id), "municipality": "elbasan", "data": {},
    }))  # fmt: skip
    assert envelope.time == datetime(2026, 11, 21, 9, tzinfo=UTC)

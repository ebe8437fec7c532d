"""Every envelope the services produce is a strict CloudEvents 1.0 event (CONTRACT §9).

Read with the `cloudevents` SDK's strict JSON format (2.x `cloudevents.core.formats.json`, which validates
the required attributes, the spec version and the extension attribute names) exactly as the outbox holds
it — the bytes the relay sends — and written back by the SDK without losing an attribute or a fact.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.contracts import parse_instant
from shared.events import Envelope, make_event
from tests.referral.helpers import add_member
from tests.shelter.helpers import register
from tests.support import Stack, contract_report, new_municipality, wait_for

STRICT = JSONFormat()
ATTRIBUTES = {"specversion", "id", "type", "source", "time", "subject", "datacontenttype"}
EXTENSIONS = {"municipality", "schemaversion"}


def _read_without_loss(payload: str) -> CloudEvent:
    """The SDK's event of an outbox payload, checked attribute by attribute against the JSON."""
    produced = json.loads(payload)
    event = STRICT.read(None, payload.encode())
    assert isinstance(event, CloudEvent)
    attributes = event.get_attributes()
    assert set(produced) == {*ATTRIBUTES, *EXTENSIONS, "data"} | ({"traceparent"} & set(produced))
    assert set(attributes) == set(produced) - {"data"}, "an attribute was lost or added"
    assert event.get_specversion() == "1.0" and event.get_datacontenttype() == "application/json"
    for name in ("id", "type", "source", "subject", "municipality", "schemaversion"):
        assert attributes[name] == produced[name], name
    assert attributes["time"] == parse_instant(produced["time"])
    assert event.get_data() == produced["data"]
    # Written back by the SDK: the same event (the time in RFC 3339 either way).
    again = json.loads(STRICT.write(event))
    assert parse_instant(again.pop("time")) == parse_instant(produced.pop("time"))
    assert again == produced
    return event


async def _outbox(stack: Stack, service: str, municipality: str) -> list[str]:
    async with stack.apps[service].state.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT payload FROM outbox WHERE payload::jsonb ->> 'municipality' = :m ORDER BY id"),
            {"m": municipality},
        )
        return [row.payload for row in rows]


async def test_produced_envelopes_are_strict_cloudevents_read_without_loss(stack: Stack) -> None:
    m = new_municipality()
    await add_member(stack, m, "social_services")
    await register(stack, m)
    response = await stack.intake.post("/v1/cases", json=contract_report(m), headers=stack.auth("police", m))
    assert response.status_code == 201, response.text

    async def produced() -> dict[str, list[str]]:
        found = {service: await _outbox(stack, service, m) for service in ("intake", "referral", "shelter")}
        referral_types = {json.loads(p)["type"] for p in found["referral"]}
        return found if {"member.saved", "referral.created"} <= referral_types else {}

    found = await wait_for(produced, timeout=30, what="the intake, referral and shelter events of one case")
    types: set[str] = set()
    for payloads in found.values():
        for payload in payloads:
            types.add(_read_without_loss(payload).get_type())
    assert {"case.reported", "member.saved", "referral.created", "shelter.availability_changed"} <= types


def test_the_former_schema_version_is_read_for_one_release_and_written_as_schemaversion() -> None:
    old = {
        "id": str(uuid.uuid4()), "type": "case.reopened", "source": "mkr/intake", "time": "2026-11-21T09:00:00+01:00",
        "subject": "s", "municipality": "elbasan", "schema_version": 1, "data": {},
    }  # fmt: skip
    envelope = Envelope.model_validate_json(json.dumps(old))
    assert envelope.schemaversion == 1 and envelope.specversion == "1.0"
    written: dict[str, Any] = json.loads(envelope.model_dump_json())
    assert "schema_version" not in written and written["schemaversion"] == 1
    _read_without_loss(envelope.model_dump_json())
    # Why the rename: the strict format refuses an extension name with an underscore.
    with pytest.raises(CloudEventValidationError):
        STRICT.read(None, json.dumps({**old, "specversion": "1.0"}).encode())


def test_an_envelope_of_another_spec_version_is_not_an_envelope() -> None:
    event = make_event(type_="case.reopened", source="mkr/intake", subject="s", municipality="elbasan", data={})
    payload = {**json.loads(event.model_dump_json()), "specversion": "0.3"}
    with pytest.raises(ValueError):
        Envelope.model_validate_json(json.dumps(payload))

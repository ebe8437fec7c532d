"""Transfers between municipalities at intake (CONTRACT §10): who sees what before and after, bad input."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.intake.config import IntakeConfig
from shared import db
from shared.events import INTAKE_TOPIC
from shared.settings import Settings
from tests.support import Stack, contract_report, dump_database, new_municipality, read_envelopes, running_stack

CONSENT_AT = "2026-11-30T10:00:00+01:00"


@dataclass
class Places:
    stack: Stack
    sender: str
    receiver: str
    other: str


@pytest.fixture(scope="module")
async def places(settings: Settings) -> AsyncIterator[Places]:
    """An intake of its own that knows three fresh municipalities (MKR_INTAKE_MUNICIPALITIES)."""
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(
        update={
            "database_prefix": f"{settings.database_prefix}tr{run}_",
            "kafka_topic_prefix": f"{settings.kafka_topic_prefix}tr{run}.",
        }
    )
    sender, receiver, other = new_municipality(), new_municipality(), new_municipality()
    config = IntakeConfig(municipalities=[sender, receiver, other], case_prefixes={receiver: "KOR"})
    try:
        async with running_stack(own, ("intake",), options={"intake": {"config": config}}) as stack:
            yield Places(stack, sender, receiver, other)
    finally:
        await db.drop_database(own, "intake")


async def _case(places: Places) -> dict[str, Any]:
    police = places.stack.auth("police", places.sender, member_id="m-police")
    response = await places.stack.intake.post("/v1/cases", json=contract_report(places.sender), headers=police)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _request(places: Places, case_id: str, **overrides: Any) -> Any:
    body = {
        "to_municipality": places.receiver,
        "reason": "She moved to her sister's house",
        "consent_given_at": CONSENT_AT,
    }
    body.update(overrides)
    return await places.stack.intake.post(
        f"/v1/cases/{case_id}/transfers", json=body, headers=places.stack.auth("coordinator", places.sender)
    )


async def test_receiver_sees_coded_facts_only_until_she_accepts_then_the_sender_gets_404(places: Places) -> None:
    stack = places.stack
    case = await _case(places)
    requested = await _request(places, case["id"])
    assert requested.status_code == 201, requested.text
    transfer = requested.json()
    assert transfer["status"] == "pending" and transfer["from_municipality"] == places.sender
    assert transfer["case_number"] == case["case_number"]

    receiver = stack.auth("coordinator", places.receiver)
    incoming = await stack.intake.get("/v1/transfers", params={"direction": "incoming"}, headers=receiver)
    assert incoming.status_code == 200, incoming.text
    [shown] = [t for t in incoming.json()["items"] if t["id"] == transfer["id"]]
    assert shown["facts"]["risk_level"] == case["risk_level"]
    assert shown["facts"]["sex"] == "female" and shown["facts"]["children_count"] == 1
    text = incoming.text
    for identity in ("Ermira", "Hoxha", "1991-04-02", "+355690000000", "Rruga", "invented narrative", "sister"):
        assert identity not in text
    # Before accepting, the case itself is not hers.
    assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=receiver)).status_code == 404

    outgoing = await stack.intake.get(
        "/v1/transfers",
        params={"direction": "outgoing", "status": "pending"},
        headers=stack.auth("coordinator", places.sender),
    )
    [mine] = [t for t in outgoing.json()["items"] if t["id"] == transfer["id"]]
    assert mine["reason"] == "She moved to her sister's house" and mine["facts"] is None

    accepted = await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=receiver)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert accepted.json()["reason"] == "She moved to her sister's house"  # hers to read now
    new_number = accepted.json()["new_case_number"]
    assert new_number.startswith("KOR-")

    read = await stack.intake.get(f"/v1/cases/{case['id']}", headers=receiver)
    assert read.status_code == 200, read.text
    assert read.json()["municipality"] == places.receiver
    assert read.json()["case_number"] == new_number
    assert read.json()["previous_case_numbers"] == [case["case_number"]]
    assert read.json()["survivor"]["first_name"] == "Ermira"
    # The receiving coordinator finds her by name (the search index was re-keyed for her municipality).
    search = await stack.intake.get("/v1/cases", params={"q": "Ermira Hoxha"}, headers=receiver)
    assert case["id"] in [c["id"] for c in search.json()["items"]]
    by_old_number = await stack.intake.get("/v1/cases", params={"q": case["case_number"]}, headers=receiver)
    assert [c["id"] for c in by_old_number.json()["items"]] == [case["id"]]

    # The sender and its institutions: 404 from now on; the sender's search no longer finds her.
    sender = stack.auth("coordinator", places.sender)
    assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=sender)).status_code == 404
    police = stack.auth("police", places.sender, member_id="m-police")
    assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=police)).status_code == 404
    search = await stack.intake.get("/v1/cases", params={"q": "Ermira Hoxha"}, headers=sender)
    assert case["id"] not in [c["id"] for c in search.json()["items"]]
    assert (await _request(places, case["id"])).status_code == 404

    trail = await stack.intake.get("/v1/audit", params={"case_id": case["id"]}, headers=receiver)
    actions = [e["action"] for e in trail.json()["items"]]
    assert "case.transfer_requested" in actions and "case.transferred" in actions
    assert "case.access_denied" in actions

    events = await read_envelopes(stack.settings, INTAKE_TOPIC, want=1, timeout=10)
    moved = [e for e in events if e.type == "case.transferred" and e.subject == case["id"]]
    assert moved and moved[0].municipality == places.receiver
    assert moved[0].data["previous_case_number"] == case["case_number"]
    assert "reason" not in moved[0].data


async def test_decline_keeps_the_case_with_the_sender_and_tells_her_why(places: Places) -> None:
    stack = places.stack
    case = await _case(places)
    transfer = (await _request(places, case["id"])).json()
    receiver = stack.auth("coordinator", places.receiver)
    assert (
        await stack.intake.post(f"/v1/transfers/{transfer['id']}/decline", json={}, headers=receiver)
    ).status_code == 422
    declined = await stack.intake.post(
        f"/v1/transfers/{transfer['id']}/decline", json={"reason": "No shelter capacity this month"}, headers=receiver
    )
    assert declined.status_code == 200, declined.text
    assert declined.json()["status"] == "declined"
    sender = stack.auth("coordinator", places.sender)
    read = await stack.intake.get(f"/v1/cases/{case['id']}", headers=sender)
    assert read.status_code == 200 and read.json()["case_number"] == case["case_number"]
    outgoing = await stack.intake.get(
        "/v1/transfers", params={"direction": "outgoing", "status": "declined"}, headers=sender
    )
    [mine] = [t for t in outgoing.json()["items"] if t["id"] == transfer["id"]]
    assert mine["decline_reason"] == "No shelter capacity this month"
    # Decided once: a second decision is 409; a new request may follow.
    assert (await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=receiver)).status_code == 409
    assert (await _request(places, case["id"])).status_code == 201
    # Reasons are sealed at rest.
    dump = await dump_database(stack, "intake")
    assert "No shelter capacity" not in dump and "sister's house" not in dump


async def test_bad_transfers_are_4xx_and_change_nothing(places: Places) -> None:
    stack = places.stack
    case = await _case(places)
    sender = stack.auth("coordinator", places.sender)
    url = f"/v1/cases/{case['id']}/transfers"
    without_consent = {"to_municipality": places.receiver, "reason": "moved"}
    assert (await stack.intake.post(url, json=without_consent, headers=sender)).status_code == 422
    unknown = await _request(places, case["id"], to_municipality="atlantis")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "to_municipality"]
    assert (await _request(places, case["id"], to_municipality="Not A Slug")).status_code == 422
    assert (await _request(places, case["id"], consent_given_at="2026-11-30T10:00:00")).status_code == 422
    assert (await _request(places, case["id"], consent_given_at="2999-01-01T00:00:00+00:00")).status_code == 422
    assert (await _request(places, case["id"], to_municipality=places.sender)).status_code == 409
    assert (await _request(places, case["id"], reason="")).status_code == 422
    # Only the coordinator, only of the case's municipality.
    police = stack.auth("police", places.sender, member_id="m-police")
    body = {"to_municipality": places.receiver, "reason": "moved", "consent_given_at": CONSENT_AT}
    assert (await stack.intake.post(url, json=body, headers=police)).status_code == 403
    foreign = stack.auth("coordinator", places.other)
    assert (await stack.intake.post(url, json=body, headers=foreign)).status_code == 404
    assert (await stack.intake.get("/v1/transfers", headers=police)).status_code == 403
    assert (
        await stack.intake.get("/v1/transfers", params={"direction": "sideways"}, headers=sender)
    ).status_code == 422
    assert (await stack.intake.get("/v1/transfers", params={"cursor": "!!"}, headers=sender)).status_code == 422
    listed = await stack.intake.get("/v1/transfers", params={"direction": "outgoing"}, headers=sender)
    assert case["id"] not in [t["case_id"] for t in listed.json()["items"]]

    transfer = (await _request(places, case["id"])).json()
    assert (await _request(places, case["id"])).status_code == 409  # one pending at a time
    # The sender may not decide her own request; a third municipality does not see it at all.
    assert (await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=sender)).status_code == 403
    assert (await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=foreign)).status_code == 404
    assert (await stack.intake.post(f"/v1/transfers/{uuid.uuid4()}/accept", headers=sender)).status_code == 404
    assert (await stack.intake.post("/v1/transfers/not-a-uuid/accept", headers=sender)).status_code == 422
    assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=sender)).json()["municipality"] == places.sender
    # Closed meanwhile: not accepted (409) until the sender reopens it.
    closed = await stack.intake.post(f"/v1/cases/{case['id']}/close", json={"reason": "done"}, headers=sender)
    assert closed.status_code == 200, closed.text
    receiver = stack.auth("coordinator", places.receiver)
    assert (await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=receiver)).status_code == 409
    assert (await stack.intake.post(f"/v1/cases/{case['id']}/reopen", headers=sender)).status_code == 200
    assert (await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=receiver)).status_code == 200


async def test_transfer_list_pages_by_cursor_newest_first(places: Places) -> None:
    stack = places.stack
    # Of the third municipality, so other tests' transfers do not interleave.
    coordinator = stack.auth("coordinator", places.other)
    made = []
    for _ in range(3):
        created = await stack.intake.post("/v1/cases", json=contract_report(places.other), headers=coordinator)
        body = {"to_municipality": places.receiver, "reason": "moved", "consent_given_at": CONSENT_AT}
        url = f"/v1/cases/{created.json()['id']}/transfers"
        response = await stack.intake.post(url, json=body, headers=coordinator)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    first = await stack.intake.get("/v1/transfers", params={"direction": "outgoing", "limit": 2}, headers=coordinator)
    assert first.status_code == 200 and first.json()["next_cursor"]
    second = await stack.intake.get(
        "/v1/transfers",
        params={"direction": "outgoing", "limit": 2, "cursor": first.json()["next_cursor"]},
        headers=coordinator,
    )
    assert second.json()["next_cursor"] is None
    ids = [t["id"] for t in first.json()["items"] + second.json()["items"]]
    assert ids == list(reversed(made))


async def test_erasing_a_case_removes_its_transfer_reasons(places: Places) -> None:
    """A transfer's reasons can tell the survivor's circumstances: an erasure takes them with the rest."""
    stack = places.stack
    case = await _case(places)
    transfer = (await _request(places, case["id"], reason="Fled to her aunt in Pogradec")).json()
    receiver = stack.auth("coordinator", places.receiver)
    declined = await stack.intake.post(
        f"/v1/transfers/{transfer['id']}/decline", json={"reason": "Aunt's flat is known to him"}, headers=receiver
    )
    assert declined.status_code == 200, declined.text
    sender = stack.auth("coordinator", places.sender)
    erased = await stack.intake.post(
        f"/v1/cases/{case['id']}/erase", json={"reason": "Her lawful request"}, headers=sender
    )
    assert erased.status_code == 200, erased.text
    outgoing = await stack.intake.get("/v1/transfers", params={"direction": "outgoing"}, headers=sender)
    assert outgoing.status_code == 200, outgoing.text
    [mine] = [t for t in outgoing.json()["items"] if t["id"] == transfer["id"]]
    assert mine["reason"] is None and mine["decline_reason"] is None
    assert mine["case_number"] == case["case_number"]

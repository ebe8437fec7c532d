"""Reporting a case: validation, numbering, idempotency, age groups."""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.intake.conftest import report, reported
from tests.support import Stack, contract_report, new_municipality


async def test_full_report_is_created_open_with_a_case_number_and_low_risk(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(intake, municipality)
    year = datetime.now(UTC).year
    assert case["case_number"] == f"{municipality[:3].upper()}-{year}-00001"
    assert case["status"] == "open"
    assert case["risk_level"] == "low"
    assert case["possible_duplicates"] == []
    uuid.UUID(case["id"])


async def test_minimal_report_with_age_instead_of_birth_date_is_accepted(intake: Stack) -> None:
    municipality = new_municipality()
    body = {
        "municipality": municipality,
        "source": "hotline",
        "survivor": {"first_name": "Drita", "last_name": "Kola", "sex": "female", "age": 16},
    }
    response = await intake.intake.post("/v1/cases", json=body, headers=intake.auth("ngo", municipality))
    assert response.status_code == 201, response.text
    case = await intake.intake.get(
        f"/v1/cases/{response.json()['id']}", headers=intake.auth("coordinator", municipality)
    )
    assert case.json()["survivor"]["age_group"] == "12-17"


async def test_without_age_or_birth_date_the_age_group_is_unknown(intake: Stack) -> None:
    municipality = new_municipality()
    survivor = {"first_name": "Drita", "last_name": "Kola", "sex": "female"}
    case = await reported(intake, municipality, survivor=survivor)
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", municipality))).json()
    assert (body["survivor"]["age"], body["survivor"]["age_group"]) == (None, "unknown")


async def test_configured_prefix_is_used_for_case_numbers(intake: Stack) -> None:
    municipality = new_municipality()
    intake.apps["intake"].state.intake_config.case_prefixes[municipality] = "XYZ"
    case = await reported(intake, municipality)
    assert case["case_number"].startswith("XYZ-")


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = contract_report("PLACEHOLDER")
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


BAD_FIELDS: list[tuple[tuple[str, ...], Any, list[str | int]]] = [
    (("survivor", "sex"), "unknown", ["body", "survivor", "sex"]),
    (("survivor", "ethnicity"), "martian", ["body", "survivor", "ethnicity"]),
    (("survivor", "age"), 400, ["body", "survivor", "age"]),
    (("incident", "violence_types"), ["physical", "shouting"], ["body", "incident", "violence_types", 1]),
    (("incident", "perpetrator_relationship"), "neighbour", ["body", "incident", "perpetrator_relationship"]),
    (("needs",), ["shelter", "money"], ["body", "needs", 1]),
    (("consent", "share_with"), ["police", "journalists"], ["body", "consent", "share_with", 1]),
    (("source",), "rumour", ["body", "source"]),
    (("survivor", "nickname"), "x", ["body", "survivor", "nickname"]),
    (("risk_answers",), {"threats_to_kill": True, "bad_luck": True}, ["body", "risk_answers", "bad_luck"]),
    (("children",), [{"sex": "male", "age": 30}], ["body", "children", 0, "age"]),
    (("risk_answers",), {"threats_to_kill": "yes"}, ["body", "risk_answers", "threats_to_kill"]),
    (("survivor", "date_of_birth"), "2999-01-01", ["body", "survivor", "date_of_birth"]),
    (("incident", "occurred_at"), "2026-11-20T21:30:00", ["body", "incident", "occurred_at"]),
]


@pytest.mark.parametrize(("path", "value", "loc"), BAD_FIELDS, ids=[".".join(b[0]) for b in BAD_FIELDS])
async def test_each_bad_field_is_a_422_naming_it(
    intake: Stack, path: tuple[str, ...], value: Any, loc: list[str | int]
) -> None:
    municipality = new_municipality()
    body = _with(path, value)
    body["municipality"] = municipality
    response = await intake.intake.post("/v1/cases", json=body, headers=intake.auth("police", municipality))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert loc in [e["loc"] for e in response.json()["errors"]], response.json()["errors"]


async def test_age_and_birth_date_together_is_422(intake: Stack) -> None:
    municipality = new_municipality()
    body = contract_report(municipality)
    body["survivor"]["age"] = 30
    response = await intake.intake.post("/v1/cases", json=body, headers=intake.auth("police", municipality))
    assert response.status_code == 422


async def test_another_municipality_in_the_body_is_403(intake: Stack) -> None:
    response = await intake.intake.post(
        "/v1/cases", json=contract_report(new_municipality()), headers=intake.auth("police", new_municipality())
    )
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["shelter_staff", "admin", "auditor", "housing_officer"])
async def test_roles_that_do_not_report_get_403(intake: Stack, role: str) -> None:
    municipality = new_municipality()
    response = await report(intake, municipality, role=role, member_id=None)
    assert response.status_code == 403


async def test_reported_at_from_police_is_403(intake: Stack) -> None:
    municipality = new_municipality()
    response = await report(intake, municipality, reported_at="2025-03-01T10:00:00+01:00")
    assert response.status_code == 403


async def test_reported_at_in_the_future_is_422(intake: Stack) -> None:
    municipality = new_municipality()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = await report(intake, municipality, role="coordinator", member_id=None, reported_at=future)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "reported_at"]


async def test_coordinator_backdates_a_paper_record_into_its_year(intake: Stack) -> None:
    municipality = new_municipality()
    case = await reported(
        intake, municipality, role="coordinator", member_id=None, reported_at="2025-03-01T10:00:00+01:00"
    )
    assert case["case_number"] == f"{municipality[:3].upper()}-2025-00001"
    assert case["reported_at"].startswith("2025-03-01")


async def test_age_group_is_the_age_at_the_report_date(intake: Stack) -> None:
    municipality = new_municipality()
    survivor = contract_report(municipality)["survivor"] | {"date_of_birth": "2007-06-01"}
    # 17 on the (backdated) report date, 18+ today: the report date counts.
    case = await reported(
        intake,
        municipality,
        role="coordinator",
        member_id=None,
        survivor=survivor,
        reported_at="2025-05-31T10:00:00+00:00",
    )
    body = (await intake.intake.get(f"/v1/cases/{case['id']}", headers=intake.auth("coordinator", municipality))).json()
    assert body["survivor"]["age"] == 17
    assert body["survivor"]["age_group"] == "12-17"


async def test_fifty_concurrent_reports_get_fifty_gap_free_numbers(intake: Stack) -> None:
    municipality = new_municipality()
    responses = await asyncio.gather(*(report(intake, municipality) for _ in range(50)))
    assert [r.status_code for r in responses] == [201] * 50
    seqs = sorted(int(r.json()["case_number"].rsplit("-", 1)[1]) for r in responses)
    assert seqs == list(range(1, 51))


async def test_retry_with_same_key_and_body_returns_the_first_answer_and_creates_nothing(intake: Stack) -> None:
    municipality = new_municipality()
    headers = intake.auth("police", municipality, member_id="m-police") | {"Idempotency-Key": "k-1"}
    body = contract_report(municipality)
    first = await intake.intake.post("/v1/cases", json=body, headers=headers)
    again = await intake.intake.post("/v1/cases", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    listed = await intake.intake.get("/v1/cases", headers=intake.auth("coordinator", municipality))
    assert [c["id"] for c in listed.json()["items"]] == [first.json()["id"]]


async def test_a_keyed_report_stores_its_answer_in_the_numbering_statement_and_then_only_commits(
    intake: Stack,
) -> None:
    """Issue #16: the counter (and the audit chain's lock) are held for one statement and the commit, under
    an Idempotency-Key too: the answer is stored, numbered, by the statement that takes them."""
    from sqlalchemy import event as sa_event

    municipality = new_municipality()
    pool = intake.apps["intake"].state.runtime.engine.sync_engine.pool
    sent: list[tuple[int, str]] = []
    logged: dict[int, tuple[Any, Any]] = {}  # the drivers given a logger, and the logger (removed at the end)

    def log_statements(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:
            logger = functools.partial(lambda conn, query: sent.append((conn, query.query)), id(driver))
            logged[id(driver)] = (driver, logger)
            driver.add_query_logger(logger)

    def log_orm_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        driver = id(conn.connection.dbapi_connection.driver_connection)
        asyncio.get_running_loop().call_soon(sent.append, (driver, statement))

    # asyncpg's query logger sees what the driver runs itself (the report's statements, BEGIN, COMMIT), the
    # engine's event what SQLAlchemy runs (its prepared statements pass the logger by). The logger is called
    # soon (call_soon) after a statement completes, the event as one starts; its entry is queued with call_soon
    # too, so that one connection's statements, run one after the other, are listed in the order they ran.
    engine = intake.apps["intake"].state.runtime.engine.sync_engine
    sa_event.listen(pool, "checkout", log_statements)
    sa_event.listen(engine, "before_cursor_execute", log_orm_statement)
    try:
        headers = intake.auth("police", municipality, member_id="m-police") | {"Idempotency-Key": "k-last"}
        first = await intake.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
        await asyncio.sleep(0.05)  # the loggers' last calls
    finally:
        sa_event.remove(pool, "checkout", log_statements)
        sa_event.remove(engine, "before_cursor_execute", log_orm_statement)
        for driver, logger in logged.values():
            driver.remove_query_logger(logger)
    assert first.status_code == 201, first.text
    numbering = [(conn, i) for i, (conn, sql) in enumerate(sent) if sql.lstrip().startswith("WITH counter AS")]
    assert len(numbering) == 1
    conn, at = numbering[0]
    after = [sql.strip().rstrip(";") for c, sql in sent[at + 1 :] if c == conn]
    assert after[:1] == ["COMMIT"], after[:3]
    assert not any("idempotency_keys" in sql and sql.lstrip().startswith("UPDATE") for _, sql in sent)
    again = await intake.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert not again.json()["case_number"].startswith("pending:")


async def test_a_keyed_retry_of_a_report_with_possible_duplicates_returns_the_first_answer(intake: Stack) -> None:
    """The stored answer (JSON through jsonb) keeps the duplicates' numbers and scores as first answered."""
    municipality = new_municipality()
    coordinator = intake.auth("coordinator", municipality)
    alike = contract_report(municipality)
    alike["survivor"]["first_name"] = "Ermiras"  # alike, not the same: a score below 1 goes through jsonb
    earlier = await intake.intake.post("/v1/cases", json=alike, headers=coordinator)
    assert earlier.status_code == 201
    headers = coordinator | {"Idempotency-Key": "k-dup"}
    first = await intake.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
    again = await intake.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
    assert first.status_code == again.status_code == 201
    shown = first.json()["possible_duplicates"]
    assert [d["case_number"] for d in shown] == [earlier.json()["case_number"]]
    assert 0 < shown[0]["score"] < 1
    assert again.json() == first.json()  # equal as JSON (jsonb keeps no key order)


async def test_same_key_with_another_body_is_409(intake: Stack) -> None:
    municipality = new_municipality()
    headers = intake.auth("police", municipality) | {"Idempotency-Key": "k-2"}
    assert (
        await intake.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
    ).status_code == 201
    other = contract_report(municipality, needs=["housing"])
    response = await intake.intake.post("/v1/cases", json=other, headers=headers)
    assert response.status_code == 409


async def test_twenty_concurrent_retries_with_one_key_create_one_case(intake: Stack) -> None:
    municipality = new_municipality()
    headers = intake.auth("police", municipality) | {"Idempotency-Key": "race"}
    body = contract_report(municipality)
    responses = await asyncio.gather(*(intake.intake.post("/v1/cases", json=body, headers=headers) for _ in range(20)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    listed = await intake.intake.get("/v1/cases", headers=intake.auth("coordinator", municipality))
    assert len(listed.json()["items"]) == 1


async def test_case_number_year_follows_the_local_calendar(intake: Stack) -> None:
    municipality = new_municipality()
    # 23:30 UTC on New Year's Eve is already 00:30 on 1 January in Tirana.
    case = await reported(
        intake, municipality, role="coordinator", member_id=None, reported_at="2025-12-31T23:30:00+00:00"
    )
    assert case["case_number"] == f"{municipality[:3].upper()}-2026-00001"

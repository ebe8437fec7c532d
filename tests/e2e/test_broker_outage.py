"""Reports accepted while the broker is down are all published, in order, once it returns."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from shared import db
from shared.embedded import free_port, start_broker, stop_process
from shared.events import INTAKE_TOPIC
from shared.settings import Settings
from tests.support import contract_report, new_municipality, read_envelopes, running_stack, wait_for


async def test_reports_accepted_during_a_broker_outage_are_all_published_after(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    run = uuid.uuid4().hex[:6]
    # Its own databases too: the session's relay must not publish these rows to the session's broker.
    private = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_topic_prefix": f"b{run}.",
                "database_prefix": f"{settings.database_prefix}b{run}_"}
    )
    municipality = new_municipality()
    try:
        async with running_stack(private, ("intake",)) as stack:
            headers = stack.auth("coordinator", municipality)
            stop_process(broker)

            async def unready() -> bool:
                return (await stack.intake.get("/readyz")).status_code == 503

            await wait_for(unready, timeout=15, what="/readyz to report the broker down")

            created = []
            for _ in range(20):
                response = await stack.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
                assert response.status_code == 201, response.text
                created.append(response.json())
            # A reassessment per case: a second event whose order after case.reported must hold.
            for case in created:
                answers = {"risk_answers": {"threats_to_kill": True}}
                response = await stack.intake.post(
                    f"/v1/cases/{case['id']}/risk-assessments", json=answers, headers=headers
                )
                assert response.status_code in (200, 201), response.text

            broker = start_broker(port, tmp_path / "tansu.log")  # back, empty (memory only)
            events = await read_envelopes(private, INTAKE_TOPIC, want=40, timeout=30)
            ids = {c["id"] for c in created}
            by_case: dict[str, list[str]] = {}
            for event in events:
                if event.subject in ids:
                    by_case.setdefault(event.subject, []).append(event.type)
            assert set(by_case) == ids, f"{len(ids - set(by_case))} cases never published"
            for case_id, types in by_case.items():
                assert types == ["case.reported", "case.risk_assessed"], (case_id, types)

            async def ready() -> bool:
                return (await stack.intake.get("/readyz")).status_code == 200

            await wait_for(ready, timeout=15, what="/readyz to recover")
    finally:
        stop_process(broker)
        await db.drop_database(private, "intake")


async def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    async with running_stack(settings, ("shelter",)) as stack:
        runtime = stack.apps["shelter"].state.runtime
        healthy_engine = runtime.engine
        runtime.engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
        try:
            response = await stack.shelter.get("/readyz")
            assert response.status_code == 503
            assert response.json()["checks"]["database"] is False
        finally:
            await runtime.engine.dispose()
            runtime.engine = healthy_engine
        assert (await stack.shelter.get("/readyz")).status_code == 200

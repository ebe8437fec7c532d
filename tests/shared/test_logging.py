"""Log lines are JSON with a request id, and never carry names, phones, addresses or query strings."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.observability import JsonFormatter
from tests.support import Stack, contract_report, new_municipality


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_logs_carry_no_personal_data(stack: Stack, json_log: io.StringIO) -> None:
    municipality = new_municipality()
    body = contract_report(municipality)
    body["survivor"] = {**body["survivor"], "first_name": "Zanafilla", "last_name": "Qershorja",
                        "phone": "+355699912345", "address": "Rruga Sekrete 77"}
    headers = stack.auth("coordinator", municipality)
    created = await stack.intake.post("/v1/cases", json=body, headers=headers)
    await stack.intake.get("/v1/cases", params={"q": "Zanafilla"}, headers=headers)
    await stack.intake.post("/v1/cases", json={**body, "source": "not-a-source"}, headers=headers)
    if created.status_code == 201:
        await stack.intake.get(f"/v1/cases/{created.json()['id']}", headers=headers)
    # The test's own HTTP client (httpx) logs the URLs it calls; services silence it (configure_logging).
    lines = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    lines = [line for line in lines if not line.get("logger", "").startswith(("httpx", "httpcore"))]
    text = "\n".join(json.dumps(line) for line in lines)
    requests = [line for line in lines if line.get("msg") == "request"]
    assert requests, "no request was logged"
    assert all("request_id" in line and "route" in line for line in requests)
    for secret in ("Zanafilla", "Qershorja", "355699912345", "Sekrete", "invented narrative", "1991-04-02"):
        assert secret not in text, f"{secret!r} reached the logs"

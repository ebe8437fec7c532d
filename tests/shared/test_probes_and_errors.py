"""Probes, metrics and the one error shape."""

from __future__ import annotations

import pytest

from tests.support import Stack

SERVICES = ("intake", "referral", "shelter", "notifications")


@pytest.mark.parametrize("service", SERVICES)
async def test_health_ready_and_metrics(stack: Stack, service: str) -> None:
    client = stack.clients[service]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": True, "broker": True, "consumers": True, "relay": True}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "mkr_http_requests_total" in metrics.text


@pytest.mark.parametrize("service", SERVICES)
async def test_openapi_and_docs_are_served(stack: Stack, service: str) -> None:
    client = stack.clients[service]
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")
    assert (await client.get("/docs")).status_code == 200


async def test_unknown_route_is_404_problem(stack: Stack) -> None:
    response = await stack.intake.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= response.json().keys()


async def test_malformed_json_is_422_with_errors_and_no_echo(stack: Stack) -> None:
    response = await stack.intake.post(
        "/v1/cases",
        content=b'{"municipality": "elbasan", "survivor": {"first_name": "Secretname"',
        headers={**stack.auth("coordinator"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["errors"] and all({"loc", "msg"} <= e.keys() for e in body["errors"])
    assert "Secretname" not in response.text


async def test_invalid_uuid_in_path_is_422(stack: Stack) -> None:
    response = await stack.intake.get("/v1/cases/not-a-uuid", headers=stack.auth("coordinator"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "case_id"


async def test_request_id_is_echoed(stack: Stack) -> None:
    response = await stack.intake.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    generated = await stack.intake.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32


async def test_method_not_allowed_is_problem(stack: Stack) -> None:
    response = await stack.intake.delete("/v1/cases")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")

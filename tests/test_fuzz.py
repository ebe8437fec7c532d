"""Property-based fuzzing of every service's OpenAPI schema (schemathesis), with valid tokens.

Each service runs under a real uvicorn server on 127.0.0.1 (own databases and topics). For every
operation a bounded number of generated requests (valid and invalid) must: never produce a 5xx,
answer with a documented status and content type, match the documented response schema, and refuse
the request when the token is left out (`ignored_auth`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from shared import db
from shared.embedded import free_port
from shared.settings import SERVICES, Settings
from tests.support import create_app, token

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth]
SCHEMAS = {name: schemathesis.openapi.from_dict(create_app(name, Settings()).openapi()) for name in SERVICES}
MUNICIPALITY = "fuzzland"


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[dict[str, str]]:
    """The four services under uvicorn in one background thread, on their own databases and topics."""
    fuzz = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}fz_",
                                       "kafka_topic_prefix": f"{settings.kafka_topic_prefix}fz."})
    ports = {name: free_port() for name in SERVICES}
    servers = [
        uvicorn.Server(uvicorn.Config(create_app(name, fuzz), host="127.0.0.1", port=ports[name], log_config=None,
                                      access_log=False, lifespan="on"))
        for name in SERVICES
    ]

    def run() -> None:
        async def all_servers() -> None:
            await asyncio.gather(*(server.serve() for server in servers))

        asyncio.run(all_servers())

    thread = threading.Thread(target=run, name="fuzz-servers", daemon=True)
    thread.start()
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as client:
        for url in urls.values():
            while True:
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "fuzz servers did not become ready"
                time.sleep(0.2)
    yield urls
    for server in servers:
        server.should_exit = True
    thread.join(timeout=30)

    async def drop() -> None:
        for name in SERVICES:
            await db.drop_database(fuzz, name)

    asyncio.run(drop())


def _fuzz(service: str) -> Callable[..., Any]:
    schema = SCHEMAS[service].exclude(path_regex=r".*/stream$")

    @schema.parametrize()
    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))
    def test(case: Any, served: dict[str, str], settings: Settings) -> None:
        headers = {"Authorization": f"Bearer {token(settings, 'coordinator', MUNICIPALITY)}"}
        case.call_and_validate(base_url=served[service], headers=headers, checks=CHECKS, timeout=30)

    return test


test_fuzz_intake = _fuzz("intake")
test_fuzz_referral = _fuzz("referral")
test_fuzz_shelter = _fuzz("shelter")
test_fuzz_notifications = _fuzz("notifications")

"""Property-based fuzzing of every service's OpenAPI schema (schemathesis), with valid tokens.

Each service runs under a real uvicorn server on 127.0.0.1 (own databases and topics). For every
operation a bounded number of generated requests (valid and invalid) must: never produce a 5xx,
answer with a documented status and content type, match the documented response schema, and refuse
the request when the token is left out (`ignored_auth`).

Stateful: a request checked alone cannot show a write that poisons later reads (the directory of
issue #11 answered 500 to every list after one odd contact was stored). Generated bodies named a
random municipality, so the coordinator's writes were refused (403) and never landed, and path ids
were random, so a PATCH never reached a real row (404 before the handler ran). So here each body
writes to the fuzz municipality, path ids are ids the service returned earlier, every accepted
write is followed by every list of the service, and each PATCH is sent again with its fields null.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import defaultdict
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

from mkr.registry import SERVICES
from shared import db
from shared.embedded import free_port
from shared.settings import Settings
from tests.support import create_app, token

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth]
# Only the schemas: with a database URL given, building the apps starts no embedded PostgreSQL under ./.mkr
# (resolving the default server did, at collection, and left it running); nothing connects before a lifespan.
SCHEMA_ONLY = Settings(database_url="postgresql://schema-only@127.0.0.1:1/unused")
OPENAPI = {name: create_app(name, SCHEMA_ONLY).openapi() for name in SERVICES}
SCHEMAS = {name: schemathesis.openapi.from_dict(OPENAPI[name]) for name in SERVICES}
MUNICIPALITY = "fuzzland"
# Generated bodies name random case ids, which no projection will ever know: each such write to referral
# waited the default 2 s (MKR_PROJECTION_WAIT_SECONDS) for intake's event before its 409, some fifty of
# them, most of this file's time. The waiting itself is tests/shared/test_read_your_writes.py's; here the
# answer after a short wait is the same documented 409.
PROJECTION_WAIT = 0.2
WRITES = {"POST", "PUT", "PATCH"}
# Ids each service answered with, by collection (`/v1/members`), for later path parameters.
CREATED: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))


def _lists(service: str) -> list[str]:
    """The service's list endpoints: GET without path or required query parameters (streams aside)."""
    paths = []
    for path, operations in OPENAPI[service]["paths"].items():
        get = operations.get("get")
        if not path.startswith("/v1/") or "{" in path or path.endswith("/stream") or get is None:
            continue
        if not any(p.get("required") for p in get.get("parameters", [])):
            paths.append(path)
    return paths


def _collection(path: str) -> str:
    return path.split("{", 1)[0].rstrip("/")


def _aim(service: str, case: Any) -> None:
    """Point a generated request at data that exists: the fuzz municipality, ids returned earlier."""
    if isinstance(case.body, dict) and "municipality" in case.body:
        case.body["municipality"] = MUNICIPALITY
    if case.path_parameters and "municipality" in case.path_parameters:
        case.path_parameters["municipality"] = MUNICIPALITY
    known = CREATED[service].get(_collection(case.operation.path))
    if known and case.path_parameters:
        for name, value in case.path_parameters.items():
            if name.endswith("_id"):
                case.path_parameters[name] = known[zlib.crc32(str(value).encode()) % len(known)]


def _remember(service: str, case: Any, response: Any) -> None:
    if case.method != "POST" or response.status_code not in (200, 201):
        return
    try:
        answer = response.json()
    except ValueError:
        return
    if isinstance(answer, dict) and isinstance(answer.get("id"), str):
        collection = CREATED[service][_collection(case.operation.path)]
        if answer["id"] not in collection:
            collection.append(answer["id"])


_CLIENT: list[httpx.Client] = []


def _client() -> httpx.Client:
    """One client for the follow-up requests (a new client per request loads the CA bundle each time)."""
    if not _CLIENT:
        _CLIENT.append(httpx.Client(timeout=30))
    return _CLIENT[0]


def _lists_still_answer(service: str, base_url: str, headers: dict[str, str], after: str) -> None:
    for path in _lists(service):
        answer = _client().get(base_url + path, headers=headers)
        assert answer.status_code < 500, f"GET {path} answers {answer.status_code} after {after}: {answer.text}"


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[dict[str, str]]:
    """The four services under uvicorn in one background thread, on their own databases and topics."""
    fuzz = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}fz_",
                                       "kafka_topic_prefix": f"{settings.kafka_topic_prefix}fz.",
                                       "projection_wait_seconds": PROJECTION_WAIT})
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
        _aim(service, case)
        response = case.call_and_validate(base_url=served[service], headers=headers, checks=CHECKS, timeout=30)
        _remember(service, case, response)
        what = f"{case.method} {case.path}"
        if case.method == "PATCH" and isinstance(case.body, dict) and case.body:
            nulls = {name: None for name in case.body}
            url = served[service] + case.formatted_path
            answer = _client().patch(url, json=nulls, headers=headers)
            assert answer.status_code < 500, f"{what} with {nulls} answers {answer.status_code}: {answer.text}"
        if case.method in WRITES and response.status_code < 300:
            _lists_still_answer(service, served[service], headers, what)

    return test


test_fuzz_intake = _fuzz("intake")
test_fuzz_referral = _fuzz("referral")
test_fuzz_shelter = _fuzz("shelter")
test_fuzz_notifications = _fuzz("notifications")

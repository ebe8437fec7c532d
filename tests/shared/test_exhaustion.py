"""No exhaustion by strangers: bodies above MKR_MAX_BODY_BYTES and unbounded metric labels.

The body limit is tried against the session's intake service served by a real uvicorn server (both
HTTP implementations), with raw sockets: a declared length above the limit, and a chunked body that
never says how long it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from shared.embedded import free_port
from tests.support import Stack

HTTP_IMPLEMENTATIONS = ("httptools", "h11")


@asynccontextmanager
async def served(app: FastAPI, http: str) -> AsyncIterator[int]:
    """The already started app behind a real uvicorn server on loopback; yields the port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", http=http,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, timeout=5)


async def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and body pieces, then read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        with contextlib.suppress(ConnectionError):
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = answer_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=10)
        return status, headers, body
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def chunked(piece: bytes, count: int, *, last: bool = True) -> list[bytes]:
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return [frame] * count + ([b"0\r\n\r\n"] if last else [])


def assert_413_problem(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, body
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == 413 and problem["title"] and problem["detail"]


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
async def test_oversized_body_from_a_stranger_is_413_before_authentication(stack: Stack, http: str) -> None:
    limit = stack.settings.max_body_bytes
    async with served(stack.apps["intake"], http) as port:
        # No token at all: without the limit this is a 401 after the whole body was read.
        head = (
            f"POST /v1/cases HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n"
        ).encode()
        # Only the head is sent: the answer comes without the server waiting for (or reading) the body.
        status, headers, body = await raw_exchange(port, head, [])
        assert_413_problem(status, headers, body)
        # Within the limit, the same stranger is told to authenticate: the limit is what refused it.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            small = await client.post("/v1/cases", content=b"{}", headers={"content-type": "application/json"})
        assert small.status_code == 401


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
async def test_oversized_chunked_body_without_length_is_413_before_parsing(stack: Stack, http: str) -> None:
    limit = stack.settings.max_body_bytes
    piece = b"[" * 65536  # never valid JSON: a parser would answer 422, the limit answers first
    async with served(stack.apps["intake"], http) as port:
        head = (
            b"POST /v1/cases HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n"
            + f"Authorization: {stack.auth('coordinator')['Authorization']}\r\n\r\n".encode()
        )
        # Just past the limit and never ended: the answer comes without the body's end.
        over = limit // len(piece) + 1
        status, headers, body = await raw_exchange(port, head, chunked(piece, over, last=False))
        assert_413_problem(status, headers, body)
        # A stranger's endless chunked body is refused just the same, without a token.
        stranger = head.replace(f"Authorization: {stack.auth('coordinator')['Authorization']}\r\n".encode(), b"")
        status, headers, body = await raw_exchange(port, stranger, chunked(piece, over, last=False))
        assert_413_problem(status, headers, body)

        # A chunked body within the limit still reaches the route, whole.
        small = b'{"municipality": "elbasan"'  # cut short: the parser's 422, not the limit's 413
        status, headers, body = await raw_exchange(port, head, chunked(small, 1))
        assert status == 422, body


async def test_invented_http_method_is_counted_as_other_in_metrics(stack: Stack) -> None:
    method = f"X{uuid.uuid4().hex[:12].upper()}"
    # h11 hands any method token to the app (httptools refuses unknown ones itself, with a 400).
    async with served(stack.apps["referral"], "h11") as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                response = await client.request(method, "/v1/referrals")
                assert response.status_code in (401, 405)
            metrics = (await client.get("/metrics")).text
    assert method not in metrics
    assert 'method="other"' in metrics


async def test_metric_routes_are_route_templates_never_raw_paths(stack: Stack) -> None:
    case_id = str(uuid.uuid4())
    junk = f"probe-{uuid.uuid4().hex}"
    headers = stack.auth("coordinator")
    await stack.intake.get(f"/v1/cases/{case_id}", headers=headers)
    await stack.intake.get(f"/v1/{junk}/secret", headers=headers)
    metrics = (await stack.intake.get("/metrics")).text
    assert case_id not in metrics and junk not in metrics
    assert 'route="/v1/cases/{case_id}"' in metrics
    assert 'route="unmatched"' in metrics

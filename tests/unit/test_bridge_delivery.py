"""One HTTP attempt, classified: against real local sockets, no broker needed.

The whole consume-deliver-commit loop runs against the real broker in
``tests/integration/test_bridges.py``; here each kind of answer (or of
silence) an endpoint can give is pinned to what the bridge does with it.
"""

import asyncio
import contextlib
import socket

import aiohttp
import pytest
from aiohttp import web

from driftline.bridges.alert import Request
from driftline.bridges.delivery import BridgeSettings, post
from driftline.bridges.retry import Verdict
from integration.bridge_endpoints import LocalServer


@contextlib.asynccontextmanager
async def serving(handler):
    server = LocalServer(handler)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def attempt(url, timeout=2.0):
    async with aiohttp.ClientSession() as session:
        return await post(
            session, Request(url, b"{}", {"Content-Type": "application/json"}), timeout
        )


async def test_2xx_is_delivered():
    async def accept(request):
        return web.json_response({"status": "success"}, status=202)

    async with serving(accept) as server:
        outcome = await attempt(server.url)
    assert (outcome.verdict, outcome.kind, outcome.detail) == (
        Verdict.DELIVERED,
        "HTTP 202",
        "202 Accepted",
    )


async def test_429_is_retried_with_its_retry_after():
    async def throttle(request):
        return web.Response(status=429, headers={"Retry-After": "2"}, text="slow down")

    async with serving(throttle) as server:
        outcome = await attempt(server.url)
    assert outcome.verdict is Verdict.RETRY and outcome.retry_after == 2.0
    assert outcome.detail == "429 Too Many Requests (Retry-After 2 s)"


async def test_5xx_is_retried():
    async def broken(request):
        return web.Response(status=503, text="maintenance")

    async with serving(broken) as server:
        outcome = await attempt(server.url)
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, "HTTP 503")


async def test_a_permanent_4xx_is_refused_with_its_body():
    async def invalid(request):
        return web.json_response({"status": "invalid event", "errors": ["no summary"]}, status=400)

    async with serving(invalid) as server:
        outcome = await attempt(server.url)
    assert outcome.verdict is Verdict.REFUSED and outcome.status == 400
    assert outcome.body == '{"status": "invalid event", "errors": ["no summary"]}'


async def test_a_huge_error_body_is_cut():
    async def verbose(request):
        return web.Response(status=413, text="x" * 100_000)

    async with serving(verbose) as server:
        outcome = await attempt(server.url)
    assert outcome.verdict is Verdict.REFUSED and len(outcome.body) == 2000


async def test_redirects_are_not_followed():
    followed = []

    async def handler(request):
        if request.path == "/final":
            followed.append(request.method)
            return web.Response(status=200)
        raise web.HTTPMovedPermanently("/final")

    async with serving(handler) as server:
        outcome = await attempt(server.url)
    assert outcome.verdict is Verdict.REFUSED and outcome.status == 301
    assert followed == []


async def test_no_answer_in_time_is_retried():
    async def slow(request):
        await asyncio.sleep(2)
        return web.Response(status=200)

    async with serving(slow) as server:
        outcome = await attempt(server.url, timeout=0.2)
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, "timeout")
    assert outcome.detail == "no answer within 0.2 s"


async def test_a_refused_connection_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    outcome = await attempt(f"http://127.0.0.1:{port}/")
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, "connection refused")
    assert outcome.detail.startswith(f"cannot connect to 127.0.0.1:{port}: ")


async def test_a_dropped_connection_is_retried():
    async def hang_up(reader, writer):
        await reader.read(10)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await attempt(f"http://127.0.0.1:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert (outcome.verdict, outcome.kind) == (Verdict.RETRY, "connection error")


def test_settings_refuse_an_unknown_start():
    with pytest.raises(ValueError, match="start_at"):
        BridgeSettings(group_id="g", start_at="beginning")

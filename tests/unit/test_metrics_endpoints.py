"""The operator's HTTP endpoint over a real socket: /healthz answers while the event loop runs,
/readyz only once the operator has started, /metrics serves the operator's registry."""

from __future__ import annotations

import asyncio

import aiohttp

from sgmesh.controller import metrics


async def _statuses(port: int, paths: tuple[str, ...]) -> dict[str, int]:
    async with aiohttp.ClientSession() as session:
        statuses = {}
        for path in paths:
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                statuses[path] = response.status
        return statuses


def test_readyz_answers_ready_only_once_the_operator_has_started() -> None:
    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        started = False
        sock = metrics.listen(0, host="127.0.0.1")
        port = sock.getsockname()[1]
        runner = await metrics.serve(metrics.Metrics(), sock, is_ready=lambda: started)
        try:
            paths = ("/healthz", "/readyz", "/metrics")
            before = await _statuses(port, paths)
            started = True
            after = await _statuses(port, paths)
        finally:
            await runner.cleanup()
        return before, after

    before, after = asyncio.run(scenario())

    assert before == {"/healthz": 200, "/readyz": 503, "/metrics": 200}
    assert after == {"/healthz": 200, "/readyz": 200, "/metrics": 200}

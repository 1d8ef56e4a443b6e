"""The demo backend: its answer at a failure rate, the rate's checks, and its HTTP surface on loopback."""

from __future__ import annotations

import json

import pytest
import trio

from meshcore.admin.client import http_request
from meshcore.admin.http import AdminServer
from meshcore.admin.messages import BadRequest
from meshctl.runner.demo_app import DemoApp, parse_rate
from meshctl.runner.demo_load import proxy_from_env


@pytest.mark.parametrize(
    ("rate", "draw", "status"),
    [(0.0, 0.0, 200), (0.5, 0.49, 503), (0.5, 0.5, 200), (1.0, 0.999, 503)],
)
def test_answer_fails_for_the_configured_share(rate: float, draw: float, status: int) -> None:
    app = DemoApp(service="search-service", version="v2", pod="search-v2-0", failure_rate=rate, draw=lambda: draw)
    response = app.answer()
    assert response.status == status
    body = json.loads(response.body)
    assert (body["service"], body["version"], body["pod"]) == ("search-service", "v2", "search-v2-0")


@pytest.mark.parametrize("text", ["-0.1", "1.5", "lots", None])
def test_parse_rate_refuses_what_is_not_a_share(text: str | None) -> None:
    with pytest.raises(BadRequest, match="0 <= R <= 1"):
        parse_rate(text)


async def test_told_to_fail_over_http_then_healed() -> None:
    app = DemoApp(service="search-service", version="v2", pod="p")
    server = app.mount(AdminServer("demo-app"))
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run, "127.0.0.1", 0)
        assert (await http_request(host, port, "GET", "/")).status == 200
        told = await http_request(host, port, "POST", "/admin/failure?rate=1")
        assert told.json() == {"version": "v2", "failure_rate": 1.0}
        assert (await http_request(host, port, "GET", "/")).status == 503
        refused = await http_request(host, port, "POST", "/admin/failure?rate=2")
        assert refused.status == 400 and app.failure_rate == 1.0
        await http_request(host, port, "POST", "/admin/failure?rate=0")
        assert (await http_request(host, port, "GET", "/")).status == 200
        nursery.cancel_scope.cancel()


def test_load_generator_uses_the_pod_s_http_proxy() -> None:
    assert proxy_from_env({"http_proxy": "http://127.9.1.3:15080"}) == ("127.9.1.3", 15080)
    assert proxy_from_env({"HTTP_PROXY": "http://127.9.1.4:15080"}) == ("127.9.1.4", 15080)
    with pytest.raises(SystemExit, match="no http_proxy"):
        proxy_from_env({})

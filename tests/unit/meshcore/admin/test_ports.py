"""The three standard servers of a component, started together on ephemeral loopback ports."""

from __future__ import annotations

import trio

from meshcore.admin.client import http_request
from meshcore.admin.ports import ComponentPorts, StandardPorts
from meshcore.telemetry.metrics import Registry


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def test_each_port_serves_its_own_endpoints_and_close_stops_all() -> None:
    registry = Registry()
    registry.counter("istio_tcp_connections_opened_total", "opened").labels().inc(3)
    quits: list[bool] = []
    ports = ComponentPorts(
        registry=registry,
        ready=lambda: None,
        config_dump=lambda: {"services": []},
        on_quit=lambda: quits.append(True),
        ports=StandardPorts.ephemeral(),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(ports.run)
            assert set(addresses) == {"admin", "metrics", "readiness"}
            admin, metrics, readiness = (split(addresses[k]) for k in ("admin", "metrics", "readiness"))
            assert len({admin, metrics, readiness}) == 3

            scraped = await http_request(*metrics, "GET", "/stats/prometheus")
            assert "istio_tcp_connections_opened_total 3" in scraped.text()
            assert (await http_request(*readiness, "GET", "/healthz/ready")).status == 200
            assert (await http_request(*readiness, "GET", "/config_dump")).status == 404  # admin port only
            assert (await http_request(*metrics, "POST", "/quitquitquit")).status == 404
            assert (await http_request(*admin, "GET", "/config_dump")).json() == {"services": []}
            assert (await http_request(*admin, "POST", "/quitquitquit")).status == 200
            assert quits == [True]
            ports.close()
        # run() returned: all three servers stopped.


def test_standard_ports_are_istios() -> None:
    assert StandardPorts() == StandardPorts(admin=15000, metrics=15020, readiness=15021)

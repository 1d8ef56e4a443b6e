"""dig (a real, independent DNS client) against the ztunnel DNS proxy, over UDP and TCP."""

from __future__ import annotations

import shutil

import pytest
import trio

from ztunnel.dns.server import DnsProxy

pytestmark = pytest.mark.interop


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (make test installs dnsutils as root)")
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
async def test_dig_resolves_a_mesh_service(transport: str) -> None:
    names = {"search-api.prod.svc.cluster.local": ["240.240.0.10"]}
    proxy = DnsProxy(lambda name: names.get(name, []), host="127.0.0.1", port=0, upstream=None)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(proxy.run)
        argv = ["dig", f"@{host}", "-p", str(port), transport, "+time=5", "+tries=2"]
        found = await trio.run_process([*argv, "+short", "search-api.prod.svc.cluster.local", "A"],
                                       capture_stdout=True)
        assert found.stdout.decode().split() == ["240.240.0.10"]
        missing = await trio.run_process([*argv, "nope.prod.svc.cluster.local", "A"], capture_stdout=True,
                                         check=False)
        assert "status: NXDOMAIN" in missing.stdout.decode()
        assert "flags: qr aa rd ra" in missing.stdout.decode()
        nursery.cancel_scope.cancel()

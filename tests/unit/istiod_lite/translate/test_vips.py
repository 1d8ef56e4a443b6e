"""Service VIPs: 240.240.0.0/16, deterministic per service key, sticky, clusterIP honoured."""

from __future__ import annotations

import ipaddress

import pytest

from istiod_lite.translate import VipAllocator, translate
from istiod_lite.translate.vips import VipRangeExhausted
from tests.unit.istiod_lite.translate.helpers import load


def _service(name: str, namespace: str = "prod", cluster_ip: str | None = None) -> str:
    ip = f"\n  clusterIP: {cluster_ip}" if cluster_ip else ""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  ports: [{{port: 80}}]{ip}\n"
    )


def _vips(text: str, allocator: VipAllocator | None = None) -> dict[str, tuple[str, ...]]:
    snapshot = translate(load(text), [], vip_allocator=allocator)
    return {key: tuple(v.address for v in s.vips) for key, s in snapshot.services.items()}


def test_vips_come_from_240_240_0_0_16_and_are_the_same_on_every_translation() -> None:
    text = "---\n".join(_service(n) for n in ("a", "b", "c"))
    first, second = _vips(text), _vips(text)
    assert first == second
    for (vip,) in first.values():
        assert ipaddress.ip_address(vip) in ipaddress.ip_network("240.240.0.0/16")
    assert len({v for (v,) in first.values()}) == 3


def test_a_service_keeps_its_vip_when_other_services_come_and_go() -> None:
    allocator = VipAllocator()
    before = _vips(_service("a"), allocator)
    after = _vips("---\n".join(_service(n) for n in ("z", "a", "b")), allocator)
    assert after["prod/a.prod.svc.cluster.local"] == before["prod/a.prod.svc.cluster.local"]


@pytest.mark.parametrize(
    ("cluster_ip", "expected"),
    [("10.96.0.10", ("10.96.0.10",)), ("None", ())],  # explicit clusterIP honoured; headless has none
)
def test_cluster_ip_is_honoured(cluster_ip: str, expected: tuple[str, ...]) -> None:
    assert _vips(_service("dns", cluster_ip=cluster_ip))["prod/dns.prod.svc.cluster.local"] == expected


def test_an_explicit_cluster_ip_is_never_handed_to_another_service() -> None:
    allocator = VipAllocator("240.240.0.0/29")
    taken = allocator.allocate_all(["x"])["x"]
    # A user now writes clusterIP: <x's address> on another service: x moves, nobody else gets it.
    again = allocator.allocate_all(["x", "y"], reserved=[taken])
    assert taken not in again.values() and len(set(again.values())) == 2


def test_collisions_probe_forward_and_exhaustion_is_an_error_with_a_hint() -> None:
    allocator = VipAllocator("240.240.0.0/30")
    assigned = allocator.allocate_all(["a", "b"])
    assert sorted(assigned.values()) == ["240.240.0.1", "240.240.0.2"]
    with pytest.raises(VipRangeExhausted, match="hint"):
        allocator.allocate_all(["a", "b", "c"])

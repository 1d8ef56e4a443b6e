"""Every name the fabric makes or deletes stays under the mesh prefix and within kernel limits."""

from __future__ import annotations

import pytest

from ztunnel.capture import names
from ztunnel.capture.errors import UnsafeName


def test_new_prefixes_are_valid_and_distinct() -> None:
    prefixes = {names.new_prefix() for _ in range(50)}
    assert all(names.PREFIX_RE.match(p) for p in prefixes)
    assert len(prefixes) > 1


@pytest.mark.parametrize("prefix", ["am-ab", "am-abc123", "am-x9y8z"])
def test_interface_names_fit_ifnamsiz(prefix: str) -> None:
    assert len(names.bridge(prefix)) <= names.IFNAMSIZ
    assert len(names.host_veth(prefix, names.MAX_VETH_INDEX)) <= names.IFNAMSIZ


@pytest.mark.parametrize(
    ("prefix", "pod", "netns"),
    [("am-abc12", "web", "am-abc12-pod-web"), ("am-ab", "a-1", "am-ab-pod-a-1")],
)
def test_pod_netns_name(prefix: str, pod: str, netns: str) -> None:
    assert names.pod_netns(prefix, pod) == netns


@pytest.mark.parametrize("prefix", ["", "am-", "am-a", "am-abcdefg", "xx-abc", "am-ABC", "am-a/b", "eth0"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(UnsafeName, match="not of the form"):
        names.check_prefix(prefix)


@pytest.mark.parametrize("pod", ["", "Web", "-web", "web-", "a" * 41, "a/b", "a b", "../x"])
def test_bad_pod_names_are_refused(pod: str) -> None:
    with pytest.raises(UnsafeName, match="pod name"):
        names.pod_netns("am-abc", pod)


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("am-abc-fabric", True),
        ("am-abc-pod-web", True),
        ("am-abcv12", True),
        ("am-abd-fabric", False),
        ("eth0", False),
        ("am-abc", False),
        ("am-abc-../x", False),
        ("docker0", False),
    ],
)
def test_assert_ours(name: str, ours: bool) -> None:
    if ours:
        assert names.assert_ours("am-abc", name) == name
    else:
        with pytest.raises(UnsafeName):
            names.assert_ours("am-abc", name)


def test_veth_index_is_bounded() -> None:
    with pytest.raises(UnsafeName, match="veth index"):
        names.host_veth("am-abc", names.MAX_VETH_INDEX + 1)
